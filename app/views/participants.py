"""Participants & data: per-participant QC with exclusion decisions, human agreement per level,
response-time distributions, and the three exports."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app.flash import flash, show_flashes
from app.resources import get_db
from study.export import FORMATS, export_study
from study.judgments import load_judgments, load_responses
from study.monitoring import study_progress
from study.qc import participant_qc, set_exclusion
from study.reliability import levels_noise_ceiling, things_modal_consistency

QC_SHOWN = [
    "participant_id",
    "subject",
    "status",
    "is_simulated",
    "excluded",
    "exclusion_reason",
    "flags",
    "suggest_exclude",
    "n_answered",
    "n_timeouts",
    "catch_accuracy",
    "fast_windows",
    "share_left",
    "share_middle",
    "share_right",
    "median_rt_ms",
    "early_responses",
    "fullscreen_exits",
    "blurs",
]
EXPORT_SUFFIX = {
    "things": "things.csv",
    "jspsych": "jspsych.csv",
    "parquet": "trials.parquet",
    "anchor": "anchor.csv",
}


def qc_table(slug: str) -> None:
    qc = participant_qc(get_db(), slug)
    if qc.empty:
        st.info("No participants yet.")
        return
    st.dataframe(qc[QC_SHOWN], hide_index=True, width="stretch")
    exclusion_form(qc)


def exclusion_form(qc: pd.DataFrame) -> None:
    """Exclusion is an analysis decision with a reason, recorded separately from payment."""
    labels = {
        f"{row.participant_id} · {row.subject}" + (" · flagged: " + row.flags if row.flags else ""): row
        for row in qc.itertuples(index=False)
    }
    with st.form("exclusion"):
        choice = st.selectbox("Participant", list(labels))
        excluded = st.checkbox("Exclude from analyses", value=bool(labels[choice].excluded))
        reason = st.text_input("Reason", value=labels[choice].exclusion_reason or labels[choice].flags or "")
        submitted = st.form_submit_button("Save decision")
    if submitted:
        try:
            set_exclusion(get_db(), int(labels[choice].participant_id), excluded, reason)
        except ValueError as error:
            st.error(str(error))
            return
        flash(f"Participant {labels[choice].participant_id}: {'excluded' if excluded else 'included'}.")
        st.rerun()


def agreement_tables(slug: str) -> None:
    judgments = load_judgments(get_db(), slug)
    if judgments.empty:
        st.info("No judgments yet.")
        return
    left, right = st.columns(2)
    left.markdown("**Levels leave-one-out majority** (participants predicting each other; tie = ½)")
    left.dataframe(levels_noise_ceiling(judgments), hide_index=True)
    right.markdown("**THINGS modal consistency** (repeated triplets)")
    right.dataframe(things_modal_consistency(judgments), hide_index=True)


def rt_distribution(slug: str) -> None:
    responses = load_responses(get_db(), slug)
    answered = (
        responses[~responses["timed_out"] & ~responses["unavailable"]] if not responses.empty else responses
    )
    if answered.empty:
        return
    figure = px.histogram(
        answered,
        x="rt_ms",
        color=answered["level"].fillna(answered["kind"]),
        nbins=60,
        barmode="overlay",
        opacity=0.6,
        labels={"rt_ms": "response time (ms)", "color": ""},
    )
    st.plotly_chart(figure, width="stretch")


def export_buttons(slug: str) -> None:
    include_excluded = st.checkbox("Include excluded participants", value=False)
    raw_ids = st.checkbox("Raw participant ids (default: pseudonymised with the study's salt)", value=False)
    files = {fmt: _export_bytes(slug, fmt, include_excluded, raw_ids) for fmt in FORMATS}
    shown = [
        fmt for fmt in FORMATS if fmt != "anchor" or files[fmt][1]
    ]  # anchor: only studies that have them
    for column, fmt in zip(st.columns(len(shown)), shown, strict=True):
        column.download_button(
            f"Download {fmt}", files[fmt][0], file_name=f"{slug}-{EXPORT_SUFFIX[fmt]}", key=f"dl_{fmt}"
        )


def _export_bytes(slug: str, fmt: str, include_excluded: bool, raw_ids: bool) -> tuple[bytes, int]:
    """The export file's bytes and its number of rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / EXPORT_SUFFIX[fmt]
        summary = export_study(get_db(), slug, fmt, path, include_excluded=include_excluded, raw_ids=raw_ids)
        return path.read_bytes(), summary.n_rows


st.title("Participants & data")
show_flashes()
slugs = study_progress(get_db())["slug"].tolist()
if not slugs:
    st.info("No studies yet.")
    st.stop()
slug = st.selectbox("Study", slugs)
tabs = st.tabs(["Quality control", "Agreement", "Response times", "Export"])
with tabs[0]:
    qc_table(slug)
with tabs[1]:
    agreement_tables(slug)
with tabs[2]:
    rt_distribution(slug)
with tabs[3]:
    export_buttons(slug)
