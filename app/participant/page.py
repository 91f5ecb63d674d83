"""The participant study page (consent → instructions → trials → end)."""

import streamlit as st


def participant_page() -> None:
    st.title("Study")
    st.info("The participant flow is being built.")
