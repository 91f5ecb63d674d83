"""The participant-facing pages around the trials. Each `*_ui` draws one step and stores what the
participant gave; the page decides which step to show from the database."""

from __future__ import annotations

import time

import streamlit as st

from app.resources import get_db
from common.settings import data_home
from db.engine import Database
from db.models import ParticipantStatus
from db.settings import database_url
from study.config import StudyConfig
from study.examples import MISSING_REASONS, ExampleImage, example_triplets, split_on_examples
from study.participation import ParticipantView, finish_participant, update_participant

GENDERS = ("", "female", "male", "non-binary", "another gender", "prefer not to say")
MAX_STRATEGY_CHARS = 2000


def consent_ui(config: StudyConfig) -> bool | None:
    """The consent page; True or False once the participant answered, None while they read. The caller
    stores the answer (the participant row is created by it)."""
    st.header(config.title)
    st.markdown(config.consent_text)
    agree, decline = st.columns(2)
    if agree.button("I agree and want to take part", type="primary", key="consent_yes"):
        return True
    if decline.button("I do not agree", key="consent_no"):
        return False
    return None


def demographics_ui(db: Database, view: ParticipantView) -> None:
    """Plain widgets and a button, not an `st.form`: under load a form's submit click sent while the page
    redraws was occasionally lost (the participant had to click again), a button's click never was."""
    st.header("About you")
    st.caption("Both questions are optional.")
    age = st.number_input("Age in years", min_value=16, max_value=120, value=None, step=1, key="al_age")
    gender = st.selectbox("Gender", GENDERS, format_func=lambda g: g or "—", key="al_gender")
    if st.button("Continue", type="primary", key="demographics_continue"):
        demographics = {"age": int(age) if age is not None else None, "gender": gender or None}
        update_participant(
            db,
            view.participant_id,
            demographics=demographics,
            flow_state=view.flow_state | {"demographics_done": True},
        )
        st.rerun()


def instructions_ui(db: Database, view: ParticipantView) -> None:
    pages = view.config.instructions
    page = min(st.session_state.setdefault("al_instr_page", 0), len(pages) - 1)
    shown_key = f"al_instr_shown_{page}"
    shown_at = st.session_state.setdefault(shown_key, time.monotonic())
    st.header("Instructions")
    st.caption(f"Page {page + 1} of {len(pages)}")
    instruction_page(view.study_id, pages[page], image_px=view.config.image_px)
    back, forward = st.columns(2)
    if page > 0 and back.button("Back", key="instr_back"):
        st.session_state["al_instr_page"] = page - 1
        st.rerun()
    with forward:
        _next_button(db, view, page, shown_at)


def instruction_page(study_id: int, text: str, *, image_px: int) -> None:
    """The page's text with its `[[example: KIND]]` triplets drawn from the study's images; where the
    stimulus set cannot fill a kind, a note says why, so the sentence leading to it never dangles."""
    pieces = split_on_examples(text)
    examples = _examples(database_url(), study_id) if len(pieces) > 1 else {}
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if piece.strip():
                st.markdown(piece)
        elif piece in examples:
            _example_row(examples[piece], mark_odd=piece == "obvious", image_px=image_px)
        else:
            st.info(f"No example can be shown here: {MISSING_REASONS[piece]}.")


@st.cache_data(ttl=600, show_spinner=False)
def _examples(url: str, study_id: int) -> dict[str, tuple[ExampleImage, ...]]:
    """Per database and study: one query per ten minutes, not one per participant page run."""
    return example_triplets(get_db(), study_id)


def _example_row(images: tuple[ExampleImage, ...], *, mark_odd: bool, image_px: int) -> None:
    """Three images at the trial's size, as a trial shows them."""
    for position, (column, image) in enumerate(zip(st.columns(3), images, strict=True)):
        caption = "↑ the odd one out" if mark_odd and position == 2 else None
        column.image(str(data_home() / image.path), caption=caption, width=image_px)


def _next_button(db: Database, view: ParticipantView, page: int, shown_at: float) -> None:
    """Enabled once the page has been shown for the configured minimum; until then a fragment looks at the
    clock four times a second and reruns the page when the time is up."""
    minimum = view.config.instruction_min_seconds
    waiting = time.monotonic() - shown_at < minimum
    last = page == len(view.config.instructions) - 1
    if st.button(
        "Start the practice" if last else "Next", type="primary", disabled=waiting, key=f"instr_next_{page}"
    ):
        if last:
            update_participant(
                db, view.participant_id, flow_state=view.flow_state | {"instructions_done": True}
            )
        else:
            st.session_state["al_instr_page"] = page + 1
        st.rerun()
    if waiting:
        st.fragment(lambda: _rerun_when_elapsed(shown_at, minimum), run_every=0.25)()


def _rerun_when_elapsed(shown_at: float, minimum: float) -> None:
    if time.monotonic() - shown_at >= minimum:
        st.rerun(scope="app")


def strategy_ui(db: Database, view: ParticipantView) -> None:
    """A plain text area and button (see `demographics_ui` for why not a form)."""
    st.header("Almost done")
    text = st.text_area(
        "How did you decide which image was the odd one out? (optional)",
        max_chars=MAX_STRATEGY_CHARS,
        key="al_strategy",
    )
    if st.button("Finish", type="primary", key="strategy_finish"):
        update_participant(db, view.participant_id, strategy=text.strip())
        st.rerun()


def stop_control(db: Database, view: ParticipantView) -> None:
    """The visible early exit on every page around the trials (the trial block has its own)."""
    st.divider()
    if not st.session_state.get("al_confirm_exit"):
        if st.button("Stop the study", key="stop_study"):
            st.session_state["al_confirm_exit"] = True
            st.rerun()
        return
    st.warning("Stop the study? What you have answered so far is saved and you receive the early-exit code.")
    yes, no = st.columns(2)
    if yes.button("Yes, stop", key="stop_yes"):
        finish_participant(db, view.participant_id, ParticipantStatus.EARLY_EXIT)
        st.session_state["al_just_finished"] = True
        st.rerun()
    if no.button("No, continue", key="stop_no"):
        st.session_state["al_confirm_exit"] = False
        st.rerun()


END_TEXTS = {
    ParticipantStatus.COMPLETED: ("Thank you!", "You have completed the study. All your answers are saved."),
    ParticipantStatus.EARLY_EXIT: ("You stopped the study", "Thank you. The answers you gave are saved."),
    ParticipantStatus.NO_CONSENT: (
        "No consent given",
        "You chose not to take part. Nothing else will be recorded. Please return your submission.",
    ),
}
BLOCKED_TEXT = (
    "This session cannot be resumed",
    "The study was interrupted and this study does not allow "
    "continuing an interrupted session. The answers you gave are saved.",
)


def end_ui(view: ParticipantView, code: str, url: str) -> None:
    title, text = (
        BLOCKED_TEXT
        if view.flow_state.get("resume_blocked")
        else END_TEXTS.get(view.status, ("The study has ended", ""))
    )
    st.header(title)
    st.write(text)
    if code:
        st.markdown(f"Your code: **`{code}`**")
    if url:
        st.link_button("Return to the recruitment site", url, type="primary")
