"""The built-in demo: real photos from an installed package, a Levels-style study, and simulated
participants (labelled as such), so a newcomer sees a working AlignLab right after `make run`.

Every step is idempotent: a second call finds what the first one made and returns quickly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from db.engine import Database
from db.models import Participant, StimulusSet, StudyStatus
from db.settings import data_home
from study.config import StudyConfig
from study.design import DesignConfig, create_study_from_design
from study.image_sources import build_demo_images
from study.judgments import load_stimuli
from study.simulate import SimilarityModel, perceptual_item_vectors, simulate_participants
from study.stimuli import import_stimulus_set
from study.studies import StudyNotFound, get_study, set_study_status
from workflows.pipeline import FEATURE_CACHE_DIR, WEIGHTS_DIR

DEMO_SET = "demo photos"
DEMO_SLUG = "demo"
DEMO_IMAGES_DIR = "demo_images"
DEMO_DESIGN = DesignConfig(
    n_lists=120,
    n_between_class=20,
    n_within_class=20,
    n_class_border=20,
    n_blocks=3,
    catch_per_block=2,
    n_practice=3,
    within_repeats=4,
    n_shared=15,
    seed=7,
)
# Simulated people judge by category structure plus perception: half a broad perceptual similarity, half a
# few visual attributes they weigh heavily (`perceptual_item_vectors`), both in a different network's feature
# space (MobileNetV2) than the one being aligned; the teacher has to find those attributes in EfficientNet
# features.
PERCEPTUAL_BACKBONE = "timm:mobilenetv2_100"
DEMO_PEOPLE = SimilarityModel(
    item_weight=0.6, same_domain=0.25, domains=(("animal", "living"), ("plant", "living"), ("food", "living"))
)
DEMO_PARTICIPANTS = 120  # one per list: enough held-out judgments per Levels type for a per-level comparison
DEMO_STUDY = StudyConfig(
    title="AlignLab demo: which image is the odd one out?",
    completion_url_template="",
    participants_per_list=3,
    completion_code="DEMO-DONE",
    early_exit_code="DEMO-EARLY",
    no_consent_code="DEMO-NOCONSENT",
)


@dataclass(frozen=True)
class DemoState:
    stimulus_set_id: int
    slug: str
    simulated_participants: int


def ensure_demo(
    db: Database,
    *,
    source: str | None = None,
    participants: int = DEMO_PARTICIPANTS,
    report: Callable[[str], None] = print,
) -> DemoState:
    """Build whatever part of the demo is missing: images, stimulus set, study, simulated participants
    (the precomputed runs: `ensure_demo_runs`)."""
    set_id = _ensure_stimulus_set(db, source, report)
    _ensure_study(db, set_id, report)
    n_simulated = _ensure_simulated(db, participants, report)
    return DemoState(set_id, DEMO_SLUG, n_simulated)


def _ensure_stimulus_set(db: Database, source: str | None, report: Callable[[str], None]) -> int:
    with db.read() as session:
        existing = session.scalar(select(StimulusSet.id).where(StimulusSet.name == DEMO_SET))
    if existing is not None:
        return existing
    folder = (
        build_demo_images(source, data_home() / DEMO_IMAGES_DIR)
        if source
        else build_demo_images(out_dir=data_home() / DEMO_IMAGES_DIR)
    )
    imported = import_stimulus_set(db, folder, DEMO_SET)
    report(imported.summary())
    return imported.stimulus_set_id


def _ensure_study(db: Database, set_id: int, report: Callable[[str], None]) -> None:
    try:
        with db.read() as session:
            get_study(session, DEMO_SLUG)
        return
    except StudyNotFound:
        pass
    _, design = create_study_from_design(
        db, DEMO_SLUG, set_id, DEMO_DESIGN, DEMO_STUDY, title=DEMO_STUDY.title
    )
    set_study_status(db, DEMO_SLUG, StudyStatus.OPEN)
    report(
        f"created and opened demo study {DEMO_SLUG!r}: {len(design.lists)} lists; "
        + "; ".join(design.notes())
    )


def perceptual_features(db: Database) -> dict[int, np.ndarray]:
    """The simulated people's perceptual item vectors per stimulus id: half a broad perceptual similarity,
    half six attributes (see the comment at PERCEPTUAL_BACKBONE)."""
    from alignment.backbones import create_backbone
    from alignment.features import extract_features

    stimuli = load_stimuli(db, DEMO_SLUG)
    backbone = create_backbone(PERCEPTUAL_BACKBONE, cache_dir=data_home() / WEIGHTS_DIR)
    features = extract_features(
        backbone, [data_home() / p for p in stimuli["path"]], cache_dir=data_home() / FEATURE_CACHE_DIR
    )
    return perceptual_item_vectors(
        dict(zip(stimuli["id"].tolist(), features, strict=True)), attribute_share=0.5, n_attributes=6, seed=2
    )


def _ensure_simulated(db: Database, wanted: int, report: Callable[[str], None]) -> int:
    with db.read() as session:
        study_id = get_study(session, DEMO_SLUG).id
        simulated = select(func.count()).where(
            Participant.study_id == study_id, Participant.is_simulated.is_(True)
        )
        have = session.execute(simulated).scalar_one()
    if have < wanted:
        summary = simulate_participants(
            db,
            DEMO_SLUG,
            wanted - have,
            model=DEMO_PEOPLE,
            careless_share=0.1,
            seed=have,
            features=perceptual_features(db),
        )
        report(
            f"simulated {len(summary.participant_ids)} participants ({len(summary.careless_ids)} careless): "
            f"{summary.n_responses} responses, {summary.n_timeouts} timeouts"
        )
    return max(have, wanted)


def ensure_demo_runs(db: Database, *, wait: bool, report: Callable[[str], None] = print) -> int | None:
    """Start the closed loop on the demo study unless one has succeeded or is under way; returns its run id.

    `wait=False` starts it as a background job (the app is usable meanwhile; the Alignment page shows it)."""
    from db.runs import ACTIVE_STATUSES, list_runs
    from workflows.jobs import launch, mark_lost_runs
    from workflows.pipeline import execute, queue_action
    from workflows.pipeline.loop import latest_loop

    with db.read() as session:
        study_id = get_study(session, DEMO_SLUG).id
    mark_lost_runs(db)
    done = latest_loop(db, study_id)
    if done is not None:
        return done.id
    active = [r for r in list_runs(db, kind="align", study_id=study_id) if r.status in ACTIVE_STATUSES]
    if active:
        return active[0].id
    run_id = queue_action(db, "align", DEMO_SLUG)
    if wait:
        report(f"running the closed loop on the demo (run {run_id}, about 1-3 minutes on 2 cores)...")
        execute(db, run_id)
    else:
        launch(run_id)
        report(
            f"started the closed loop on the demo in the background (run {run_id}); see the Alignment page"
        )
    return run_id
