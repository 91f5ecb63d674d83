"""Pure parts of the participant page: step order, block runs and intros, payload checks, tokens."""

from __future__ import annotations

import dataclasses
import time

import pytest

from db.models import ParticipantStatus, TrialKind
from study.config import StudyConfig
from study.participation import ParticipantView, PlannedTrial
from workflows.participant import tokens
from workflows.participant.flow import Intro, Step, block_run, next_step
from workflows.participant.identity import arrival_from_query
from workflows.participant.payloads import BadRequest, parse_response


def plan() -> list[PlannedTrial]:
    blocks = [-1, -1, 0, 0, 0, 1, 1, 1]
    return [
        PlannedTrial(
            i,
            100 + i,
            b,
            TrialKind.PRACTICE if b < 0 else TrialKind.EXPERIMENTAL,
            None,
            (3 * i + 1, 3 * i + 2, 3 * i + 3),
        )
        for i, b in enumerate(blocks)
    ]


def view(**changes) -> ParticipantView:
    base = ParticipantView(
        1,
        "p",
        ParticipantStatus.STARTED,
        True,
        {},
        None,
        {"demographics_done": True, "instructions_done": True},
        StudyConfig(),
        1,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "answered", "expected"),
    [
        ({"consent": None}, set(), Step.CONSENT),
        ({"flow_state": {}}, set(), Step.DEMOGRAPHICS),
        ({"flow_state": {"demographics_done": True}}, set(), Step.INSTRUCTIONS),
        ({}, {0, 1}, Step.TRIALS),
        ({}, set(range(8)), Step.STRATEGY),
        ({"strategy": ""}, set(range(8)), Step.FINISH),
        ({"status": ParticipantStatus.EARLY_EXIT}, {0}, Step.END),
    ],
)
def test_next_step_follows_the_levels_order(changes, answered, expected):
    assert next_step(view(**changes), plan(), answered, returning=False) == expected


def test_steps_the_study_does_not_ask_for_are_skipped():
    config = StudyConfig(ask_demographics=False, instructions=(), ask_strategy=False)
    assert next_step(view(flow_state={}, config=config), plan(), set(), returning=False) == Step.TRIALS
    assert next_step(view(config=config), plan(), set(range(8)), returning=False) == Step.FINISH


def test_block_policy_stops_only_a_returning_participant_who_already_answered():
    config = StudyConfig(resume_policy="block")
    assert next_step(view(config=config), plan(), {0}, returning=True) == Step.RESUME_BLOCKED
    assert next_step(view(config=config), plan(), set(), returning=True) == Step.TRIALS
    assert next_step(view(config=config), plan(), {0}, returning=False) == Step.TRIALS


@pytest.mark.parametrize(
    ("answered", "block", "intro", "todo", "number"),
    [
        (set(), -1, Intro.START, [0, 1], 0),
        ({0}, -1, Intro.RESUME, [1], 0),
        ({0, 1}, 0, Intro.PRACTICE_DONE, [2, 3, 4], 1),
        ({0, 1, 2, 3, 4}, 1, Intro.BREAK, [5, 6, 7], 2),
        ({0, 1, 2, 3, 4, 6}, 1, Intro.RESUME, [5, 7], 2),
    ],
)
def test_block_run_starts_at_the_first_unanswered_trial(answered, block, intro, todo, number):
    run = block_run(plan(), answered)
    assert (run.block, run.intro, [t.trial_index for t in run.trials], run.block_number, run.n_blocks) == (
        block,
        intro,
        todo,
        number,
        2,
    )


def test_block_run_preloads_the_next_block_and_restart_repeats_the_block():
    assert block_run(plan(), {0, 1}).next_block_first.trial_index == 5
    assert block_run(plan(), {0, 1, 2, 3, 4}).next_block_first is None
    assert [t.trial_index for t in block_run(plan(), {0, 1, 2}, restart_block=True).trials] == [2, 3, 4]


def test_prolific_parameters_win_over_an_anonymous_id():
    arrival = arrival_from_query(
        {"study": "s", "PROLIFIC_PID": "abc", "STUDY_ID": "st", "SESSION_ID": "se", "participant": "anon-1"}
    )
    assert (arrival.external_id, arrival.source, arrival.external_session_id) == ("abc", "prolific", "se")
    assert arrival_from_query({"study": "s"}).external_id is None


GOOD = {
    "trial_index": 3,
    "shown": [4, 5, 6],
    "chosen_position": 1,
    "rt_ms": 1234.5,
    "client_onset_ms": time.time() * 1000,
    "input_modality": "keyboard",
    "timed_out": False,
}


def test_parse_response_keeps_every_field():
    payload = parse_response(GOOD)
    assert (
        payload.trial_index,
        payload.shown,
        payload.chosen_position,
        payload.rt_ms,
        payload.input_modality,
    ) == (3, (4, 5, 6), 1, 1234.5, "keyboard")


@pytest.mark.parametrize(
    "bad",
    [
        {"shown": [4, 5]},
        {"shown": [4, 5, "6"]},
        {"trial_index": "3"},
        {"chosen_position": 1.0},
        {"rt_ms": float("nan")},
        {"rt_ms": True},
        {"client_onset_ms": "x"},
        {"client_onset_ms": -1e308},
        {"client_onset_ms": 1.0e12},  # 2001: not near the server's time
        {"timed_out": "false"},
        {"timed_out": 0},
        {"unavailable": "true"},
        {"input_modality": "simulated"},
        {"trial_index": 10**30},
        {"trial_index": -1},
        {"rt_ms": -99999},
    ],
)
def test_parse_response_names_the_malformed_field(bad):
    with pytest.raises(BadRequest, match=next(iter(bad))):
        parse_response(GOOD | bad)


def test_tokens_verify_across_a_restart_and_forgeries_are_refused(tmp_path):
    first = tokens.TokenKey.load(tmp_path, environ={})
    token = first.token(42)
    restarted = tokens.TokenKey.load(tmp_path, environ={})  # a restarted server reads the same key file
    assert (first.created, restarted.created) == (True, False)
    assert restarted.participant(token) == 42
    mac = token.split(".")[1]
    for forged in ("43." + mac, "42.deadbeef", "", None, 42, "42", "a.b.c", "²." + mac, "42.ü" + mac[1:]):
        with pytest.raises(tokens.InvalidToken):
            restarted.participant(forged)


def test_alignlab_secret_key_wins_and_a_different_key_refuses_old_tokens(tmp_path):
    shared = tokens.TokenKey.load(tmp_path, environ={"ALIGNLAB_SECRET_KEY": "shared-secret"})
    assert shared.source == "ALIGNLAB_SECRET_KEY" and not (tmp_path / tokens.SECRET_FILENAME).exists()
    other_host = tokens.TokenKey.load(tmp_path / "..", environ={"ALIGNLAB_SECRET_KEY": "shared-secret"})
    assert other_host.participant(shared.token(7)) == 7
    with pytest.raises(tokens.InvalidToken, match="does not verify"):
        tokens.TokenKey.load(tmp_path, environ={}).participant(shared.token(7))
