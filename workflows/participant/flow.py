"""Which step a participant is at, decided from the database alone (so a reload or a server restart
lands on the same step), and which trials the next block mount runs. No Streamlit here."""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from db.models import ParticipantStatus
from study.participation import ParticipantView, PlannedTrial
from study.studies import PRACTICE_BLOCK


class Step(enum.StrEnum):
    CONSENT = "consent"
    DEMOGRAPHICS = "demographics"
    INSTRUCTIONS = "instructions"
    TRIALS = "trials"
    RESUME_BLOCKED = "resume_blocked"
    STRATEGY = "strategy"
    FINISH = "finish"
    END = "end"


class Intro(enum.StrEnum):
    """The screen shown before a block mount's first trial."""

    START = "start"  # very first trial of the session
    PRACTICE_DONE = "practice_done"  # first experimental block after practice
    BREAK = "break"  # between experimental blocks (capped, continue key)
    RESUME = "resume"  # back after a reload, a closed tab or a server restart


@dataclass(frozen=True)
class BlockRun:
    block: int
    block_number: int  # 1-based among experimental blocks; 0 for practice
    n_blocks: int
    intro: Intro
    trials: tuple[PlannedTrial, ...]
    next_block_first: PlannedTrial | None  # preloaded while this block runs


def next_step(
    view: ParticipantView, plan: Sequence[PlannedTrial], answered: Collection[int], *, returning: bool
) -> Step:
    """The step to show now. `returning`: a new browser session for a participant who already exists."""
    if view.status != ParticipantStatus.STARTED:
        return Step.END
    if view.consent is None:
        return Step.CONSENT
    if view.config.ask_demographics and not view.flow_state.get("demographics_done"):
        return Step.DEMOGRAPHICS
    if view.config.instructions and not view.flow_state.get("instructions_done"):
        return Step.INSTRUCTIONS
    if any(trial.trial_index not in answered for trial in plan):
        if returning and answered and view.config.resume_policy == "block":
            return Step.RESUME_BLOCKED
        return Step.TRIALS
    if view.config.ask_strategy and view.strategy is None:
        return Step.STRATEGY
    return Step.FINISH


def block_run(
    plan: Sequence[PlannedTrial], answered: Collection[int], *, restart_block: bool = False
) -> BlockRun:
    """The block holding the first unanswered trial, with the trials still to run in it.

    With `restart_block` the whole block is run again from its first trial; the server keeps the first
    response it stored for each trial and reports later ones as duplicates.
    """
    first = next(trial for trial in plan if trial.trial_index not in answered)
    in_block = [trial for trial in plan if trial.block == first.block]
    todo = in_block if restart_block else [t for t in in_block if t.trial_index not in answered]
    experimental = sorted({trial.block for trial in plan if trial.block != PRACTICE_BLOCK})
    later = [
        trial for trial in plan if trial.block != first.block and trial.trial_index > in_block[-1].trial_index
    ]
    return BlockRun(
        block=first.block,
        block_number=experimental.index(first.block) + 1 if first.block in experimental else 0,
        n_blocks=len(experimental),
        intro=_intro(plan, answered, in_block),
        trials=tuple(todo),
        next_block_first=later[0] if later else None,
    )


def _intro(plan: Sequence[PlannedTrial], answered: Collection[int], in_block: list[PlannedTrial]) -> Intro:
    if any(trial.trial_index in answered for trial in in_block):
        return Intro.RESUME
    if in_block[0].trial_index == plan[0].trial_index:
        return Intro.START
    previous = plan[plan.index(in_block[0]) - 1]
    return Intro.PRACTICE_DONE if previous.block == PRACTICE_BLOCK else Intro.BREAK
