"""Fake runs for the maps tests: a stimulus set with thumbnail files, two runs whose "embeddings"
artifacts hold planted before/after representations, and a study whose judgments follow the after one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from db.models import (
    Participant,
    Response,
    Run,
    RunStatus,
    Stimulus,
    StimulusSet,
    Study,
    Trial,
    TrialKind,
    TripletList,
)
from tests.support.planted import colour_to_category, cosine_similarity_matrix
from workflows.artifacts import write_embeddings


@dataclass(frozen=True)
class FakeRuns:
    before_run: int
    after_run: int
    stimulus_ids: list[int]
    n_judgments: int


def make_fake_runs(db, home: Path, *, n_judgments: int = 300, seed: int = 0) -> FakeRuns:
    """Planted colour -> category reorganisation on 80 images (4 categories x 2 colours x 10)."""
    planted = colour_to_category()
    ids = _stimuli(db, home, planted)
    order = np.random.default_rng(seed).permutation(
        len(ids)
    )  # the after run stores its rows in another order
    runs = []
    for kind, name, x, rows in (
        ("features", "base", planted.before, np.arange(len(ids))),
        ("teacher", "aligned", planted.after, order),
    ):
        path = write_embeddings(home / "runs" / f"{name}.npz", x[rows], np.asarray(ids)[rows])
        with db.write() as session:
            run = Run(
                kind=kind,
                name=name,
                status=RunStatus.SUCCEEDED,
                artifacts={"embeddings": str(path.relative_to(home))},
            )
            session.add(run)
            session.flush()
            runs.append(run.id)
    if n_judgments:
        _study_with_judgments(db, ids, planted.after, n_judgments, runs)
    return FakeRuns(runs[0], runs[1], ids, n_judgments)


def _stimuli(db, home: Path, planted) -> list[int]:
    folder = home / "stimuli" / "fake" / "thumbs"
    folder.mkdir(parents=True, exist_ok=True)
    with db.write() as session:
        stimulus_set = StimulusSet(name="fake")
        session.add(stimulus_set)
        session.flush()
        rows = []
        for i, (category, superordinate, colour) in enumerate(
            zip(planted.category, planted.superordinate, planted.colour, strict=True)
        ):
            Image.new("RGB", (32, 32), colour).save(folder / f"{i}.jpg")
            rows.append(
                Stimulus(
                    stimulus_set_id=stimulus_set.id,
                    name=f"{category}/{colour}{i}.jpg",
                    path=f"stimuli/fake/thumbs/{i}.jpg",
                    thumbnail_path=f"stimuli/fake/thumbs/{i}.jpg",
                    content_hash=f"h{i}",
                    category=str(category),
                    superordinate=str(superordinate),
                    width=32,
                    height=32,
                    n_bytes=100,
                )
            )
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _study_with_judgments(db, ids: list[int], truth: np.ndarray, n: int, runs: list[int]) -> None:
    """One simulated participant whose odd-one-out choices follow cosine similarity in `truth`."""
    rng = np.random.default_rng(1)
    sim = cosine_similarity_matrix(truth)
    with db.write() as session:
        study = Study(
            slug="fake-study", stimulus_set_id=session.get(Stimulus, ids[0]).stimulus_set_id, salt="x"
        )
        session.add(study)
        session.flush()
        triplet_list = TripletList(study_id=study.id, list_index=0)
        participant = Participant(
            study_id=study.id, external_id="sim-1", source="simulated", is_simulated=True, consent=True
        )
        session.add_all([triplet_list, participant])
        session.flush()
        for index in range(n):
            a, b, c = rng.choice(len(ids), 3, replace=False)
            odd = {c: sim[a, b], b: sim[a, c], a: sim[b, c]}
            chosen = ids[max(odd, key=odd.get)]
            trial = Trial(
                list_id=triplet_list.id,
                trial_index=index,
                stim0_id=ids[a],
                stim1_id=ids[b],
                stim2_id=ids[c],
                kind=TrialKind.EXPERIMENTAL,
                triplet_key=f"{a}-{b}-{c}",
            )
            session.add(trial)
            session.flush()
            session.add(
                Response(
                    participant_id=participant.id,
                    trial_index=index,
                    trial_id=trial.id,
                    shown_left_id=ids[a],
                    shown_middle_id=ids[b],
                    shown_right_id=ids[c],
                    chosen_stimulus_id=chosen,
                    chosen_position=[ids[a], ids[b], ids[c]].index(chosen),
                    rt_ms=float(rng.uniform(500, 3000)),
                )
            )
        for run_id in runs:
            session.get(Run, run_id).study_id = study.id
