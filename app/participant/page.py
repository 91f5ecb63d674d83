"""The participant study page: consent → demographics → instructions → practice and blocks (the trial
component) → strategy → end page and redirect. The step always comes from the database, so a reload, a
reopened tab or a server restart lands where the participant left off."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import streamlit as st

from app.participant import steps
from app.participant.blocks import api_prefix, block_data
from app.participant.components import device_facts, session_monitor, trial_block
from app.resources import get_db, get_token_key
from db.engine import Database
from db.models import ParticipantStatus
from study.devices import DeviceFacts, device_refusal, policy_restricts
from study.participation import (
    Entry,
    IncompleteSession,
    InvalidParticipantId,
    ParticipantView,
    ResponseRejected,
    StudyUnavailable,
    answered_trials,
    check_admission,
    code_for,
    enter_study,
    finish_participant,
    give_consent,
    new_anonymous_id,
    participant_view,
    record_event,
    record_response,
    returning_entry,
    trial_plan,
    unavailable_trials,
    update_participant,
)
from study.pilot import PilotRefused, check_pilot_token, new_pilot_id
from study.studies import StudyNotFound
from workflows.participant.flow import Step, block_run, next_step
from workflows.participant.identity import ANONYMOUS_ID_PARAM, Arrival, arrival_from_query
from workflows.participant.payloads import BadRequest, parse_response

LOG = logging.getLogger("alignlab.participant")
MAX_BLOCK_RETRIES = 2  # re-runs of a block with unstored answers before the page stops and says so
ERROR_TEXT = (
    "Something went wrong on our side. The answers you gave are saved. Please reload this page in a moment; "
    "if this message comes back, contact the researcher."
)


def participant_page() -> None:
    """The page, with every unexpected error turned into a short message and a logged traceback (never a
    traceback on a participant's screen). Streamlit's rerun/stop are BaseExceptions and pass through."""
    try:
        _participant_page()
    except Exception:
        LOG.exception("participant page failed for %r", dict(st.query_params))
        st.error(ERROR_TEXT)


def _participant_page() -> None:
    db = get_db()
    arrival = arrival_from_query(st.query_params)
    entry = _enter(db, arrival)
    if entry is None:
        return
    view = participant_view(db, entry.participant_id)
    if view.is_pilot:
        st.caption("Pilot run (preview): kept apart from the study's data.")
    namespace = f"{entry.study_id}:{entry.external_id}"
    token = get_token_key().token(entry.participant_id) if view.consent else ""  # fresh, current key
    if "al_plan" not in st.session_state:
        st.session_state["al_plan"] = trial_plan(db, entry.participant_id)
    plan = st.session_state["al_plan"]
    settled = _settled_trials(db, entry.participant_id)
    step = next_step(view, plan, settled, returning=st.session_state["al_returning"])
    redirect = _redirect_url(view) if step == Step.END and st.session_state.get("al_just_finished") else ""
    session_monitor({"ns": namespace, "token": token, "api": api_prefix(), "redirect": redirect})
    _show(step, db, view, plan, settled, namespace=namespace, token=token)


def _settled_trials(db: Database, participant_id: int) -> set[int]:
    """Trials this browser session need not run: answered or timed out, and those stored as unavailable,
    except the ones that were unavailable when the session began (offered again once, on resume)."""
    offered_again = st.session_state.get("al_offer_again", set())
    return answered_trials(db, participant_id) | (unavailable_trials(db, participant_id) - offered_again)


def _enter(db: Database, arrival: Arrival) -> Entry | None:
    """The participant for this link once they answered the consent question; until then the consent page
    (nothing stored: a page load reserves no list slot). A clear message (and no crash) for a bad or unknown
    link or a study that cannot take anyone.

    Looked up (a write: last seen) once per browser session; later reruns reuse it, which keeps the
    reruns at block ends cheap when many participants finish a block at once."""
    cached = st.session_state.get("al_entry")
    if cached is not None and cached[0] == arrival:
        return cached[1]
    try:
        entry = returning_entry(db, arrival.slug, arrival.external_id)
        if entry is None:
            _consent_first(db, arrival)
            return None
    except StudyNotFound:
        LOG.warning("participant link for unknown study %r", arrival.slug[:80])
        st.error("There is no study at this link. Please check the link you were given.")
        return None
    except InvalidParticipantId as error:
        LOG.warning("participant link refused: %s", error)
        st.error(
            "This link carries an invalid participant id. Please open the study from the link you "
            "were given, unchanged."
        )
        return None
    except StudyUnavailable as error:
        st.warning(f"This study is not taking part in new sessions right now ({error}).")
        return None
    except PilotRefused as error:
        LOG.warning("pilot link refused: %s", error)
        st.error("This preview link is not valid. Copy it again from the study's page.")
        return None
    if st.session_state.get("al_pid") != entry.participant_id:
        _start_session(db, entry)
    st.session_state["al_entry"] = (arrival, entry)
    return entry


def _consent_first(db: Database, arrival: Arrival) -> None:
    """The consent page for a newcomer; the participant row (and list slot) is created by their answer,
    and this browser session continues as theirs."""
    if arrival.pilot_token is not None:
        config = check_pilot_token(db, arrival.slug, arrival.pilot_token)
        st.info("Pilot run (preview): the full participant flow, kept apart from the study's data.")
    else:
        config = check_admission(db, arrival.slug, arrival.external_id, arrival.requested_list)
    if arrival.external_id is None:  # keep a generated id in the URL: a reload finds the same participant
        st.query_params[ANONYMOUS_ID_PARAM] = new_pilot_id() if arrival.pilot_token else new_anonymous_id()
        arrival = arrival_from_query(st.query_params)
    if not _device_accepted(config):
        return
    choice = steps.consent_ui(config)
    if choice is None:
        return
    entry = enter_study(
        db,
        arrival.slug,
        arrival.external_id,
        consent=choice,
        external_study_id=arrival.external_study_id,
        external_session_id=arrival.external_session_id,
        source=arrival.source,
        pilot=arrival.pilot_token is not None,
        requested_list=arrival.requested_list,
    )
    _start_session(db, entry)
    st.session_state["al_entry"] = (arrival, entry)
    st.session_state["al_just_finished"] = not choice
    st.rerun()


def _device_accepted(config) -> bool:
    """The study's device policy, checked before consent (nothing is stored for a refused device). Studies
    that accept every device skip the check, so their consent page appears at once."""
    if not policy_restricts(config):
        return True
    report = device_facts()
    if report is None:
        st.caption("Checking your device…")
        return False
    refusal = device_refusal(config, DeviceFacts.from_report(report))
    if refusal:
        st.warning(refusal)
        return False
    return True


def _start_session(db: Database, entry: Entry) -> None:
    for key in [k for k in st.session_state if str(k).startswith("al_")]:
        del st.session_state[key]
    st.session_state["al_pid"] = entry.participant_id
    st.session_state["al_returning"] = not entry.is_new
    st.session_state["al_offer_again"] = unavailable_trials(db, entry.participant_id)
    if not entry.is_new:
        record_event(
            db,
            entry.participant_id,
            "session_resumed",
            client_event_id="srv-" + secrets.token_hex(8),
            detail={"status": entry.status.value},
        )


def _show(
    step: Step,
    db: Database,
    view: ParticipantView,
    plan: list,
    answered: set[int],
    *,
    namespace: str,
    token: str,
) -> None:
    if step == Step.END:
        steps.end_ui(view, code_for(view.config, view.status), _redirect_url(view))
        return
    if step == Step.CONSENT:  # a row stored before consent was asked at entry
        choice = steps.consent_ui(view.config)
        if choice is not None:
            give_consent(db, view.participant_id, choice)
            st.session_state["al_just_finished"] = not choice
            st.rerun()
        return
    if step == Step.TRIALS:
        _trials(db, view, plan, answered, namespace=namespace, token=token)
        return
    if step == Step.RESUME_BLOCKED:
        update_participant(db, view.participant_id, flow_state=view.flow_state | {"resume_blocked": True})
        _finish(db, view, ParticipantStatus.EARLY_EXIT)
        return
    if step == Step.FINISH:
        _finish(db, view, ParticipantStatus.COMPLETED)
        return
    {
        Step.DEMOGRAPHICS: steps.demographics_ui,
        Step.INSTRUCTIONS: steps.instructions_ui,
        Step.STRATEGY: steps.strategy_ui,
    }[step](db, view)
    steps.stop_control(db, view)


def _finish(db: Database, view: ParticipantView, status: ParticipantStatus) -> None:
    try:
        finish_participant(db, view.participant_id, status)
    except IncompleteSession as missing:  # a response still on its way: show the wait, look again shortly
        LOG.warning("participant %s not finished yet: %s", view.external_id, missing)
        st.info("Saving your last answers…")
        st.button("Check again", key="finish_retry")
        return
    st.session_state["al_just_finished"] = True
    st.rerun()


def _redirect_url(view: ParticipantView) -> str:
    """Where the end page sends the participant; nowhere for a pilot run (no recruitment site to return
    to)."""
    return "" if view.is_pilot else view.config.completion_url(code_for(view.config, view.status))


def _block_key(block: int) -> str:
    retries = st.session_state.get("al_block_retry", {}).get(block, 0)
    return f"block-{block}" + (f"-retry{retries}" if retries else "")


def _trials(
    db: Database, view: ParticipantView, plan: list, answered: set[int], *, namespace: str, token: str
) -> None:
    restart = st.session_state.get("al_restart_block")
    if restart is None:  # decided once per browser session
        restart = bool(st.session_state["al_returning"]) and view.config.resume_policy == "restart_block"
        st.session_state["al_restart_block"] = restart
    run = block_run(plan, answered, restart_block=restart and not st.session_state.get("al_restarted"))
    if st.session_state.get("al_block_retry", {}).get(run.block, 0) > MAX_BLOCK_RETRIES:
        _stalled_block(db, view, run.block)
        return
    block_key = _block_key(run.block)
    data = block_data(
        run,
        view.config,
        namespace=namespace,
        token=token,
        block_key=block_key,
        answered_count=len(answered),
        total=len(plan),
    )
    result = trial_block(data)
    for name in ("block_done", "early_exit"):
        event = getattr(result, name, None)
        if event:
            _handle_block_event(db, view, name, event)


def _handle_block_event(db: Database, view: ParticipantView, name: str, event: dict[str, Any]) -> None:
    """Store the responses the trigger carries (duplicates of REST-stored ones are ignored), then move on."""
    seen = st.session_state.setdefault("al_seen_triggers", set())
    marker = (name, str(event.get("block_key")), event.get("attempt"))
    if marker in seen:
        return
    seen.add(marker)
    stored = answered_trials(db, view.participant_id)
    for body in event.get("responses") or []:  # normally all stored over REST already: no write at all
        if isinstance(body, dict) and body.get("trial_index") not in stored:
            _store_carried_response(db, view.participant_id, body)
    st.session_state["al_restarted"] = True
    if name == "early_exit":
        finish_participant(db, view.participant_id, ParticipantStatus.EARLY_EXIT)
        st.session_state["al_just_finished"] = True
    else:
        _check_block_complete(db, view, event.get("block"))
    st.rerun()


def _check_block_complete(db: Database, view: ParticipantView, block: object) -> None:
    """After a block: trials still without a stored outcome (e.g. a refused or lost response) are run again,
    at most MAX_BLOCK_RETRIES times; unavailable trials offered again in this session count as run."""
    in_block = {t.trial_index for t in st.session_state["al_plan"] if t.block == block}
    st.session_state["al_offer_again"] = st.session_state.get("al_offer_again", set()) - in_block
    missing = sorted(in_block - _settled_trials(db, view.participant_id))
    if missing:
        retries = st.session_state.setdefault("al_block_retry", {})
        retries[block] = retries.get(block, 0) + 1
        LOG.warning(
            "participant %s: block %s ended with trials %s not stored (attempt %d of %d)",
            view.external_id,
            block,
            missing[:20],
            retries[block],
            MAX_BLOCK_RETRIES + 1,
        )


def _stalled_block(db: Database, view: ParticipantView, block: int) -> None:
    """The block could not store its answers after its re-runs: say so and what to do, instead of running it
    again and again."""
    if not st.session_state.get("al_stall_logged"):
        LOG.error(
            "participant %s: block %s still has unstored trials after %d re-runs; stopped and told the "
            "participant to check the connection and reload",
            view.external_id,
            block,
            MAX_BLOCK_RETRIES,
        )
        st.session_state["al_stall_logged"] = True
    st.header("Your answers could not be saved")
    st.error(
        "Some answers of this block did not reach the server, even after several tries. The answers that "
        "arrived are saved. Please check your internet connection, then reload this page (or press Try "
        "again). If this message comes back, contact the researcher, or stop the study below to receive "
        "the early-exit code."
    )
    if st.button("Try again", type="primary", key="stalled_retry"):
        st.session_state["al_block_retry"][block] = 0
        st.session_state["al_stall_logged"] = False
        st.rerun()
    steps.stop_control(db, view)


def _store_carried_response(db: Database, participant_id: int, body: dict[str, Any]) -> None:
    try:
        record_response(db, participant_id, parse_response(body))
    except (BadRequest, ResponseRejected) as error:
        LOG.warning("carried response refused: %s", error)
