"""Studies: live progress of every study, create a study from a stimulus set, open/pause/close it,
generate its participant link (Prolific template and codes), edit its config (each edit a new version), and
follow an adaptive design's refits (the teacher's held-out accuracy against the number of answers)."""

from __future__ import annotations

import re

import plotly.express as px
import streamlit as st

from app.flash import flash, show_flashes
from app.resources import get_db
from study.config import StudyConfig
from study.config_versions import config_versions, edit_study_config
from study.design import (
    ADAPTIVE_STRATEGIES,
    DESIGN_MODES,
    DesignConfig,
    create_study_from_design,
    is_adaptive,
)
from study.monitoring import study_progress
from study.pilot import pilot_link, pilot_runs, pilot_token
from study.simulate import simulate_participants
from study.stimuli import list_stimulus_sets
from study.studies import STUDY_STATUSES, load_study, set_study_status, study_config, study_slugs
from workflows.adaptive import refit_curve

PAGE_BREAK = "\n\n---\n\n"  # between instruction pages in the edit form
TIMING_FIELDS = {  # StudyConfig field -> label; whole numbers
    "response_window_ms": "Response window (ms, 0 = none)",
    "min_valid_rt_ms": "Minimum valid RT (ms)",
    "iti_ms": "Fixation between trials (ms)",
    "break_max_seconds": "Longest break (s)",
}
CODE_FIELDS = {
    "completion_code": "Completion code",
    "early_exit_code": "Early-exit code",
    "no_consent_code": "No-consent code",
    "completion_url_template": "Completion URL ({code} is replaced; empty = show the code only)",
}
PROLIFIC_PARAMS = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"


@st.fragment(run_every="3s")
def progress_table() -> None:
    """Refreshes itself every few seconds, so arriving participants show up without a click."""
    table = study_progress(get_db())
    if table.empty:
        st.info("No studies yet. Create one below from a stimulus set.")
    else:
        st.dataframe(table, hide_index=True, width="stretch")


def status_controls(slugs: list[str]) -> None:
    slug = st.selectbox("Study", slugs, key="status_study")
    statuses = list(STUDY_STATUSES)
    current = statuses.index(load_study(get_db(), slug).status.value)  # not "draft" for an open study
    choice = st.radio("Status", statuses, index=current, horizontal=True, key="status_choice")
    if st.button("Set status"):
        set_study_status(get_db(), slug, choice)
        flash(f"{slug} is now {choice}.")
        st.rerun()


def link_generator(slugs: list[str]) -> None:
    slug = st.selectbox("Study", slugs, key="link_study")
    base = st.text_input("Public address of this app", value="http://localhost:8501", key="link_base")
    st.markdown("**Prolific study URL** (Prolific fills in the three ids):")
    st.code(f"{base.rstrip('/')}/?study={slug}&{PROLIFIC_PARAMS}", language=None)
    st.markdown("**Lab / anonymous link** (an anonymous id is generated and kept in the address):")
    st.code(f"{base.rstrip('/')}/?study={slug}", language=None)
    config = study_config(load_study(get_db(), slug))  # the codes this study gives, not the defaults
    st.caption(
        f"Codes (set per study in its config): completion `{config.completion_code}`, early exit "
        f"`{config.early_exit_code}`, no consent `{config.no_consent_code}`."
    )


def edit_form(slugs: list[str]) -> None:
    """Consent, instructions, codes, completion URL, timing and target of an existing study, checked as at
    creation. Saving stores a new config version: participants who already consented keep theirs. The
    form is keyed by study and version, so it shows the chosen study's current settings."""
    slug = st.selectbox("Study", slugs, key="edit_study")
    study = load_study(get_db(), slug)
    config = study_config(study)
    key = f"{slug}-v{study.config_version}"
    st.caption(f"Current config: version {study.config_version}.")
    with st.form(f"edit-{key}"):
        title = st.text_input("Title", value=config.title, key=f"title-{key}")
        consent = st.text_area("Consent text", value=config.consent_text, key=f"consent-{key}")
        pages = st.text_area(
            "Instructions (pages separated by a line with ---; [[example: obvious]] shows an example)",
            value=PAGE_BREAK.join(config.instructions),
            height=200,
            key=f"instructions-{key}",
        )
        codes = {
            name: st.text_input(label, value=getattr(config, name), key=f"{name}-{key}")
            for name, label in CODE_FIELDS.items()
        }
        columns = st.columns(len(TIMING_FIELDS) + 1)
        timing = {
            name: column.number_input(label, 0, 3_600_000, getattr(config, name), key=f"{name}-{key}")
            for column, (name, label) in zip(columns, TIMING_FIELDS.items(), strict=False)
        }
        target = columns[-1].number_input(
            "Target (0 = none)", 0, 1_000_000, study.target_participants or 0, key=f"target-{key}"
        )
        note = st.text_input("Note (what changed and why)", key=f"note-{key}")
        submitted = st.form_submit_button("Save as new version")
    if submitted:
        changes = {
            "title": title,
            "consent_text": consent,
            "instructions": _pages(pages),
            **{name: value.strip() for name, value in codes.items()},
            **{name: int(value) for name, value in timing.items()},
        }
        _save_edit(slug, changes, int(target) or None, note)
    with st.expander("Config versions"):
        st.dataframe(config_versions(get_db(), slug), hide_index=True, width="stretch")


def _pages(text: str) -> list[str]:
    return [page.strip() for page in re.split(r"\n\s*---+\s*\n", text) if page.strip()]


def _save_edit(slug: str, changes: dict, target: int | None, note: str) -> None:
    try:
        edit = edit_study_config(get_db(), slug, changes, target_participants=target, note=note)
    except (ValueError, LookupError) as error:
        st.error(str(error))
        return
    if edit.changed:
        changed = ", ".join(edit.changed)
        flash(f"{slug}: config version {edit.version} saved ({changed}). New participants get it.")
    else:
        flash(f"{slug}: nothing changed; version {edit.version} stays current.", "info")
    st.rerun()


def pilot_panel(slugs: list[str]) -> None:
    """The researcher's preview link (the real flow, stored as pilot) and the study's pilot runs so far."""
    slug = st.selectbox("Study", slugs, index=None, placeholder="Choose a study", key="pilot_study")
    if slug is None:
        return
    base = st.session_state.get("link_base") or "http://localhost:8501"
    st.code(pilot_link(base, slug, pilot_token(get_db(), slug)), language=None)
    st.caption(
        "Works for draft studies too. Pilot runs take no list slot, count toward no target and are left out "
        "of QC, noise ceilings, exports, payments and alignment. Do not share this link with participants."
    )
    runs = pilot_runs(get_db(), slug)
    if not runs.empty:
        st.dataframe(runs, hide_index=True, width="stretch")


def simulate_form(slugs: list[str]) -> None:
    """Synthetic participants through the real recording path, always labelled simulated (demos, testing);
    they take no list slot and count toward no target. No study is preselected."""
    with st.form("simulate"):
        slug = st.selectbox("Study", slugs, index=None, placeholder="Choose a study", key="simulate_study")
        columns = st.columns(2)
        n = columns[0].number_input("Simulated participants", 1, 500, 5)
        careless = columns[1].number_input("Share careless", 0.0, 1.0, 0.1, step=0.05)
        submitted = st.form_submit_button("Run simulated participants")
    if submitted and slug is None:
        st.error("Choose the study the simulated participants should take part in.")
        return
    if submitted:
        try:
            with st.spinner("Simulated participants are answering..."):
                summary = simulate_participants(
                    get_db(), slug, int(n), careless_share=float(careless), seed=0
                )
        except (ValueError, LookupError) as error:
            st.error(str(error))
            return
        flash(
            f"{len(summary.participant_ids)} simulated participants ({len(summary.careless_ids)} careless) "
            f"gave {summary.n_responses} responses to {slug}."
        )
        st.rerun()


def create_form() -> None:
    sets = {s.name: s for s in list_stimulus_sets(get_db())}
    if not sets:
        st.info("Import a stimulus set first (Stimuli page).")
        return
    with st.form("create_study"):
        set_name = st.selectbox("Stimulus set", list(sets))
        slug = st.text_input("Slug (used in the link)", placeholder="my-study")
        title = st.text_input("Title", value="Odd one out")
        columns = st.columns(4)
        n_lists = columns[0].number_input("Lists", 1, 500, 10)
        per_level = columns[1].number_input("Triplets per level", 1, 500, 20)
        n_blocks = columns[2].number_input("Blocks", 1, 20, 3)
        catch = columns[3].number_input("Catch per block", 0, 20, 2)
        target = st.number_input("Target participants (0 = no target)", 0, 100_000, 0)
        mode = st.radio(
            "Design mode",
            DESIGN_MODES,
            horizontal=True,
            help="fixed: every list generated now. adaptive: the first lists now, later ones chosen while "
            "the study runs by the study's latest teacher, refitted in the background as answers arrive.",
        )
        with st.expander("Adaptive design settings (used when the mode is adaptive)"):
            adaptive = adaptive_settings()
        submitted = st.form_submit_button("Create study")
    if submitted:
        try:
            design = DesignConfig(
                n_lists=int(n_lists),
                n_between_class=int(per_level),
                n_within_class=int(per_level),
                n_class_border=int(per_level),
                n_blocks=int(n_blocks),
                catch_per_block=int(catch),
                mode=mode,
                **(adaptive if mode == "adaptive" else {}),
            )
        except ValueError as error:
            st.error(str(error))
            return
        _create(sets[set_name].id, slug.strip(), title, design, int(target) or None)


def adaptive_settings() -> dict:
    """The adaptive design's own fields (DesignConfig), defaults as documented there."""
    defaults = DesignConfig()
    columns = st.columns(3)
    settings = {
        "strategy": columns[0].selectbox(
            "Strategy",
            ADAPTIVE_STRATEGIES,
            index=ADAPTIVE_STRATEGIES.index(defaults.strategy),
            help="uncertainty: the teacher's predictive entropy; disagreement: teacher vs raw backbone",
        ),
        "random_share": columns[1].number_input(
            "Random share", 0.0, 1.0, defaults.random_share, step=0.05, help="kept for unbiased evaluation"
        ),
        "pool_per_level": columns[2].number_input(
            "Candidates per level", 1, 100_000, defaults.pool_per_level
        ),
        "refit_every": columns[0].number_input("Refit every N answers", 1, 1_000_000, defaults.refit_every),
        "refit_minutes": columns[1].number_input(
            "... or every N minutes (0 = off)", 0.0, 10_000.0, defaults.refit_minutes, step=5.0
        ),
        "lists_ahead": columns[2].number_input("Lists kept ready", 1, 100, defaults.lists_ahead),
    }
    whole = ("pool_per_level", "refit_every", "lists_ahead")
    return {name: int(value) if name in whole else value for name, value in settings.items()}


def adaptive_design_panel(slugs: list[str]) -> None:
    """An adaptive study's refits: the teacher's held-out accuracy against the answers it was fitted on, on
    the randomly drawn triplets (unbiased) and on the ones it chose itself (the hard cases)."""
    adaptive = [slug for slug in slugs if is_adaptive(load_study(get_db(), slug).config.get("extra", {}))]
    if not adaptive:
        st.caption("No adaptive study yet: choose design mode 'adaptive' when creating one.")
        return
    slug = st.selectbox("Adaptive study", adaptive, key="adaptive_study")
    curve = refit_curve(get_db(), slug)
    if curve.empty:
        st.info(
            "No refit yet: the teacher is refitted in the background every N answers (or minutes) set at "
            "creation; each refit's held-out accuracy appears here."
        )
        return
    figure = px.line(
        curve,
        x="n_answers",
        y="accuracy",
        color="group",
        markers=True,
        hover_data=["run", "n", "correct"],
        labels={"n_answers": "answers the teacher was fitted on", "accuracy": "held-out accuracy"},
    )
    st.plotly_chart(figure, key="adaptive_curve")
    st.caption(
        "random share: held-out answers to triplets drawn blind to any teacher (an unbiased estimate); "
        "adaptive: held-out answers to triplets a teacher chose because it was unsure of them."
    )
    st.dataframe(curve, hide_index=True, width="stretch")


def _create(set_id: int, slug: str, title: str, design: DesignConfig, target: int | None) -> None:
    try:
        _, made = create_study_from_design(
            get_db(), slug, set_id, design, StudyConfig(title=title), title=title, target_participants=target
        )
    except (ValueError, LookupError) as error:
        st.error(str(error))
        return
    flash(f"Created draft study {slug!r} with {len(made.lists)} lists. Open it to admit participants.")
    flash("Design: " + "; ".join(made.notes()), "caption")
    st.rerun()


st.title("Studies")
show_flashes()
progress_table()
slugs = study_slugs(get_db())
if slugs:
    left, right = st.columns(2)
    with left:
        st.subheader("Status")
        status_controls(slugs)
    with right:
        st.subheader("Participant link")
        link_generator(slugs)
    st.subheader("Edit a study")
    edit_form(slugs)
    st.subheader("Adaptive design")
    adaptive_design_panel(slugs)
    st.divider()
    st.header("Pilot and simulation")
    st.caption("Apart from live data: neither takes a list slot or counts toward a target.")
    pilot, simulated = st.columns(2)
    with pilot:
        st.subheader("Pilot run (preview link)")
        pilot_panel(slugs)
    with simulated:
        st.subheader("Simulated participants")
        simulate_form(slugs)
    st.divider()
st.subheader("New study")
create_form()
