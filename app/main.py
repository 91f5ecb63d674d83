"""Streamlit entry point. A link with `?study=SLUG` shows only the participant study; everything else
is the researcher side (behind the researcher login once it exists)."""

from __future__ import annotations

import streamlit as st

from app.pages.home import home_page
from app.participant.page import participant_page


def main() -> None:
    st.set_page_config(page_title="AlignLab", layout="wide")
    if "study" in st.query_params:
        st.navigation([st.Page(participant_page, title="Study", url_path="study")], position="hidden").run()
        return
    st.navigation([st.Page(home_page, title="Home", icon=":material/home:", default=True)]).run()


main()
