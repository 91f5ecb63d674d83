"""The incremental answer summary gives exactly the agreement tables and RT histogram computed from all
answers, reads only participants with new answers, and survives a restart through its file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

import study.answer_summary as summary_module
from db.models import TripletLevel
from study import participation as P
from study.answer_summary import (
    agreement_tables,
    cached_summary,
    excluded_participants,
    loo_majority_from_counts,
    rt_counts,
    stale_participants,
    update_summary,
)
from study.judgments import load_judgments_compact
from study.monitoring import rt_histogram
from study.qc import set_exclusion
from study.reliability import levels_noise_ceiling, loo_majority_agreement, things_modal_consistency
from tests.support.analysis_helpers import catch, experimental, make_stimuli, make_study, run_participant


@pytest.fixture
def summary_study(db):
    """Ten participants answering 6 experimental triplets of two levels and a catch trial at random
    (seeded), so triplets have more than 5 answers (subsampled) and ties."""
    ids = make_stimuli(db)
    specs = [catch(ids[0], ids[1], ids[6])]
    specs += [
        experimental(ids[i % 3], ids[3 + (i + 1) % 3], ids[6 + i], level)
        for i, level in enumerate([TripletLevel.BETWEEN_CLASS, TripletLevel.WITHIN_CLASS] * 3)
    ]
    make_study(db, "sum-study", [specs], participants_per_list=20)
    rng = np.random.default_rng(3)

    def answer(name: str, finish: bool = True) -> int:
        chosen = [spec.stimuli[rng.integers(0, 3)] for spec in specs]
        if name == "p2":
            chosen[3] = None  # a timeout is no answer
        rts = rng.uniform(300, 2500, size=len(specs)).tolist()
        return run_participant(db, "sum-study", name, chosen, rts, finish=finish)

    people = [answer(f"p{i}") for i in range(9)]
    return db, answer, people, specs


def _from_all_answers(db) -> tuple[pd.DataFrame, pd.DataFrame]:
    judgments = load_judgments_compact(db, "sum-study")
    return levels_noise_ceiling(judgments), things_modal_consistency(judgments)


def test_tables_equal_those_from_all_answers(summary_study):
    db, _, people, _ = summary_study
    set_exclusion(db, people[4], True, "test")
    summary = update_summary(db, "sum-study")
    ceiling, modal = agreement_tables(summary, excluded_participants(db, "sum-study"))
    expected_ceiling, expected_modal = _from_all_answers(db)
    assert expected_ceiling["n_responses"].iloc[-1] > 0
    pd.testing.assert_frame_equal(ceiling, expected_ceiling)
    pd.testing.assert_frame_equal(modal, expected_modal)
    pd.testing.assert_frame_equal(rt_counts(summary), rt_histogram(db, "sum-study"), check_dtype=False)


def test_only_new_answers_are_read_and_a_restart_reads_nothing(summary_study, monkeypatch):
    db, _, people, specs = summary_study
    read: list[list[int]] = []
    real = summary_module._with_participants
    monkeypatch.setattr(
        summary_module,
        "_with_participants",
        lambda d, s, m, ids: read.append(list(ids)) or real(d, s, m, ids),
    )
    update_summary(db, "sum-study")
    assert read == [people]
    assert stale_participants(db, "sum-study", cached_summary(db, "sum-study")) == []
    late = run_participant(db, "sum-study", "late", [spec.stimuli[0] for spec in specs[:3]], finish=False)
    update_summary(db, "sum-study")
    assert read[-1] == [late]
    plan = P.trial_plan(db, late)
    for trial in plan[3:]:  # the rest of their answers: their rows are replaced, not added to
        P.record_response(db, late, P.ResponsePayload(trial.trial_index, trial.shown, 0, 900.0))
    update_summary(db, "sum-study")
    assert read[-1] == [late]
    summary_module._SUMMARIES.clear()  # a fresh server process: the file is read, no answer
    stored = cached_summary(db, "sum-study")
    assert stored is not None and stale_participants(db, "sum-study", stored) == []
    ceiling, modal = agreement_tables(stored, ())
    expected_ceiling, expected_modal = _from_all_answers(db)
    pd.testing.assert_frame_equal(ceiling, expected_ceiling)
    pd.testing.assert_frame_equal(modal, expected_modal)
    assert len(read) == 3


@pytest.mark.parametrize("seed", range(5))
def test_leave_one_out_from_counts_equals_the_rule(seed):
    rng = np.random.default_rng(seed)
    choices = [rng.integers(0, 3, size=rng.integers(2, 8)).tolist() for _ in range(40)]
    counts = np.array([np.bincount(c, minlength=3) for c in choices])
    expected = [loo_majority_agreement(c) for c in choices]
    assert loo_majority_from_counts(counts) == pytest.approx(expected)


def test_a_recreated_study_never_reuses_an_old_summary(summary_study):
    """A database rebuilt in the same file (or a study deleted and created again under its slug) holds a
    different study: the summary kept in memory and on disk for the old one is not its summary."""
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import Study

    db, _, _, _ = summary_study
    update_summary(db, "sum-study")
    assert cached_summary(db, "sum-study") is not None
    with db.write() as session:
        created = session.scalar(select(Study.created_at).where(Study.slug == "sum-study"))
        session.execute(
            update(Study).where(Study.slug == "sum-study").values(created_at=created + timedelta(days=1))
        )
    assert cached_summary(db, "sum-study") is None  # not the one in memory
    summary_module._SUMMARIES.clear()
    assert cached_summary(db, "sum-study") is None  # nor the file
    assert cached_summary(db, "no-such-study") is None
    rebuilt = update_summary(db, "sum-study")
    assert cached_summary(db, "sum-study") is rebuilt
