"""Adaptive designs while a study runs: the next triplets are chosen from a candidate pool by the study's
latest teacher (``alignment.active``), lists are kept ready ahead of need, and the teacher is refitted in
the background every ``refit_every`` answers or ``refit_minutes`` minutes (when answers arrived).

- ``propose``: the next triplets per level (Levels mix kept), each with its reason (strategy, score, teacher
  run); with no teacher run yet they are drawn at random and say so.
- ``top_up_lists``: adds lists until ``lists_ahead`` lists chosen by the latest teacher wait for a
  participant. A participant is never made to wait for one: ``assign_list`` hands out the newest existing
  list, and an existing list even when none waits.
- ``adaptive_stage`` (run kind ``adaptive``): the teacher stage on the study's answers so far, then a top-up
  with the new teacher.
- ``after_answer``: called by the participant API after a response is sent (a background task, so never on
  the participant's clock): queues and launches the refit when due, and tops the lists up.

Strategies: ``uncertainty`` (the teacher's predictive entropy), ``information`` (BALD over teachers drawn
from a Laplace posterior around the teacher, given the study's answered triplets), ``disagreement``
(teacher vs raw backbone: their Jensen-Shannon divergence; the backbone's similarities are given the
teacher's spread over the pool, since raw features have no fitted temperature), ``random``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from db.engine import Database
from db.models import Participant, Run, RunStatus, Study, TrialKind, TripletLevel, as_utc
from db.runs import create_run, list_runs
from db.settings import data_home
from study.adaptive import (
    NO_TEACHER,
    adaptive_config,
    add_list,
    answer_count,
    candidate_pool,
    design_config,
    first_answer_at,
    list_count,
    own_counts,
    waiting_lists,
    waiting_lists_by,
)
from study.design import is_adaptive
from study.studies import TrialSpec, as_triplet, get_study
from workflows import jobs
from workflows.artifacts import read_embeddings

if TYPE_CHECKING:
    import pandas as pd

LOG = logging.getLogger("alignlab.adaptive")
TEACHER_KINDS = ("teacher", "adaptive")  # runs whose teacher can choose triplets


@dataclass(frozen=True)
class TeacherView:
    """What choosing needs from a teacher run: aligned and raw embeddings by stimulus id, the temperature."""

    run_id: int
    aligned: np.ndarray
    raw: np.ndarray
    stimulus_ids: np.ndarray
    temperature: float

    @classmethod
    def from_artifacts(cls, run_id: int, artifacts: dict, temperature: float) -> TeacherView:
        aligned, ids = read_embeddings(data_home() / artifacts["embeddings"], f"run {run_id} teacher")
        raw, raw_ids = read_embeddings(data_home() / artifacts["raw_embeddings"], f"run {run_id} backbone")
        if not np.array_equal(ids, raw_ids):
            raise ValueError(f"run {run_id}: aligned and raw embeddings cover different stimuli")
        return cls(run_id, aligned, raw, ids, temperature)

    def rows(self, triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices [m, 3] of the triplets whose three images the teacher embedded, their positions)."""
        index = {int(s): r for r, s in enumerate(self.stimulus_ids)}
        known = np.array([all(int(i) in index for i in t) for t in triplets], dtype=bool)
        rows = np.array([[index[int(i)] for i in t] for t in triplets[known]], dtype=np.int64).reshape(-1, 3)
        return rows, np.flatnonzero(known)


def latest_teacher_run(db: Database, study_id: int) -> Run | None:
    """The newest succeeded teacher (or adaptive) run of the study with embeddings to choose by, or None."""
    runs = [
        r
        for r in list_runs(db, study_id=study_id)
        if r.kind in TEACHER_KINDS and r.status == RunStatus.SUCCEEDED and "raw_embeddings" in r.artifacts
    ]
    return max(runs, key=lambda r: r.id) if runs else None


def latest_teacher(db: Database, study_id: int) -> TeacherView | None:
    """The newest succeeded teacher (or adaptive) run of the study, loaded, or None."""
    run = latest_teacher_run(db, study_id)
    if run is None:
        return None
    return TeacherView.from_artifacts(run.id, run.artifacts, float(run.metrics.get("temperature", 1.0)))


def _members(view: TeacherView, strategy: str, rows: np.ndarray) -> list:
    from alignment.active import Member, backbone_member

    teacher = Member(view.aligned, view.temperature)
    return [teacher, backbone_member(teacher, view.raw, rows)] if strategy == "disagreement" else [teacher]


def _choose_level(
    candidates: list[tuple[int, int, int]],
    level: TripletLevel,
    n: int,
    strategy: str,
    random_share: float,
    view: TeacherView | None,
    rng: np.random.Generator,
    asked: np.ndarray | None = None,
) -> list[TrialSpec]:
    """``n`` of one level's candidate triplets, by ``strategy`` under the teacher (at random without one),
    each carrying why it was chosen (``asked``: the answered triplets as the teacher's rows, for
    ``information``)."""
    from alignment.active import BatchRule, select_batch

    pool = np.asarray(candidates, dtype=np.int64).reshape(-1, 3)
    rows, kept, strategy, scores, embedding = _scored_candidates(pool, strategy, view, asked)
    if len(rows) < n:
        raise ValueError(
            f"only {len(rows)} new {level.value} candidates the teacher can score, {n} needed; raise "
            "pool_per_level or add images"
        )
    chosen = select_batch(
        rows,
        scores,
        n,
        strategy=strategy,
        rng=rng,
        rule=BatchRule(random_share=random_share),
        embedding=embedding,
        teacher_run="" if view is None else str(view.run_id),
    )
    note = {"note": NO_TEACHER} if view is None else {}
    return [
        TrialSpec(
            as_triplet(pool[kept[c.pool_index]].tolist()),
            TrialKind.EXPERIMENTAL,
            level,
            selection={**c.reason(), **note},
        )
        for c in chosen
    ]


def _scored_candidates(pool: np.ndarray, strategy: str, view: TeacherView | None, asked=None):
    """The candidates the teacher can score (their rows in its index and their places in ``pool``), the
    strategy actually used, the scores and the aligned embedding; without a teacher, every candidate,
    unscored, chosen at random (the caller notes why)."""
    from alignment.active import score_pool

    if view is None:
        return pool, np.arange(len(pool)), "random", np.zeros(len(pool)), None
    rows, kept = view.rows(pool)
    members = _members(view, strategy, rows)
    scores = score_pool(strategy, rows, members, "triplet", asked=asked) if len(rows) else np.zeros(0)
    return rows, kept, strategy, scores, view.aligned


def propose(
    db: Database,
    slug: str,
    counts: dict[TripletLevel, int],
    seed: int,
    *,
    view: TeacherView | None = None,
    strategy: str | None = None,
) -> list[TrialSpec]:
    """The next triplets, ``counts`` per level, chosen by the study's latest teacher (or ``view``)."""
    with db.read() as session:
        study = get_study(session, slug)
        config, study_id = design_config(study), study.id
    view = view or latest_teacher(db, study_id)
    pool = candidate_pool(db, slug, seed)
    rng = np.random.default_rng(seed)
    strategy = strategy or config.strategy
    asked = _asked_rows(db, slug, view) if strategy == "information" and view is not None else None
    specs: list[TrialSpec] = []
    for level, n in counts.items():
        if n:
            specs += _choose_level(
                pool.get(level, []), level, n, strategy, config.random_share, view, rng, asked
            )
    return specs


def _asked_rows(db: Database, slug: str, view: TeacherView) -> np.ndarray:
    """The study's answered triplets (odd one out last) as rows of the teacher's index: what the teacher's
    posterior is conditioned on (``information``; the answers themselves are not needed, see
    ``alignment.active``)."""
    from workflows.pipeline.data import study_judgments

    judged = study_judgments(db, slug)[["stim0", "stim1", "stim2"]].to_numpy(np.int64)
    return view.rows(judged)[0]


def top_up_lists(db: Database, slug: str, view: TeacherView | None = None) -> list[int]:
    """Add lists until ``lists_ahead`` lists chosen by the latest teacher (or ``view``) wait for a
    participant; returns the new list indices. Lists an older teacher chose do not count: a refit makes
    fresh lists at once, and assignment hands out the newest first (the older ones wait as a reserve)."""
    with db.read() as session:
        study_id = get_study(session, slug).id
    run = view.run_id if view is not None else getattr(latest_teacher_run(db, study_id), "id", None)
    teacher_run = "" if run is None else str(run)
    created: list[int] = []
    while True:
        with db.read() as session:
            study, config = adaptive_config(session, slug)
            counts = own_counts(study, config)
            waiting = (
                waiting_lists_by(session, study_id, teacher_run)
                if any(counts.values())
                else waiting_lists(session, study_id)  # lists of shared triplets only: none is fresher
            )
            n_lists = list_count(session, study_id)
        if waiting >= config.lists_ahead:
            return created
        view = view or latest_teacher(db, study_id)
        seed = config.seed * 1_000_003 + n_lists  # a new seed per list, reproducible
        created.append(add_list(db, slug, propose(db, slug, counts, seed, view=view), seed))


def refit_due(db: Database, slug: str, now: datetime | None = None) -> bool:
    """No adaptive run is under way, and since the latest refit (or, before any, since the study's first
    answer) ``refit_every`` answers arrived, or ``refit_minutes`` passed and at least one answer arrived."""
    with db.read() as session:
        study, config = adaptive_config(session, slug)
        answers, study_id, first_answer = (
            answer_count(session, study.id),
            study.id,
            first_answer_at(session, study.id),
        )
    runs = list_runs(db, study_id=study_id)
    if any(r.kind == "adaptive" and r.status in (RunStatus.QUEUED, RunStatus.RUNNING) for r in runs):
        return False
    fitted = [r for r in runs if r.kind == "adaptive" and r.status == RunStatus.SUCCEEDED]
    last = max(fitted, key=lambda r: r.id) if fitted else None
    new_answers = answers - (last.metrics.get("n_answers", 0) if last else 0)
    if new_answers >= config.refit_every:
        return True
    since = as_utc(last.created_at) if last else first_answer
    if not config.refit_minutes or new_answers < 1 or since is None:
        return False
    elapsed = (now or datetime.now(UTC)) - since
    return elapsed >= timedelta(minutes=config.refit_minutes)


def queue_refit(db: Database, slug: str) -> int:
    """An ``adaptive`` run: the teacher stage's config for the study (defaults)."""
    from workflows.pipeline.teacher_stage import TeacherStageConfig

    with db.read() as session:
        study_id = get_study(session, slug).id
    config = asdict(TeacherStageConfig(study=slug))
    return create_run(db, "adaptive", config, study_id=study_id, name=f"adaptive refit on {slug}")


def adaptive_stage(db: Database, run: Run, progress: jobs.Progress) -> jobs.StageResult:
    """Refit the teacher on the study's answers so far, then top the lists up with it."""
    from workflows.pipeline.teacher_stage import teacher_stage

    slug = run.config["study"]
    with db.read() as session:
        n_answers = answer_count(session, adaptive_config(session, slug)[0].id)
    result = teacher_stage(db, run, progress)
    view = TeacherView.from_artifacts(run.id, result.artifacts, float(result.metrics.get("temperature", 1.0)))
    created = top_up_lists(db, slug, view)
    held_out = held_out_by_selection(db, slug, view, result.artifacts.get("split"))
    result.metrics.update(
        {"n_answers": n_answers, "lists_created": created, "held_out_by_selection": held_out}
    )
    return result


SELECTION_GROUPS = {
    "random": "random share",
    "uncertainty": "adaptive",
    "disagreement": "adaptive",
    "information": "adaptive",
}


def held_out_by_selection(db: Database, slug: str, view: TeacherView, split: str | None) -> dict[str, dict]:
    """The teacher's accuracy on the held-out judgments (its split) of randomly drawn triplets (the random
    share, and lists drawn before any teacher: blind to every teacher, so an unbiased estimate) and of
    teacher-chosen ones (the hard cases it was asked about): {group: {"n", "correct", "accuracy"}}."""
    import pandas as pd

    from alignment.conventions import pair_similarities
    from workflows.artifacts import read_split
    from workflows.pipeline.data import study_judgments

    if not split:
        return {}
    keys, _, _ = read_split(data_home() / split, f"run {view.run_id}")
    held = pd.DataFrame(keys, columns=["participant_id", "trial_index"])
    judgments = study_judgments(db, slug).merge(held, on=["participant_id", "trial_index"])
    group = judgments["triplet_key"].map(_selection_groups(db, slug))
    rows, kept = view.rows(judgments[["stim0", "stim1", "stim2"]].to_numpy(np.int64))  # odd one out last
    correct = pd.Series(False, index=judgments.index)
    correct.iloc[kept] = np.argmax(pair_similarities(view.aligned, rows, "dot"), axis=1) == 0
    summary = {}
    for name in sorted(set(SELECTION_GROUPS.values())):
        scored = correct.iloc[kept][(group.iloc[kept] == name).to_numpy()]
        if len(scored):
            summary[name] = {"n": len(scored), "correct": int(scored.sum()), "accuracy": float(scored.mean())}
    return summary


def _selection_groups(db: Database, slug: str) -> dict[str, str]:
    """Triplet key -> "random share" | "adaptive" for the study's trials that say why they were asked."""
    from db.models import Trial, TripletList

    with db.read() as session:
        study_id = get_study(session, slug).id
        rows = session.execute(
            select(Trial.triplet_key, Trial.selection)
            .join(TripletList)
            .where(TripletList.study_id == study_id)
        ).all()
    return {
        key: SELECTION_GROUPS[selection["strategy"]]
        for key, selection in rows
        if selection and selection.get("strategy") in SELECTION_GROUPS  # JSON null: catch, practice
    }


def refit_curve(db: Database, slug: str) -> pd.DataFrame:
    """One row per succeeded refit and selection group: answers it was fitted on, held-out judgments and
    the teacher's accuracy on them (what the design page plots)."""
    import pandas as pd

    with db.read() as session:
        study_id = get_study(session, slug).id
    rows = [
        {"run": run.id, "n_answers": run.metrics.get("n_answers", 0), "group": group, **values}
        for run in list_runs(db, study_id=study_id)
        if run.kind == "adaptive" and run.status == RunStatus.SUCCEEDED
        for group, values in run.metrics.get("held_out_by_selection", {}).items()
    ]
    columns = ["run", "n_answers", "group", "n", "correct", "accuracy"]
    return pd.DataFrame(rows, columns=columns).sort_values(["group", "n_answers", "run"], ignore_index=True)


def after_answer(db: Database, participant_id: int, launch=jobs.launch) -> None:
    """After a response of an adaptive study: launch the refit when due, keep lists ready. Never raises
    (the participant's answer is already stored; a failure here is logged)."""
    try:
        with db.read() as session:
            study = session.scalar(
                select(Study)
                .join(Participant, Participant.study_id == Study.id)
                .where(Participant.id == participant_id)
            )
            slug = study.slug if study is not None else None
            adaptive = study is not None and is_adaptive(study.config.get("extra", {}))
        if not adaptive or slug is None:
            return
        if refit_due(db, slug):
            launch(queue_refit(db, slug))
        top_up_lists(db, slug)
    except Exception:  # noqa: BLE001 - logged; the participant is not affected
        LOG.exception("adaptive design update failed after participant %s answered", participant_id)


def write_proposal(db: Database, specs: list[TrialSpec], path: Path) -> Path:
    """CSV of proposed triplets: ids, names, level and why (atomically written)."""
    import pandas as pd

    from common.atomic import atomic_write
    from db.models import Stimulus

    ids = {i for spec in specs for i in spec.stimuli}
    with db.read() as session:
        names = dict(session.execute(select(Stimulus.id, Stimulus.name).where(Stimulus.id.in_(ids))).all())
    frame = pd.DataFrame(
        [
            {
                "stim0": a,
                "stim1": b,
                "stim2": c,
                "name0": names[a],
                "name1": names[b],
                "name2": names[c],
                "level": str(spec.level),
                **(spec.selection or {}),
            }
            for spec in specs
            for a, b, c in [spec.stimuli]
        ]
    )
    atomic_write(path, frame.to_csv(index=False).encode())
    return path
