"""Home: what AlignLab is, the demo's three doors (take the study, the dashboard, the maps), and how to
switch to your own images and real participants."""

import streamlit as st

from app.auth import is_researcher
from app.resources import get_db
from common.settings import data_home
from study.monitoring import study_progress
from workflows.demo import DEMO_SLUG

st.title("AlignLab")
st.write(
    "Odd-one-out studies in the browser, human-aligned vision models (the AligNet method), and maps of "
    "how representations reorganise."
)

progress = study_progress(get_db())
demo = progress[progress["slug"] == DEMO_SLUG]
if not demo.empty:
    row = demo.iloc[0]
    st.info(
        f"**This is the built-in demo.** Study `{DEMO_SLUG}` uses real photos (Tux Paint stamps) and has "
        f"{int(row.completed)} completed participants, {int(row.simulated)} of them **simulated**. "
        "To use your own images and real participants: import a stimulus folder or zip (Stimuli page or "
        "`alignlab stimuli import`), create and open a study (Studies page), and share its Prolific link. "
        "Set `ALIGNLAB_RESEARCHER_PASSWORD_HASH` before collecting real data."
    )
    left, middle, right = st.columns(3)
    left.markdown(f"**1. Take the study** as a participant:  \n[open the demo study](./?study={DEMO_SLUG})")
    middle.markdown(
        "**2. Open the dashboard**: log in (Researcher → Log in) to see studies, participants, "
        "quality control and exports."
    )
    right.markdown(
        "**3. Explore the models**: the Maps page (after the login) shows the images before and after "
        "alignment, and the evaluation table."
    )
else:
    st.info("No demo study yet: `alignlab demo build` (run by `make run`) creates it.")
if is_researcher():  # the server's paths are for the researcher only
    st.caption(f"Data directory: `{data_home()}`")
