"""Alignment runs: start teacher / pseudo-label / student / evaluation jobs on a study in the background,
watch their progress, ETA and logs, cancel them, and compare finished runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.flash import flash, show_flashes
from app.resources import get_db
from app.results_display import metric_columns
from db.models import RunStatus, utcnow
from db.runs import ACTIVE_STATUSES, list_runs, request_cancel
from study.studies import study_slugs
from workflows.jobs import eta_seconds, launch, read_log
from workflows.pipeline import START_ACTIONS, queue_action


def start_controls() -> None:
    slugs = study_slugs(get_db())
    if not slugs:
        st.info("No studies yet: judgments are needed to align a model.")
        return
    with st.form("start_run"):
        slug = st.selectbox("Study (its non-excluded judgments)", slugs)
        action = st.selectbox("What to run", list(START_ACTIONS))
        submitted = st.form_submit_button("Start in the background")
    if submitted:
        run_id = queue_action(get_db(), action, slug)
        launch(run_id)
        flash(f"Started run {run_id} ({action}). It keeps running if you close or reload this page.")
        st.rerun()


@st.fragment(run_every="2s")
def runs_table() -> None:
    runs = list_runs(get_db())
    if not runs:
        st.info("No runs yet.")
        return
    now = utcnow()
    st.dataframe(pd.DataFrame([_row(run, now) for run in runs]), hide_index=True, width="stretch")
    active = [run for run in runs if run.status in ACTIVE_STATUSES]
    for run in active:
        _active_run(run, now)


def _row(run, now) -> dict:
    eta = eta_seconds(run, now)
    return dict(
        id=run.id,
        kind=run.kind,
        name=run.name,
        status=run.status.value,
        progress=f"{100 * run.progress:.0f}%",
        eta=f"{eta:.0f} s" if eta is not None else "",
        message=run.message,
        parent=run.parent_run_id,
        error=run.error or "",
        **{k: v for k, v in metric_columns(run.metrics).items() if isinstance(v, int | float)},
    )


def _active_run(run, now) -> None:
    with st.expander(
        f"Run {run.id} · {run.kind} · {run.status.value} · {100 * run.progress:.0f}%", expanded=True
    ):
        st.progress(run.progress, text=run.message or run.status.value)
        st.code(read_log(run.id, max_lines=30) or "(no log yet)", language=None)
        if st.button("Cancel", key=f"cancel_{run.id}"):
            request_cancel(get_db(), run.id)
            flash(f"Cancel requested for run {run.id}; it stops at its next progress report.")
            st.rerun(scope="app")


def compare_runs() -> None:
    finished = [run for run in list_runs(get_db()) if run.status == RunStatus.SUCCEEDED and run.metrics]
    if not finished:
        return
    chosen = st.multiselect("Compare finished runs", [f"{r.id} · {r.kind} · {r.name}" for r in finished])
    rows = [
        dict(run=label, **metric_columns(run.metrics))
        for label in chosen
        for run in finished
        if label.startswith(f"{run.id} ·")
    ]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


st.title("Alignment runs")
show_flashes()
start_controls()
st.subheader("Runs")
runs_table()
compare_runs()
