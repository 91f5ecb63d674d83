"""Stimuli: the imported stimulus sets, and importing a new one from an uploaded zip."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app.resources import get_db
from study.stimuli import import_stimulus_set, list_stimulus_sets


def sets_table() -> None:
    sets = list_stimulus_sets(get_db())
    if not sets:
        st.info("No stimulus sets yet.")
        return
    st.dataframe(pd.DataFrame([vars(s) for s in sets]), hide_index=True, width="stretch")


def upload_form() -> None:
    st.markdown(
        "A zip of `superordinate/category/image.jpg` folders, or of any folder with a `manifest.csv` "
        "(`path, category, superordinate`, extra columns kept). Every file is checked before anything "
        "is stored; a problem anywhere imports nothing and lists each bad row."
    )
    with st.form("upload_stimuli", clear_on_submit=False):
        upload = st.file_uploader("Stimulus zip", type=["zip"])
        name = st.text_input("Name of the new set")
        submitted = st.form_submit_button("Import")
    if submitted:
        if upload is None:
            limit = st.get_option("server.maxUploadSize")
            st.error(
                f"Choose a zip file of at most {limit} MB (a larger one is refused by the upload itself; "
                "import it with `alignlab stimuli import PATH --name NAME` on the server)."
            )
            return
        if not name.strip():
            st.error("Give the new set a name.")
            return
        _import(upload.getvalue(), upload.name, name.strip())


def _import(data: bytes, filename: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / Path(filename).name
        archive.write_bytes(data)
        try:
            with st.spinner("Checking and importing images..."):
                report = import_stimulus_set(get_db(), archive, name, source_name=archive.name)
        except (ValueError, LookupError, FileNotFoundError) as error:
            st.error(str(error))
            return
    st.success(report.summary())


st.title("Stimuli")
sets_table()
st.subheader("Import a stimulus set")
upload_form()
