"""QC rules with known answers, per rule and through `participant_qc`, and the recorded exclusion decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import study.qc
from db.models import Participant, TrialKind
from study import participation as P
from study.qc import (
    QCConfig,
    catch_accuracy,
    participant_qc,
    position_biased,
    position_shares,
    set_exclusion,
    too_fast_windows,
)
from study.studies import TrialSpec
from tests.support.analysis_helpers import (
    answer_positions,
    catch,
    experimental,
    make_stimuli,
    make_study,
    run_participant,
)


def test_catch_accuracy_counts_timeouts_as_wrong():
    assert catch_accuracy(np.array([5, 5, -1, 7]), np.array([5, 5, 5, 7])) == 0.75
    assert np.isnan(catch_accuracy(np.array([]), np.array([])))


def _window(n_under_800: int, n_under_1100: int) -> list[float]:
    """20 RTs: n at 700 ms, then n at 1000 ms, the rest at 2000 ms (shuffled order must not matter)."""
    rts = [700.0] * n_under_800 + [1000.0] * n_under_1100
    rts += [2000.0] * (20 - len(rts))
    return list(np.random.default_rng(1).permutation(rts))


def test_too_fast_needs_fifth_under_800_and_tenth_under_1100():
    assert too_fast_windows(_window(5, 5)).tolist() == [True]
    assert too_fast_windows(_window(4, 6)).tolist() == [False]  # 5th-fastest is 1000 ms
    assert too_fast_windows(_window(5, 4)).tolist() == [False]  # 10th-fastest is 2000 ms
    assert too_fast_windows(_window(20, 0)).tolist() == [True]


def test_too_fast_is_strict_and_judges_whole_windows_only():
    exact = [799.0] * 5 + [1100.0] * 5 + [3000.0] * 10
    assert too_fast_windows(exact).tolist() == [False]  # 10th-fastest == 1100 is not < 1100
    assert too_fast_windows(_window(20, 0) + _window(0, 0) + [100.0] * 19).tolist() == [True, False]
    assert too_fast_windows([100.0] * 19).size == 0


def test_position_shares_and_bias_thresholds():
    assert position_shares(np.array([0, 0, 1, 2])).tolist() == [0.5, 0.25, 0.25]
    assert not position_biased([0.34, 0.33, 0.33])
    assert position_biased([0.41, 0.30, 0.29])  # > 40%
    assert position_biased([0.37, 0.37, 0.26])  # < 27%
    assert not position_biased([0.36, 0.37, 0.27])  # 27% itself is allowed
    assert not position_biased([0.40, 0.30, 0.30])  # 40% itself is allowed


@pytest.fixture
def qc_study(db):
    """One list: a practice trial, 2 catch trials, 20 experimental trials."""
    ids = make_stimuli(db)
    dog, cat, car = ids[0:3], ids[3:6], ids[6:9]
    specs = [
        TrialSpec((dog[0], dog[1], car[0]), TrialKind.PRACTICE, block=-1),
        catch(dog[0], dog[1], car[0]),
        catch(cat[0], cat[1], car[1]),
    ]
    specs += [experimental(dog[i % 3], cat[(i // 3) % 3], ids[6 + i % 6]) for i in range(20)]
    make_study(db, "qc-study", [specs], participants_per_list=10)
    return db, ids, specs


def _choices(specs, catch_right: list[bool], timeouts: int = 0) -> list[int | None]:
    """Practice: pick item 0; catches right or wrong as asked; experimental: item 2, the first `timeouts`
    None."""
    chosen = [specs[0].stimuli[0]]
    chosen += [
        spec.stimuli[2] if right else spec.stimuli[0]
        for spec, right in zip(specs[1:3], catch_right, strict=True)
    ]
    chosen += [None if i < timeouts else spec.stimuli[2] for i, spec in enumerate(specs[3:])]
    return chosen


def test_participant_qc_catch_and_timeouts(qc_study):
    db, _, specs = qc_study
    good = run_participant(db, "qc-study", "good", _choices(specs, [True, True]))
    sloppy = run_participant(db, "qc-study", "sloppy", _choices(specs, [True, False], timeouts=3))
    table = participant_qc(db, "qc-study", QCConfig(max_timeouts=2)).set_index("participant_id")
    assert table.loc[good, "catch_accuracy"] == 1.0
    assert table.loc[good, "n_answered"] == 22  # practice not counted
    assert table.loc[good, "flags"] == "" and not table.loc[good, "suggest_exclude"]
    assert table.loc[sloppy, "catch_accuracy"] == 0.5
    assert table.loc[sloppy, "n_timeouts"] == 3
    assert table.loc[sloppy, "flags"] == "catch, timeouts"
    assert table.loc[sloppy, "suggest_exclude"]
    assert (
        participant_qc(db, "qc-study").set_index("participant_id").loc[sloppy, "flags"] == "catch"
    )  # 3 <= 10


def test_participant_qc_too_fast_median_and_events(qc_study):
    db, _, specs = qc_study
    rts = [5000.0, 3000.0, 3000.0] + [500.0] * 10 + [2000.0] * 10
    fast = run_participant(db, "qc-study", "fast", _choices(specs, [True, True]), rts)
    for k in range(3):
        P.record_event(db, fast, "blur", client_event_id=f"b{k}")
    P.record_event(db, fast, "fullscreen_exit", client_event_id="f0")
    P.record_event(db, fast, "focus", client_event_id="x0")
    for k in range(4):  # presses before the minimum valid RT, one event per trial
        P.record_event(
            db, fast, "early_response", client_event_id=f"e{k}", trial_index=k, detail={"rt_ms": 300.0}
        )
    row = participant_qc(db, "qc-study").set_index("participant_id").loc[fast]
    assert (row["fast_windows"], row["n_windows"]) == (1, 1)  # 22 answered: one whole window of 20
    assert row["median_rt_ms"] == 2000.0
    assert (row["blurs"], row["fullscreen_exits"], row["early_responses"]) == (3, 1, 4)
    assert row["flags"] == "fast_window" and not row["suggest_exclude"]  # THINGS drops a worker at >= 5
    strict = QCConfig(max_fast_windows=0, max_blurs=2, max_fullscreen_exits=1, max_early_responses=3)
    row = participant_qc(db, "qc-study", strict).set_index("participant_id").loc[fast]
    assert row["flags"] == "too_fast, blur, early" and row["suggest_exclude"]


def test_participant_qc_position_bias_needs_enough_trials(qc_study):
    db, _, specs = qc_study
    left = answer_positions(db, "qc-study", "left", [0] * 23, [1500.0] * 23)
    row = participant_qc(db, "qc-study").set_index("participant_id").loc[left]
    assert row["share_left"] == 1.0
    assert "position_bias" not in row["flags"]  # 22 answered < 100
    row = (
        participant_qc(db, "qc-study", QCConfig(position_min_trials=20)).set_index("participant_id").loc[left]
    )
    assert "position_bias" in row["flags"] and row["suggest_exclude"]


def test_participant_without_responses_gets_a_row(qc_study):
    db, _, _ = qc_study
    P.enter_study(db, "qc-study", "idle")
    table = participant_qc(db, "qc-study")
    assert table["n_answered"].tolist() == [0] and table["flags"].tolist() == [""]
    assert table["status"].tolist() == ["started"]


def test_exclusion_is_recorded_apart_from_payment(qc_study):
    db, _, specs = qc_study
    pid = run_participant(db, "qc-study", "someone", _choices(specs, [False, False]))
    with pytest.raises(ValueError, match="reason"):
        set_exclusion(db, pid, True, "  ")
    set_exclusion(db, pid, True, "catch accuracy 0.0 < 0.90")
    with db.read() as session:
        row = session.get(Participant, pid)
        assert (row.excluded, row.exclusion_reason, row.payment_status) == (
            True,
            "catch accuracy 0.0 < 0.90",
            "pending",
        )
    assert participant_qc(db, "qc-study")["excluded"].tolist() == [True]
    set_exclusion(db, pid, False)
    with db.read() as session:
        assert session.get(Participant, pid).excluded is False
    with pytest.raises(LookupError):
        set_exclusion(db, 99999, True, "x")


def test_qc_reads_only_participants_whose_answers_changed(qc_study, monkeypatch):
    """The measures are cached per participant: a second call reads no response, a new participant's answers
    are read alone, and a participant who answers once more is read again (and measured right)."""
    import study.qc

    db, _, specs = qc_study
    read: list[list[int]] = []
    real = study.qc._qc_responses
    monkeypatch.setattr(study.qc, "_qc_responses", lambda d, ids: read.append(sorted(ids)) or real(d, ids))
    first = run_participant(db, "qc-study", "first", _choices(specs, [True, True]))
    assert participant_qc(db, "qc-study").set_index("participant_id").loc[first, "n_answered"] == 22
    assert participant_qc(db, "qc-study")["n_answered"].tolist() == [22] and read == [[first]]
    second = run_participant(db, "qc-study", "second", _choices(specs, [True, True])[:10], finish=False)
    table = participant_qc(db, "qc-study").set_index("participant_id")
    assert read == [[first], [second]] and table.loc[second, "n_answered"] == 9
    plan = P.trial_plan(db, second)
    P.record_response(
        db,
        second,
        P.ResponsePayload(plan[10].trial_index, plan[10].shown, 2, 1500.0),
    )
    assert participant_qc(db, "qc-study").set_index("participant_id").loc[second, "n_answered"] == 10
    assert read[-1] == [second]


def test_a_new_process_reuses_the_stored_measures(qc_study, monkeypatch):
    """The measures are kept next to the SQLite file, so a restarted server reads no unchanged answers."""
    import study.qc

    db, _, specs = qc_study
    first = run_participant(db, "qc-study", "first", _choices(specs, [True, False], timeouts=2))
    before = participant_qc(db, "qc-study")
    study.qc._MEASURE_CACHE.clear()  # what a fresh process starts with
    read: list[list[int]] = []
    real = study.qc._qc_responses
    monkeypatch.setattr(study.qc, "_qc_responses", lambda d, ids: read.append(sorted(ids)) or real(d, ids))
    after = participant_qc(db, "qc-study")
    assert read == [] and after.equals(before)
    assert after.set_index("participant_id").loc[first, "catch_accuracy"] == 0.5


def _reference_measures(rows, config: QCConfig) -> dict:
    """One participant's measures with the rule functions, one by one (what the batch must equal)."""
    shown = ~rows.has(study.qc._UNAVAILABLE)
    answered = shown & ~rows.has(study.qc._TIMED_OUT)
    catch = shown & rows.has(study.qc._KNOWN_CATCH)
    fast = too_fast_windows(rows.rt_ms[answered], config.fast_window, config.fast_5th_ms, config.fast_10th_ms)
    shares = position_shares(rows.position[answered])
    rts = pd.Series(rows.rt_ms[answered])
    return {
        "n_answered": int(answered.sum()),
        "n_timeouts": int((shown & ~answered).sum()),
        "n_unavailable": int((~shown).sum()),
        "catch_accuracy": catch_accuracy(
            np.where(rows.has(study.qc._CATCH_RIGHT)[catch], 1, -1), np.ones(int(catch.sum()))
        ),
        "n_catch": int(catch.sum()),
        "fast_windows": int(fast.sum()),
        "n_windows": len(fast),
        "share_left": shares[0],
        "share_middle": shares[1],
        "share_right": shares[2],
        "median_rt_ms": float(rts.median()) if len(rts) else float("nan"),
    }


def test_batch_measures_equal_the_rules_applied_one_participant_at_a_time():
    """QC over a batch of participants (integer arrays, one pass) gives each participant exactly the values
    of the rule functions applied to their answers alone: odd and even counts (medians), partial windows,
    NaN RTs, timeouts, unavailable trials, catch trials, and a participant without answers."""
    rng = np.random.default_rng(3)
    config = QCConfig()
    sizes = {11: 0, 12: 1, 13: 19, 14: 40, 15: 41, 16: 333}
    pid = np.concatenate([np.full(size, p) for p, size in sizes.items()])
    packed = (
        (rng.random(len(pid)) < 0.05) * study.qc._UNAVAILABLE
        + (rng.random(len(pid)) < 0.1) * study.qc._TIMED_OUT
        + (rng.random(len(pid)) < 0.2) * study.qc._KNOWN_CATCH
        + (rng.random(len(pid)) < 0.7) * study.qc._CATCH_RIGHT
        + (rng.integers(0, 3, len(pid)) + 1) * (1 << study.qc._POSITION_SHIFT)
    )
    rts = np.round(rng.gamma(2.0, 500.0, len(pid)), 1)
    rts[rng.random(len(pid)) < 0.02] = np.nan
    rows = study.qc.QCRows(pid.astype(np.int64), packed.astype(np.int64), rts)
    batch = study.qc.measures_of_rows(rows, list(sizes), config)
    for p in sizes:
        own = study.qc.QCRows(pid[pid == p], packed[pid == p], rts[pid == p])
        expected = _reference_measures(own, config)
        assert batch[p].keys() == expected.keys()
        for name, value in expected.items():
            assert batch[p][name] == value or (np.isnan(value) and np.isnan(batch[p][name])), (p, name)
