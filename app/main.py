"""Streamlit entry point. A link with `?study=SLUG` shows only the participant study; everything else
is the researcher side, whose data pages appear in the navigation only after the researcher login.

Researcher pages are files under app/views/ (thin scripts), so AppTest can switch to them. Not app/pages/:
Streamlit would treat that folder as legacy multipage pages and serve them before main.py (and its login) ran.
"""

from __future__ import annotations

import streamlit as st

from app.auth import is_researcher, logout_button
from app.participant.page import participant_page
from common.settings import public_gallery_enabled


def researcher_navigation() -> dict[str, list[st.Page]]:
    """Home for everyone; the map gallery too when the researcher turned it on (ALIGNLAB_PUBLIC_GALLERY);
    Maps (with human results and downloads) and every data page only after the login."""
    pages = {"AlignLab": [st.Page("views/home.py", title="Home", icon=":material/home:", default=True)]}
    if public_gallery_enabled():
        pages["AlignLab"].append(
            st.Page("views/gallery.py", title="Gallery", icon=":material/photo_library:")
        )
    if is_researcher():
        pages["AlignLab"].append(st.Page("views/maps.py", title="Maps", icon=":material/scatter_plot:"))
        pages["Studies"] = [
            st.Page("views/studies.py", title="Studies", icon=":material/science:"),
            st.Page("views/participants.py", title="Participants & data", icon=":material/groups:"),
            st.Page("views/stimuli.py", title="Stimuli", icon=":material/image:"),
        ]
        pages["Models"] = [
            st.Page("views/alignment.py", title="Alignment runs", icon=":material/model_training:")
        ]
        logout_button()
    else:
        pages["Researcher"] = [st.Page("views/login.py", title="Log in", icon=":material/login:")]
    return pages


def main() -> None:
    st.set_page_config(page_title="AlignLab", layout="wide")
    if "study" in st.query_params:
        st.navigation([st.Page(participant_page, title="Study", url_path="study")], position="hidden").run()
        return
    st.navigation(researcher_navigation()).run()


main()
