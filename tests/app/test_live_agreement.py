"""The live model–human agreement panel (Participants & data → Agreement): the base model's and the latest
teacher run's agreement with the participants per Levels type, next to the human noise ceiling, with CIs and
the answers they rest on; arriving answers are scored incrementally (only new participants are read and
scored), a new model scores the cached answers once, and excluding a participant reads nothing again."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import workflows.live_agreement as live
from db.engine import Database
from db.models import Run, RunStatus, TripletLevel
from study.qc import set_exclusion
from study.studies import get_study
from tests.app.conftest import MAIN
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant
from workflows.artifacts import write_embeddings
from workflows.jobs import run_dir

SLUG = "live-study"


@pytest.fixture
def study(app_home):
    """Triplet A (dog0, dog1, car0): all pick car0. Triplet B (dog0, cat0, cat1): all pick cat1."""
    live._CACHE.clear()
    live._FEATURES.clear()
    db = Database.from_url()
    ids = make_stimuli(db)
    dog0, dog1, cat0, cat1, car0 = ids[0], ids[1], ids[3], ids[4], ids[6]
    triplets = [experimental(dog0, dog1, car0), experimental(dog0, cat0, cat1, TripletLevel.WITHIN_CLASS)]
    make_study(db, SLUG, [triplets], participants_per_list=50)
    answer = [car0, cat1]
    for i in range(4):
        run_participant(db, SLUG, f"person{i}", answer)
    yield db, ids, answer
    db.dispose()


def _embeddings_run(db, ids: list[int], kind: str, artifact: str, flip_within: bool = False) -> int:
    """One-hot category features (dog, cat, car, bus): the model picks car0 in A and dog0 in B, or, with
    `flip_within`, cat1 in B (cat0 moved next to the dogs)."""
    features = np.zeros((len(ids), 4), np.float32)
    for row in range(len(ids)):
        features[row, row // 3] = 1.0
    if flip_within:
        features[3] = [1.0, 0.0, 0.0, 0.0]
    with db.read() as session:
        study_id = get_study(session, SLUG).id
    with db.write() as session:
        run = Run(kind=kind, study_id=study_id, status=RunStatus.SUCCEEDED, config={"study": SLUG})
        session.add(run)
        session.flush()
        run_id = run.id
    path = write_embeddings(run_dir(run_id) / f"{artifact}.npz", features, np.array(ids))
    with db.write() as session:
        session.get(Run, run_id).artifacts = {artifact: str(path.relative_to(path.parents[2]))}
    return run_id


@pytest.fixture
def scored(monkeypatch) -> list[int]:
    """How many judgments were scored (for any model) in this test."""
    calls: list[int] = []
    real = live._scored

    def counting(judgments, models):
        calls.append(len(judgments) * len(models))
        return real(judgments, models)

    monkeypatch.setattr(live, "_scored", counting)
    return calls


def _agreement_page() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["researcher_logged_in"] = True
    at.session_state["data_tab"] = "Agreement"
    at.run()
    return at.switch_page("views/participants.py").run()


def _panel(at: AppTest):
    assert not at.exception, at.exception
    return at.dataframe[0].value.set_index("level")


def test_without_model_features_the_panel_says_how_to_get_them(study):
    at = _agreement_page()
    assert not at.exception, at.exception
    assert any("No model features for this study yet" in info.value for info in at.info)


def test_live_agreement_per_level_with_ceiling_and_incremental_refresh(study, scored):
    db, ids, answer = study
    _embeddings_run(db, ids, "features", "embeddings")
    at = _agreement_page()
    table = _panel(at)
    assert table.loc["between_class", "base model"] == "1.000 [1.000, 1.000]"
    assert table.loc["within_class", "base model"] == "0.000 [0.000, 0.000]"
    assert table.loc["overall", "base model"] == "0.500 [0.000, 1.000]"
    assert table.loc["between_class", "answers"] == 4 and table.loc["overall", "triplets"] == 2
    assert table.loc["between_class", "human ceiling"] == (
        "1.000 [1.000, 1.000] (1 triplets: too few to be a ceiling)"
    )
    assert not any("Not a held-out score" in c.value for c in at.caption)  # no teacher yet
    assert sum(scored) == 8  # 4 participants x 2 judgments x 1 model

    for i in range(4, 6):
        run_participant(db, SLUG, f"person{i}", answer)
    table = _panel(at.run())
    assert table.loc["overall", "answers"] == 12
    assert sum(scored) == 8 + 4  # only the two new participants were read and scored

    teacher = _embeddings_run(db, ids, "teacher", "embeddings", flip_within=True)
    table = _panel(at.run())
    assert table.loc["within_class", f"teacher run {teacher}"] == "1.000 [1.000, 1.000]"
    assert any("Not a held-out score" in c.value for c in at.caption)  # a teacher was fitted on these answers
    assert table.loc["within_class", "base model"] == "0.000 [0.000, 0.000]"
    assert sum(scored) == 12 + 12  # every cached answer scored once, for the new model only

    with db.read() as session:
        from db.models import Participant

        first = session.query(Participant).filter_by(external_id="person0").one().id
    set_exclusion(db, first, True, "test")
    table = _panel(at.run())
    assert table.loc["overall", "answers"] == 10 and sum(scored) == 24  # nothing read or scored again
