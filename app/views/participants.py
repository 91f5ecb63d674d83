"""Participants & data: who is who (Prolific ids, status, times, QC), exclusion decisions, payment decisions
with Prolific's bulk files, human agreement per level, response-time distributions, and the exports (built
only when asked for).

Only the open tab's section runs (tabs rerun on change): a rerun never reads data for a tab nobody looks at.
QC is cached per participant (study.qc; Payments reads no answers); the agreement tables and the
response-time histogram come from the study's answer summary (study.answer_summary), which a render
updates with the few participants who answered since, or a background thread with many
(workflows.summary_refresh)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.flash import flash, show_flashes
from app.resources import get_db
from app.results_display import LIVE_AGREEMENT_NOT_HELD_OUT, live_agreement_display
from db.models import ParticipantStatus
from db.settings import database_url
from study.answer_summary import AnswerSummary, excluded_participants, rt_counts
from study.answer_summary import agreement_tables as agreement_from_summary
from study.export import csv_bytes, export_study
from study.payments import (
    PAYMENT_STATUSES,
    PROLIFIC_SOURCE,
    approve_completed,
    payment_tables,
    set_bonus,
    set_payment,
)
from study.qc import QC_FLAGS, participant_facts, participant_page, participant_qc, set_exclusion
from study.studies import study_slugs
from workflows.live_agreement import live_agreement, study_models
from workflows.summary_refresh import fresh_summary

TABLE_COLUMNS = {  # participant_qc column -> heading on the page
    "participant_id": "id",
    "external_id": "PROLIFIC_PID",
    "external_study_id": "STUDY_ID",
    "external_session_id": "SESSION_ID",
    "status": "status",
    "is_simulated": "simulated",
    "started_at": "started",
    "finished_at": "finished",
    "duration_min": "duration (min)",
    "list_index": "list",
    "config_version": "config version",
    "flags": "QC flags",
    "suggest_exclude": "QC suggests exclusion",
    "excluded": "excluded",
    "exclusion_reason": "exclusion reason",
    "payment_status": "payment",
    "payment_reason": "payment reason",
    "bonus": "bonus",
    "n_answered": "answered",
    "n_timeouts": "timeouts",
    "n_unavailable": "unavailable",
    "catch_accuracy": "catch accuracy",
    "fast_windows": "fast windows",
    "share_left": "share left",
    "share_middle": "share middle",
    "share_right": "share right",
    "median_rt_ms": "median RT (ms)",
    "early_responses": "early responses",
    "fullscreen_exits": "fullscreen exits",
    "blurs": "blurs",
}
EXPORTS = {  # label -> (format, file suffix)
    "THINGS triplets": ("things", "things.csv"),
    "jsPsych-like trials": ("jspsych", "jspsych.csv"),
    "trials (Parquet)": ("parquet", "trials.parquet"),
    "participants": ("participants", "participants.csv"),
    "participants (Parquet)": ("participants", "participants.parquet"),
    "interaction events": ("events", "events.csv"),
    "anchor judgments": ("anchor", "anchor.csv"),
}


PAGE_ROWS = 100


def participants_section(slug: str) -> None:
    """The table a page of `PAGE_ROWS` participants at a time (status and simulated filters, the count and
    the page in SQL; QC measured for the page's participants only), so a render costs the same at any
    number of participants. The QC filters need every participant's measures: with one of them on, the
    whole study is measured (from the per-participant QC cache) and the matching rows paged."""
    columns = st.columns([2, 2, 1, 1])
    statuses = columns[0].multiselect(
        "Status", [status.value for status in ParticipantStatus], key="filter_status"
    )
    flags = columns[1].multiselect("QC flag (any of)", QC_FLAGS, key="filter_flags")
    suggested = columns[2].checkbox("QC suggests exclusion", key="filter_suggested")
    hide_simulated = columns[3].checkbox("Hide simulated", key="filter_simulated")
    db = get_db()
    if flags or suggested:
        everyone, _ = participant_page(
            db, slug, 0, per_page=10**9, statuses=statuses, hide_simulated=hide_simulated
        )
        matching = with_qc_flags(participant_qc(db, slug, participant_ids=everyone), flags, suggested)
        total = len(matching)
        page = _page_number(total)
        qc = matching.iloc[page * PAGE_ROWS : (page + 1) * PAGE_ROWS]
    else:
        total = participant_page(db, slug, 0, per_page=0, statuses=statuses, hide_simulated=hide_simulated)[1]
        page = _page_number(total)
        ids, _ = participant_page(db, slug, page, PAGE_ROWS, statuses=statuses, hide_simulated=hide_simulated)
        qc = participant_qc(db, slug, participant_ids=ids)
    if total == 0:
        st.info(
            "No participants match."
            if statuses or flags or suggested or hide_simulated
            else "No participants yet."
        )
        return
    shown = _with_durations(qc)
    st.dataframe(shown[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS), hide_index=True, width="stretch")
    first = page * PAGE_ROWS
    st.caption(
        f"Participants {first + 1}–{first + len(shown)} of {total}. Click a column heading to sort this page."
    )
    exclusion_form(qc)


def _page_number(total: int) -> int:
    """The page picked above the table (from 0), within the pages `total` rows fill."""
    pages = max(1, -(-total // PAGE_ROWS))
    if pages == 1:
        return 0
    return int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="participants_page")) - 1


def with_qc_flags(table: pd.DataFrame, flags: list[str], suggested: bool) -> pd.DataFrame:
    """The rows with any of the QC `flags` (all when none), only those QC suggests excluding when asked."""
    keep = pd.Series(True, index=table.index)
    if flags:
        keep &= table["flags"].map(lambda value: bool(set(value.split(", ")) & set(flags)))
    if suggested:
        keep &= table["suggest_exclude"]
    return table[keep]


def _with_durations(qc: pd.DataFrame) -> pd.DataFrame:
    table = qc.copy()
    started = pd.to_datetime(table["started_at"], utc=True)
    table["duration_min"] = (
        (pd.to_datetime(table["finished_at"], utc=True) - started).dt.total_seconds() / 60
    ).round(1)
    table["bonus"] = table["bonus_cents"].astype("Float64") / 100
    return table


def _label(row) -> str:
    return f"{row.participant_id} · {row.external_id}" + (" · simulated" if row.is_simulated else "")


def exclusion_form(qc: pd.DataFrame) -> None:
    """Exclusion is an analysis decision with a reason, recorded separately from payment. The form's widgets
    are keyed by the participant and their stored decision, so they always show the selected participant's
    own state (never the previous selection's), and show it afresh after any change."""
    st.markdown("**Exclusion decision**")
    rows = {_label(row): row for row in qc.itertuples(index=False)}
    row = rows[st.selectbox("Participant", list(rows), key="exclusion_participant")]
    if row.flags:
        st.caption(f"QC flags: {row.flags}" + (" (suggests exclusion)" if row.suggest_exclude else ""))
    stored_reason = row.exclusion_reason or ""
    key = f"{row.participant_id}-{row.excluded}-{stored_reason}"
    with st.form(f"exclusion-{key}"):
        excluded = st.checkbox("Exclude from analyses", value=bool(row.excluded), key=f"excluded-{key}")
        reason = st.text_input("Reason", value=stored_reason, key=f"reason-{key}")
        submitted = st.form_submit_button("Save decision")
    if submitted:
        try:
            set_exclusion(get_db(), int(row.participant_id), excluded, reason)
        except (ValueError, LookupError) as error:
            st.error(str(error))
            return
        flash(
            f"Participant {row.participant_id} ({row.external_id}): {'excluded' if excluded else 'included'}."
        )
        st.rerun()


def payments_section(slug: str) -> None:
    """Approve / reject with a reason / bonus per Prolific participant, and the files for Prolific's bulk
    approve and bulk bonus tools."""
    people = participant_facts(get_db(), slug)
    payable = people[(people["source"] == PROLIFIC_SOURCE) & ~people["is_simulated"]]
    if payable.empty:
        st.info("No Prolific participants (entered with a PROLIFIC_PID) yet: nothing to pay.")
        return
    counts = payable["payment_status"].value_counts()
    st.caption(" · ".join(f"{status}: {int(counts.get(status, 0))}" for status in PAYMENT_STATUSES))
    if st.button("Approve all completed submissions still pending"):
        flash(f"Approved {approve_completed(get_db(), slug)} submission(s).")
        st.rerun()
    payment_form(payable)
    payment_downloads(slug)


def payment_form(payable: pd.DataFrame) -> None:
    rows = {_label(row) + f" · {row.status}": row for row in payable.itertuples(index=False)}
    row = rows[st.selectbox("Participant", list(rows), key="payment_participant")]
    bonus = "" if pd.isna(row.bonus_cents) else f"{int(row.bonus_cents) / 100:.2f}"
    key = f"{row.participant_id}-{row.payment_status}-{row.payment_reason or ''}-{bonus}"
    with st.form(f"payment-{key}"):
        status = st.radio(
            "Decision",
            PAYMENT_STATUSES,
            index=PAYMENT_STATUSES.index(row.payment_status),
            horizontal=True,
            key=f"payment-status-{key}",
        )
        reason = st.text_input("Reason (required to reject)", value=row.payment_reason or "", key=f"pr-{key}")
        amount = st.text_input("Bonus (e.g. 1.50; empty = none)", value=bonus, key=f"bonus-{key}")
        submitted = st.form_submit_button("Save payment decision")
    if submitted:
        try:
            set_payment(get_db(), int(row.participant_id), status, reason)
            set_bonus(get_db(), int(row.participant_id), amount)
        except (ValueError, LookupError) as error:
            st.error(str(error))
            return
        flash(
            f"Participant {row.external_id}: {status}" + (f", bonus {amount}" if amount.strip() else "") + "."
        )
        st.rerun()


def payment_downloads(slug: str) -> None:
    tables = payment_tables(get_db(), slug)
    files = {
        "approve.csv": (csv_bytes(tables["approve"], header=False), len(tables["approve"])),
        "reject.csv": (csv_bytes(tables["reject"]), len(tables["reject"])),
        "bonus.csv": (csv_bytes(tables["bonus"], header=False), len(tables["bonus"])),
    }
    st.markdown(
        "Files for Prolific: paste `approve.csv` into *Bulk approve* and `bonus.csv` into *Bulk bonus "
        "payment*; `reject.csv` lists the rejections with their reasons."
    )
    for column, (name, (data, n)) in zip(st.columns(len(files)), files.items(), strict=True):
        column.download_button(f"{name} ({n})", data, file_name=f"{slug}-{name}", key=f"pay_{name}")


@st.fragment(run_every="10s")
def live_model_agreement(slug: str) -> None:
    """Refreshes itself while the tab is open; only answers that arrived since the last refresh are scored
    (workflows.live_agreement)."""
    st.markdown(
        "**Model–human agreement, live** (share of answers where the model picks the participants' "
        "odd one out)"
    )
    if not study_models(get_db(), slug):
        st.info(
            "No model features for this study yet: start a features run (or the closed loop) on the "
            "Alignment page; the base model's agreement then appears here and follows the answers as "
            "they arrive."
        )
        return
    try:
        table = live_agreement(get_db(), slug)
    except (ValueError, LookupError, FileNotFoundError) as error:
        st.warning(f"The model agreement cannot be computed: {error}")
        return
    if table.empty:
        st.info("No answers yet.")
        return
    st.dataframe(live_agreement_display(table), hide_index=True, width="stretch")
    st.caption(
        "Dot similarity, ties count wrong; each distinct triplet counts once; 95% bootstrap CIs over "
        "triplets. Human ceiling: Levels leave-one-out majority (triplets with at least 4 answers). "
        "Excluded participants are left out."
    )
    if any(column.startswith("teacher") for column in table.columns):
        st.caption(LIVE_AGREEMENT_NOT_HELD_OUT)


def agreement_tables(slug: str) -> None:
    live_model_agreement(slug)
    human_agreement_panel(slug)


@st.fragment(run_every="5s")
def human_agreement_panel(slug: str) -> None:
    """The human agreement tables from the study's answer summary (study.answer_summary): a render reads
    only participants with new answers; while a background thread reads many, the last finished numbers
    are shown with its progress, and the panel refreshes itself."""
    summary, computing = summary_with_progress(slug)
    tables = (
        None if summary is None else human_agreement(database_url(), slug, _version(slug, summary), summary)
    )
    if tables is None:
        if not computing:
            st.info("No judgments yet.")
        return
    ceiling, modal = tables
    left, right = st.columns(2)
    left.markdown("**Levels leave-one-out majority** (participants predicting each other; tie = ½)")
    left.dataframe(ceiling, hide_index=True)
    right.markdown("**THINGS modal consistency** (repeated triplets)")
    right.dataframe(modal, hide_index=True)


def summary_with_progress(slug: str) -> tuple[AnswerSummary | None, bool]:
    """(the freshest summary there is, whether a background update is still reading answers: then said
    on the page with its progress)."""
    summary, refresh = fresh_summary(get_db(), slug)
    if refresh is not None and refresh.error:
        st.error(f"Summarising the answers failed: {refresh.error}")
    elif refresh is not None:
        shown = "the last finished numbers below" if summary is not None else "the numbers when done"
        st.info(
            f"Computing… ({refresh.done} of {refresh.total} participants read); showing {shown}. "
            "This panel refreshes itself."
        )
    return summary, refresh is not None and refresh.running


def _version(slug: str, summary: AnswerSummary) -> tuple:
    """What the tables depend on: the answers read (highest response id, last seen) and the exclusions."""
    return (summary.last_response_id, summary.last_seen, excluded_participants(get_db(), slug))


@st.cache_data(max_entries=8, show_spinner=False, hash_funcs={AnswerSummary: lambda _: None})
def human_agreement(
    url: str, slug: str, version: tuple, summary: AnswerSummary
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both agreement tables, computed once per study and `version` (the summary is not hashed: `version`
    says which it is)."""
    return agreement_from_summary(summary, version[2])


@st.fragment(run_every="5s")
def rt_distribution(slug: str) -> None:
    summary, computing = summary_with_progress(slug)
    counts = pd.DataFrame() if summary is None else rt_counts(summary)
    if counts.empty:
        if not computing:
            st.info("No answered trials yet.")
        return
    figure = px.bar(
        counts,
        x="rt_ms",
        y="n",
        color="group",
        barmode="overlay",
        opacity=0.6,
        labels={"rt_ms": "response time (ms, 100 ms bins)", "n": "trials", "group": ""},
    )
    st.plotly_chart(figure, width="stretch")


def export_section(slug: str) -> None:
    """Files are built when "Prepare export files" is clicked, never on a rerun; they stay offered until
    the study or the options change."""
    include_excluded = st.checkbox("Include excluded participants", value=False)
    raw_ids = st.checkbox("Raw participant ids (default: pseudonymised with the study's salt)", value=False)
    options = (slug, include_excluded, raw_ids)
    if st.button("Prepare export files"):
        st.session_state["export_files"] = (options, _export_files(slug, include_excluded, raw_ids))
    prepared = st.session_state.get("export_files")
    if prepared is None or prepared[0] != options:
        st.caption("Choose the options, then prepare the files.")
        return
    files = prepared[1]
    for column, (label, (name, data)) in zip(st.columns(len(files)), files.items(), strict=True):
        column.download_button(f"Download {label}", data, file_name=f"{slug}-{name}", key=f"dl_{name}")


def _export_files(slug: str, include_excluded: bool, raw_ids: bool) -> dict[str, tuple[str, bytes]]:
    """label -> (file name, bytes) of every export; anchor judgments only for studies that have them."""
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (fmt, name) in EXPORTS.items():
            path = Path(tmp) / name
            summary = export_study(
                get_db(), slug, fmt, path, include_excluded=include_excluded, raw_ids=raw_ids
            )
            if fmt != "anchor" or summary.n_rows:
                files[label] = (name, path.read_bytes())
    return files


st.title("Participants & data")
show_flashes()
slugs = study_slugs(get_db())
if not slugs:
    st.info("No studies yet.")
    st.stop()
slug = st.selectbox("Study", slugs)
SECTIONS = {
    "Participants": participants_section,
    "Payments": payments_section,
    "Agreement": agreement_tables,
    "Response times": rt_distribution,
    "Export": export_section,
}
for tab, section in zip(
    st.tabs(list(SECTIONS), key="data_tab", on_change="rerun"), SECTIONS.values(), strict=True
):
    if tab.open:
        with tab:
            section(slug)
