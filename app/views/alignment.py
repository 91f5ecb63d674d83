"""Alignment runs: start the full loop, a teacher, pseudo-labels or a student on a study in the background
(a preset and the main settings in a form, anything else as JSON), watch their progress, ETA and logs,
cancel them, see the configuration and caveats of a finished run and re-run it with changes, and compare
finished runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import streamlit as st

from app.cli import one_line
from app.flash import flash, show_flashes
from app.resources import get_db
from app.results_display import caveat_lines, metric_columns
from common.config import settings_table
from db.models import RunStatus, utcnow
from db.runs import ACTIVE_STATUSES, get_run, list_runs, request_cancel
from study.studies import study_slugs
from workflows.jobs import eta_seconds, launch, read_log
from workflows.pipeline import PRESETS, START_ACTIONS, MainSettings, action_overrides, queue_action

STARTABLE = set(START_ACTIONS.values())
PRESET_HELP = "; ".join(f"{name}: {settings or 'the defaults'}" for name, settings in PRESETS.items())


def start_controls() -> None:
    slugs = study_slugs(get_db())
    if not slugs:
        st.info("No studies yet: judgments are needed to align a model.")
        return
    with st.form("start_run"):
        slug = st.selectbox("Study (its non-excluded judgments)", slugs)
        action = st.selectbox("What to run", list(START_ACTIONS))
        preset = st.radio(
            "Preset", list(PRESETS), index=list(PRESETS).index("standard"), horizontal=True, help=PRESET_HELP
        )
        backbone = st.text_input("Backbone (the whole loop: teacher features, pseudo-labels, students)", "")
        left, middle, right = st.columns(3)
        epochs = left.number_input("Student epochs (0 = preset)", min_value=0.0, value=0.0, step=1.0)
        image_size = middle.number_input("Student image size, px (0 = preset)", 0, 512, 0, step=32)
        n_triplets = right.number_input("Pseudo-labelled triplets (0 = from the pool)", 0, value=0, step=1000)
        split_by = st.selectbox("Held-out judgments chosen by", ["triplet", "subject", "image"])
        left, right = st.columns(2)
        input_run = left.number_input(
            "Input run (pseudo-labels: a teacher run; student: a pseudo-label run)", 0, value=0
        )
        space = right.selectbox("Student label space", ["aligned", "untransformed"])
        extra = st.text_area(
            "More settings (JSON, merged on top)", "", placeholder='{"teacher": {"reg_weight": 0.1}}'
        )
        submitted = st.form_submit_button("Start in the background")
    if submitted:
        main = MainSettings(
            preset,
            backbone.strip(),
            float(epochs),
            int(image_size),
            int(n_triplets),
            split_by,
            int(input_run),
            space,
            {},
        )
        _start(slug, START_ACTIONS[action], main, extra)


def _start(slug: str, kind: str, main: MainSettings, extra: str) -> None:
    """Queue (after its input checks) and launch a run; a refusal is shown as one line, nothing starts."""
    _queue_and_launch(
        lambda: queue_action(
            get_db(),
            kind,
            slug,
            action_overrides(kind, replace(main, extra=settings_table(extra) if extra.strip() else {})),
        ),
        f"({kind}). It keeps running if you close or reload this page.",
    )


def _queue_and_launch(queue, started: str) -> None:
    """Queue a run (its input checks run first) and launch it; a refusal is shown as one line and nothing
    starts. `started` ends the confirmation "Started run N ..."."""
    try:
        run_id = queue()
    except (ValueError, LookupError) as error:
        st.error(f"Not started: {one_line(error)}")
        return
    launch(run_id)
    flash(f"Started run {run_id} {started}")
    st.rerun()


def finished_run_controls() -> None:
    """A finished run: the configuration it used, its caveats, and a re-run with changed settings."""
    runs = [r for r in list_runs(get_db()) if r.status not in ACTIVE_STATUSES and r.kind in STARTABLE]
    if not runs:
        return
    st.subheader("A finished run: its configuration, caveats, re-run")
    by_id = {r.id: r for r in runs}
    chosen = st.selectbox(
        "Finished run",
        list(by_id),
        format_func=lambda i: f"{i} · {by_id[i].kind} · {by_id[i].status.value} · {by_id[i].name}",
    )
    run = by_id[chosen]
    study = run.config.get("study", "")
    st.caption(f"The configuration run {run.id} used (study {study!r}):")
    st.json(run.config, expanded=False)
    labels_run = run.metrics.get("labels_run") if run.kind == "align" else None
    if labels_run:
        settings = get_run(get_db(), labels_run).metrics.get("settings", {})
        st.caption(f"Pseudo-label settings used (derived from the pool unless given): {settings}")
    for line in caveat_lines(run.metrics):
        st.warning(line)
    editable = {k: v for k, v in run.config.items() if k != "study"}
    with st.form(f"rerun_{run.id}"):
        text = st.text_area(
            "Settings for a re-run (JSON: change what you like)", json.dumps(editable, indent=2)
        )
        again = st.form_submit_button("Re-run with these settings")
    if again:
        _rerun(run, text)


def _rerun(run, text: str) -> None:
    _queue_and_launch(
        lambda: queue_action(
            get_db(), run.kind, run.config["study"], settings_table(text) if text.strip() else {}
        ),
        f"(run {run.id} again with the settings shown).",
    )


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
        caveats=len(run.metrics.get("caveats", [])) if "caveats" in run.metrics else None,
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
finished_run_controls()
compare_runs()
