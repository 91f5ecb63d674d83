"""Adaptive designs: lists chosen by a planted teacher keep the Levels mix, catch and repeat trials, the
random share, and say why each triplet was asked; refits are launched every N answers; the CLI proposes."""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import pytest
from sqlalchemy import select

from alignment.active import Member, score_pool
from db.models import Participant, Response, Stimulus, Study, Trial, TrialKind, TripletLevel, TripletList
from db.runs import create_run, finish_run
from study.adaptive import waiting_lists
from study.design import DesignConfig, create_study_from_design
from study.stimuli import import_stimulus_set
from study.studies import triplet_key
from tests.support.stimulus_files import make_layout
from workflows.adaptive import after_answer, latest_teacher, propose, top_up_lists
from workflows.artifacts import write_embeddings

LAYOUT = {sup: {f"{sup}{c}": 4 for c in range(3)} for sup in ("animal", "tool", "food")}  # 36 images
CONFIG = DesignConfig(
    n_lists=1,
    n_between_class=5,
    n_within_class=5,
    n_class_border=5,
    n_blocks=2,
    catch_per_block=1,
    n_practice=1,
    within_repeats=2,
    n_shared=3,
    seed=3,
    mode="adaptive",
    random_share=0.2,
    lists_ahead=2,
    refit_every=4,
    pool_per_level=60,
)


@pytest.fixture
def study(db, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    report = import_stimulus_set(db, make_layout(tmp_path / "src", LAYOUT), "set")
    study_id, _ = create_study_from_design(db, "ada-study", report.stimulus_set_id, CONFIG)
    return study_id


def planted_teacher(db, study_id: int, tmp_path, seed: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """A succeeded teacher run with random planted embeddings (the scores are then known exactly)."""
    with db.read() as session:
        set_id = session.get(Study, study_id).stimulus_set_id
        ids = np.array(sorted(session.scalars(select(Stimulus.id).where(Stimulus.stimulus_set_id == set_id))))
    rng = np.random.default_rng(seed)
    aligned, raw = rng.normal(size=(len(ids), 6)), rng.normal(size=(len(ids), 6))
    run_id = create_run(db, "teacher", {"study": "ada-study"}, study_id=study_id)
    folder = tmp_path / "home" / "runs" / str(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_embeddings(folder / "embeddings.npz", aligned, ids)
    write_embeddings(folder / "raw_embeddings.npz", raw, ids)
    artifacts = {
        "embeddings": f"runs/{run_id}/embeddings.npz",
        "raw_embeddings": f"runs/{run_id}/raw_embeddings.npz",
    }
    finish_run(db, run_id, {"temperature": 0.7}, artifacts)
    return run_id, aligned, ids


def list_trials(db, study_id: int, list_index: int) -> list[Trial]:
    with db.read() as session:
        return list(
            session.scalars(
                select(Trial)
                .join(TripletList)
                .where(TripletList.study_id == study_id, TripletList.list_index == list_index)
                .order_by(Trial.trial_index)
            )
        )


def test_creation_lists_say_they_were_drawn_at_random_before_any_teacher(db, study):
    trials = list_trials(db, study, 0)
    experimental = [t for t in trials if t.kind == TrialKind.EXPERIMENTAL]
    assert Counter(t.selection["strategy"] for t in experimental) == {"random": 12, "shared": 3}
    assert all(t.selection is None for t in trials if t.kind in (TrialKind.CATCH, TrialKind.PRACTICE))


def test_the_most_uncertain_candidate_is_asked_and_reasons_name_the_teacher(db, study, tmp_path):
    run_id, aligned, ids = planted_teacher(db, study, tmp_path)
    counts = {TripletLevel.BETWEEN_CLASS: 5, TripletLevel.WITHIN_CLASS: 0, TripletLevel.CLASS_BORDER: 0}
    specs = propose(db, "ada-study", counts, seed=11)
    assert Counter(s.selection["strategy"] for s in specs) == {"uncertainty": 4, "random": 1}
    assert {s.selection["teacher_run"] for s in specs} == {str(run_id)}
    # the same pool, scored independently: its most uncertain candidate must be among the asked ones
    from study.adaptive import candidate_pool

    pool = np.array(candidate_pool(db, "ada-study", 11)[TripletLevel.BETWEEN_CLASS])
    rows = np.searchsorted(ids, pool)
    scores = score_pool("uncertainty", rows, [Member(aligned, 0.7)])
    asked = {triplet_key(s.stimuli) for s in specs if s.selection["strategy"] == "uncertainty"}
    random_images = {i for s in specs if s.selection["strategy"] == "random" for i in s.stimuli}
    best = [triplet_key(t) for t in pool[np.argsort(-scores)] if not set(t) & random_images][0]
    assert best in asked
    chosen_scores = [s.selection["score"] for s in specs if s.selection["strategy"] == "uncertainty"]
    assert min(chosen_scores) > np.median(scores)


def test_top_up_adds_lists_with_the_levels_mix_catch_repeats_and_shared_trials(db, study, tmp_path):
    run_id, _, _ = planted_teacher(db, study, tmp_path)
    with db.read() as session:
        assert waiting_lists(session, study) == 1
    created = top_up_lists(db, "ada-study")
    assert created == [1, 2]  # list 0 waits, but it was drawn before the teacher: lists_ahead = 2 fresh ones
    assert top_up_lists(db, "ada-study") == []
    first, new = list_trials(db, study, 0), list_trials(db, study, 1)
    shape = lambda trials: Counter((t.kind, t.level, t.block) for t in trials)  # noqa: E731
    assert Counter((t.kind, t.level) for t in new) == Counter((t.kind, t.level) for t in first)
    assert len(new) == len(first) and shape(new)[(TrialKind.PRACTICE, None, -1)] == 1
    shared = {t.triplet_key for t in first if t.selection and t.selection["strategy"] == "shared"}
    assert shared and shared <= {t.triplet_key for t in new}
    own = [t for t in new if t.kind == TrialKind.EXPERIMENTAL and t.selection["strategy"] != "shared"]
    assert Counter(t.selection["strategy"] for t in own) == {"uncertainty": 9, "random": 3}
    assert {t.selection["teacher_run"] for t in own} == {str(run_id)}
    assert not {t.triplet_key for t in own} & {t.triplet_key for t in first}  # new triplets only
    repeats = [t for t in new if t.kind == TrialKind.REPEAT]
    assert len(repeats) == 2 and all(t.selection is not None for t in repeats)


def test_a_refit_is_launched_every_n_answers_and_lists_are_kept_ready(db, study, tmp_path):
    planted_teacher(db, study, tmp_path)
    with db.write() as session:
        list_id = session.scalar(select(TripletList.id).where(TripletList.study_id == study))
        participant = Participant(study_id=study, external_id="p1", list_id=list_id, consent=True)
        session.add(participant)
        session.flush()
        pid = participant.id
        trials = session.scalars(
            select(Trial).where(Trial.list_id == list_id, Trial.kind == TrialKind.EXPERIMENTAL)
        )
        for k, trial in enumerate(list(trials)[:3]):
            session.add(
                Response(
                    participant_id=pid,
                    trial_index=trial.trial_index,
                    trial_id=trial.id,
                    shown_left_id=trial.stim0_id,
                    shown_middle_id=trial.stim1_id,
                    shown_right_id=trial.stim2_id,
                    chosen_position=k % 3,
                    rt_ms=900.0,
                )
            )
    launched: list[int] = []
    after_answer(db, pid, launch=launched.append)
    assert launched == []  # 3 answers < refit_every = 4
    with db.read() as session:
        assert waiting_lists(session, study) == 2  # the participant took list 0: two lists were added
    with db.write() as session:
        trial = session.scalars(
            select(Trial).where(Trial.list_id == list_id, Trial.kind == TrialKind.EXPERIMENTAL)
        ).all()[3]
        session.add(
            Response(
                participant_id=pid,
                trial_index=trial.trial_index,
                trial_id=trial.id,
                shown_left_id=trial.stim0_id,
                shown_middle_id=trial.stim1_id,
                shown_right_id=trial.stim2_id,
                chosen_position=0,
                rt_ms=900.0,
            )
        )
    after_answer(db, pid, launch=launched.append)
    assert len(launched) == 1
    after_answer(db, pid, launch=launched.append)
    assert len(launched) == 1  # the queued refit is under way: no second one


def test_fixed_designs_are_left_alone(db, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    report = import_stimulus_set(db, make_layout(tmp_path / "src", LAYOUT), "set")
    fixed = DesignConfig(**{**CONFIG.to_dict(), "mode": "fixed"})
    study_id, _ = create_study_from_design(db, "fixed-study", report.stimulus_set_id, fixed)
    with db.write() as session:
        participant = Participant(study_id=study_id, external_id="p1", consent=True)
        session.add(participant)
        session.flush()
        pid = participant.id
    after_answer(db, pid, launch=pytest.fail)
    with db.read() as session:
        assert (
            session.scalar(select(Study).where(Study.id == study_id)).config["extra"]["design"].get("shared")
            is None
        )
        assert len(session.scalars(select(TripletList).where(TripletList.study_id == study_id)).all()) == 1
    assert latest_teacher(db, study_id) is None


def test_cli_propose_writes_the_next_triplets(db, study, tmp_path, monkeypatch, capsys):
    import pandas as pd

    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", str(db.engine.url))
    run_id, _, _ = planted_teacher(db, study, tmp_path)
    out = tmp_path / "next.csv"
    assert main(["design", "propose", "--study", "ada-study", "--n", "9", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 9 and set(frame["teacher_run"]) == {run_id}
    assert Counter(frame["level"]) == {"between_class": 3, "within_class": 3, "class_border": 3}
    assert set(frame["strategy"]) == {"uncertainty", "random"}
    assert f"teacher run {run_id}" in capsys.readouterr().out
    assert main(["design", "propose", "--study", "nope", "--n", "9", "--out", str(out)]) == 2
    assert "no study with slug 'nope'" in capsys.readouterr().err


def test_an_answer_through_the_api_keeps_lists_ready_after_the_reply(db, study, tmp_path):
    """The participant API stores the answer, replies, then (Starlette background task) tops the lists up
    with the planted teacher: the participant took the only waiting list, two are ready again."""
    import time

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from db.models import StudyStatus
    from study import participation as P
    from study.studies import set_study_status
    from workflows.participant import api
    from workflows.participant.tokens import TokenKey

    run_id, _, _ = planted_teacher(db, study, tmp_path)
    set_study_status(db, "ada-study", StudyStatus.OPEN)
    key = TokenKey(b"adaptive-test-secret", "test")
    client = TestClient(Starlette(routes=api.api_routes("/api", lambda: db, key)))
    pid = P.enter_study(db, "ada-study", "P1").participant_id
    P.give_consent(db, pid, True)
    trial = next(t for t in P.trial_plan(db, pid) if t.block >= 0)
    body = {
        "token": key.token(pid),
        "trial_index": trial.trial_index,
        "shown": list(trial.shown),
        "chosen_position": 0,
        "rt_ms": 1500.0,
        "client_onset_ms": time.time() * 1000,
        "input_modality": "mouse",
        "timed_out": False,
    }
    reply = client.post("/api/responses", json=body)
    assert reply.status_code == 200 and reply.json()["status"] == "stored", reply.json()
    with db.read() as session:
        assert waiting_lists(session, study) == 2
    new = [t for t in list_trials(db, study, 1) if t.kind == TrialKind.EXPERIMENTAL]
    assert {t.selection["teacher_run"] for t in new if t.selection["strategy"] != "shared"} == {str(run_id)}


def test_the_adaptive_run_refits_then_chooses_the_new_lists_with_its_own_teacher(
    db, study, tmp_path, monkeypatch
):
    """The stage's glue: the teacher stage (replaced by one that stores planted embeddings) runs first, then
    the lists are topped up with *this* run's teacher, and the run records the answers it was fitted on."""
    from db.runs import get_run
    from workflows import jobs
    from workflows.adaptive import adaptive_stage, queue_refit

    stage_module = importlib.import_module("workflows.pipeline.teacher_stage")

    older_run, _, _ = planted_teacher(db, study, tmp_path, seed=1)
    run_id = queue_refit(db, "ada-study")

    def planted_stage(db, run, progress):
        planted_teacher(db, study, tmp_path, seed=2)  # writes a second teacher's files (run id + 1)
        artifacts = {
            "embeddings": f"runs/{run_id + 1}/embeddings.npz",
            "raw_embeddings": f"runs/{run_id + 1}/raw_embeddings.npz",
        }
        return jobs.StageResult({"temperature": 0.5}, artifacts)

    monkeypatch.setattr(stage_module, "teacher_stage", planted_stage)
    result = adaptive_stage(db, get_run(db, run_id), lambda fraction, message="": None)
    assert result.metrics["n_answers"] == 0 and result.metrics["lists_created"] == [1, 2]  # 2 ahead, fresh
    assert result.metrics["held_out_by_selection"] == {}  # this planted stage wrote no split
    new = [t for t in list_trials(db, study, 1) if t.kind == TrialKind.EXPERIMENTAL]
    assert {t.selection["teacher_run"] for t in new if t.selection["strategy"] != "shared"} == {str(run_id)}
    assert str(older_run) != str(run_id)


def test_cli_creates_an_adaptive_study_and_refuses_an_unknown_mode(db, study, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", str(db.engine.url))
    base = [
        "study",
        "create",
        "cli-ada",
        "--stimuli",
        "set",
        "--between",
        "3",
        "--within",
        "3",
        "--border",
        "3",
    ]
    assert main([*base, "--mode", "sometimes"]) == 2
    assert "design mode must be one of ('fixed', 'adaptive')" in capsys.readouterr().err
    assert main([*base, "--mode", "adaptive", "--strategy", "disagreement"]) == 0
    with db.read() as session:
        created = session.scalar(select(Study).where(Study.slug == "cli-ada"))
        assert created.config["extra"]["design"]["config"]["strategy"] == "disagreement"
        trials = session.scalars(
            select(Trial)
            .join(TripletList)
            .where(TripletList.study_id == created.id, Trial.kind == TrialKind.EXPERIMENTAL)
        ).all()
    assert trials and all(t.selection["strategy"] == "random" for t in trials)


def answer(db, participant_id: int, trial: Trial, position: int, received_at=None) -> None:
    """A stored answer to ``trial`` (received now, or at ``received_at``)."""
    with db.write() as session:
        session.add(
            Response(
                participant_id=participant_id,
                trial_index=trial.trial_index,
                trial_id=trial.id,
                shown_left_id=trial.stim0_id,
                shown_middle_id=trial.stim1_id,
                shown_right_id=trial.stim2_id,
                chosen_position=position,
                chosen_stimulus_id=(trial.stim0_id, trial.stim1_id, trial.stim2_id)[position],
                rt_ms=900.0,
                **({"server_received_at": received_at} if received_at else {}),
            )
        )


def test_a_refit_is_due_every_n_minutes_once_answers_arrived(db, tmp_path, monkeypatch):
    """refit_minutes: due when that long passed since the first answer (before any refit) or since the
    latest refit was queued, and only if answers arrived since; the answer count trigger is far away."""
    from datetime import UTC, datetime, timedelta

    from db.runs import create_run, finish_run
    from workflows.adaptive import refit_due

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    report = import_stimulus_set(db, make_layout(tmp_path / "src", LAYOUT), "set")
    config = DesignConfig(**{**CONFIG.to_dict(), "refit_every": 1000, "refit_minutes": 5})
    study_id, _ = create_study_from_design(db, "ada-minutes", report.stimulus_set_id, config)
    with db.write() as session:
        list_id = session.scalar(select(TripletList.id).where(TripletList.study_id == study_id))
        participant = Participant(study_id=study_id, external_id="p1", list_id=list_id, consent=True)
        session.add(participant)
        session.flush()
        pid = participant.id
    trials = [t for t in list_trials(db, study_id, 0) if t.kind == TrialKind.EXPERIMENTAL]
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert not refit_due(db, "ada-minutes", now=start + timedelta(hours=1))  # no answer yet
    answer(db, pid, trials[0], 0, received_at=start)
    assert not refit_due(db, "ada-minutes", now=start + timedelta(minutes=4, seconds=59))
    assert refit_due(db, "ada-minutes", now=start + timedelta(minutes=5))

    run_id = create_run(db, "adaptive", {"study": "ada-minutes"}, study_id=study_id)
    assert not refit_due(db, "ada-minutes", now=start + timedelta(hours=1))  # one is under way
    finish_run(db, run_id, {"n_answers": 1}, {})
    with db.read() as session:
        from db.models import Run, as_utc

        queued = as_utc(session.get(Run, run_id).created_at)
    assert not refit_due(db, "ada-minutes", now=queued + timedelta(hours=1))  # nothing new to learn
    answer(db, pid, trials[1], 1)
    assert not refit_due(db, "ada-minutes", now=queued + timedelta(minutes=4))
    assert refit_due(db, "ada-minutes", now=queued + timedelta(minutes=5, seconds=1))


def test_refit_minutes_must_be_a_number_of_minutes():
    for bad in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="refit_minutes must be a number of minutes >= 0"):
            DesignConfig(**{**CONFIG.to_dict(), "refit_minutes": bad})


def test_a_newer_teachers_lists_are_handed_out_first(db, study, tmp_path):
    """After a refit the fresh lists go to the next participants; the older teacher's wait as a reserve."""
    from db.models import StudyStatus
    from study import participation as P
    from study.studies import set_study_status

    first_run, _, _ = planted_teacher(db, study, tmp_path, seed=1)
    assert top_up_lists(db, "ada-study") == [1, 2]
    second_run, _, _ = planted_teacher(db, study, tmp_path, seed=2)
    assert top_up_lists(db, "ada-study") == [3, 4]
    set_study_status(db, "ada-study", StudyStatus.OPEN)
    given = []
    for name in ("a", "b", "c"):
        pid = P.enter_study(db, "ada-study", name).participant_id
        P.give_consent(db, pid, True)
        with db.read() as session:
            list_id = session.get(Participant, pid).list_id
            given.append(session.get(TripletList, list_id).list_index)
    assert given == [4, 3, 2]
    runs = {
        t.selection["teacher_run"]
        for t in list_trials(db, study, 4)
        if t.kind == TrialKind.EXPERIMENTAL and t.selection["strategy"] != "shared"
    }
    assert runs == {str(second_run)} and str(first_run) not in runs


def test_held_out_accuracy_is_reported_apart_for_the_random_share_and_the_chosen_triplets(
    db, study, tmp_path
):
    """Answers agreeing with the planted teacher on every other trial: the accuracy per group is counted by
    hand; shared triplets (from the fixed part of the design) belong to neither group."""
    from alignment.conventions import pair_similarities
    from workflows.adaptive import held_out_by_selection
    from workflows.artifacts import write_split

    run_id, aligned, ids = planted_teacher(db, study, tmp_path)
    top_up_lists(db, "ada-study")
    with db.write() as session:
        list_id = session.scalar(
            select(TripletList.id).where(TripletList.study_id == study, TripletList.list_index == 1)
        )
        participant = Participant(study_id=study, external_id="p1", list_id=list_id, consent=True)
        session.add(participant)
        session.flush()
        pid = participant.id
    expected: dict[str, list[bool]] = {"adaptive": [], "random share": []}
    keys, groups = [], []
    for k, trial in enumerate(t for t in list_trials(db, study, 1) if t.kind == TrialKind.EXPERIMENTAL):
        stored = [trial.stim0_id, trial.stim1_id, trial.stim2_id]
        similarities = pair_similarities(aligned, np.searchsorted(ids, [stored]), "dot")[0]
        teacher_odd = [2, 1, 0][int(np.argmax(similarities))]  # pairs (0,1), (0,2), (1,2)
        agree = k % 2 == 0
        answer(db, pid, trial, teacher_odd if agree else (teacher_odd + 1) % 3)
        keys.append((pid, trial.trial_index))
        group = {"uncertainty": "adaptive", "random": "random share"}.get(trial.selection["strategy"])
        groups.append(group)
        if group:
            expected[group].append(agree)
    split = tmp_path / "home" / "runs" / str(run_id) / "split.npz"
    write_split(split, np.array(keys), np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=bool))
    view = latest_teacher(db, study)
    summary = held_out_by_selection(db, "ada-study", view, f"runs/{run_id}/split.npz")
    assert set(summary) == {"adaptive", "random share"}
    for group, agreed in expected.items():
        assert summary[group] == {
            "n": len(agreed),
            "correct": sum(agreed),
            "accuracy": pytest.approx(sum(agreed) / len(agreed)),
        }
    assert len(expected["adaptive"]) == 9 and len(expected["random share"]) == 3
    only_some = np.array(keys[:4])
    write_split(
        split, only_some, np.zeros(4, dtype=bool), np.zeros(4, dtype=bool)
    )  # only held-out judgments count
    summary = held_out_by_selection(db, "ada-study", view, f"runs/{run_id}/split.npz")
    assert sum(group["n"] for group in summary.values()) == sum(g is not None for g in groups[:4])


def test_information_is_scored_given_the_studys_answered_triplets(db, study, tmp_path):
    """``information`` conditions the teacher's posterior on what the study has asked: its scores are those
    of ``score_pool`` given the answered triplets, and differ from the scores given no answers."""
    from study.adaptive import candidate_pool

    _, aligned, ids = planted_teacher(db, study, tmp_path)
    with db.write() as session:
        list_id = session.scalar(select(TripletList.id).where(TripletList.study_id == study))
        participant = Participant(study_id=study, external_id="p1", list_id=list_id, consent=True)
        session.add(participant)
        session.flush()
        pid = participant.id
    experimental = [t for t in list_trials(db, study, 0) if t.kind == TrialKind.EXPERIMENTAL]
    for k, trial in enumerate(experimental):
        answer(db, pid, trial, k % 3)
    counts = {TripletLevel.BETWEEN_CLASS: 5, TripletLevel.WITHIN_CLASS: 0, TripletLevel.CLASS_BORDER: 0}
    specs = propose(db, "ada-study", counts, seed=11, strategy="information")
    assert Counter(s.selection["strategy"] for s in specs) == {"information": 4, "random": 1}
    judged = np.array([[t.stim0_id, t.stim1_id, t.stim2_id] for t in experimental])
    pool = np.array(candidate_pool(db, "ada-study", 11)[TripletLevel.BETWEEN_CLASS])
    teacher = [Member(aligned, 0.7)]
    given_answers = score_pool(
        "information", np.searchsorted(ids, pool), teacher, asked=np.searchsorted(ids, judged)
    )
    given_none = score_pool(
        "information", np.searchsorted(ids, pool), teacher, asked=np.empty((0, 3), np.int64)
    )
    by_key = {triplet_key(t): s for t, s in zip(pool, given_answers, strict=True)}
    chosen = [s for s in specs if s.selection["strategy"] == "information"]
    assert [s.selection["score"] for s in chosen] == pytest.approx(
        [by_key[triplet_key(s.stimuli)] for s in chosen]
    )
    assert not np.allclose(given_answers, given_none, rtol=1e-3)
