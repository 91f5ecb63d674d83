"""Researcher home: what AlignLab is and where the demo lives."""

import streamlit as st

from db.settings import data_home

st.title("AlignLab")
st.write("Odd-one-out studies, human-aligned vision models, and maps of how representations reorganise.")
st.info(f"Data directory: `{data_home()}`. The built-in demo study and runs are created there on first run.")
