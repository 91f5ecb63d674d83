"""The data a trial-block mount receives: the trials still to run, their image URLs, timing and texts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from study.config import StudyConfig
from study.participation import PlannedTrial
from workflows.participant.flow import BlockRun, Intro


def api_prefix() -> str:
    """Where the participant REST endpoints live: under `server.baseUrlPath`, beside Streamlit's own
    routes, so a proxy that forwards only the app's path (e.g. https://lab.example.org/alignlab/) forwards
    responses too."""
    from streamlit import config
    from streamlit.url_util import make_url_path

    return make_url_path(config.get_option("server.baseUrlPath") or "", "/api")


LABELS = {
    "timeout": "It seems you are unsure. Please try to answer a bit faster.",
    "loading": "Loading the images of this block",
    "reconnecting": "Reconnecting to the server… The study continues as soon as the images arrive. "
    "Please keep this page open.",
    "unavailable": "An image of this trial is missing on the server. The trial is skipped and reported to "
    "the researchers; you do not need to do anything.",
    "stalled": "Your answers could not be saved for a long time. They are kept in this browser. Please "
    "check your internet connection and press Try again; if this message stays, contact the researchers.",
    "retry": "Try again",
    "saving": "Saving your answers…",
    "offline": "The connection to the server is interrupted. Your answers are kept in this browser and "
    "will be sent as soon as it is back. Please keep this page open.",
}
HOW_TO_ANSWER = "Click the odd one out, or press ← ↓ → (or 1 2 3)."


def stimulus_url(stimulus_id: int, token: str) -> str:
    """The image as the participant's browser loads it: the REST route serves only images of the token's
    participant's own list."""
    return f"{api_prefix()}/stimuli/{stimulus_id}?{urlencode({'token': token})}"


def intro_texts(run: BlockRun, config: StudyConfig) -> dict[str, Any]:
    practice = run.block_number == 0
    texts = {
        Intro.START: (
            "Practice" if practice else "Ready?",
            f"{HOW_TO_ANSWER} Press Space or click Continue to start.",
        ),
        Intro.PRACTICE_DONE: (
            "Practice finished",
            "The main study starts now. Press Space or click Continue.",
        ),
        Intro.BREAK: (
            "Break",
            f"You have finished block {run.block_number - 1} of {run.n_blocks}. Take a short "
            "rest, then press Space or click Continue.",
        ),
        Intro.RESUME: (
            "Welcome back",
            f"You continue where you left off. {HOW_TO_ANSWER} Press Space or click Continue.",
        ),
    }
    title, text = texts[run.intro]
    if config.fullscreen:
        text += " The study switches to full screen; please stay in it until the end of the block."
    return {
        "kind": run.intro.value,
        "title": title,
        "text": text,
        "max_seconds": config.break_max_seconds if run.intro == Intro.BREAK else 0,
    }


def _trial(trial: PlannedTrial, token: str) -> dict[str, Any]:
    return {
        "trial_index": trial.trial_index,
        "shown": list(trial.shown),
        "urls": [stimulus_url(i, token) for i in trial.shown],
    }


def block_data(
    run: BlockRun,
    config: StudyConfig,
    *,
    namespace: str,
    token: str,
    block_key: str,
    answered_count: int,
    total: int,
) -> dict[str, Any]:
    label = "Practice" if run.block_number == 0 else f"Block {run.block_number} of {run.n_blocks}"
    return {
        "ns": namespace,
        "token": token,
        "api": api_prefix(),
        "block_key": block_key,
        "block": run.block,
        "intro": intro_texts(run, config),
        "trials": [_trial(t, token) for t in run.trials],
        "next_urls": [stimulus_url(i, token) for i in run.next_block_first.shown]
        if run.next_block_first
        else [],
        "iti_ms": config.iti_ms,
        "min_rt_ms": config.min_valid_rt_ms,
        "window_ms": config.response_window_ms,
        "image_px": config.image_px,
        "fullscreen": config.fullscreen,
        "labels": LABELS,
        "progress": {"done": answered_count, "total": total, "label": label},
    }
