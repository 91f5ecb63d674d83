"""AppTest: the Studies page creates adaptive studies (mode and settings from the form) and shows an adaptive
study's refits as the teacher's held-out accuracy against the answers, random share vs adaptive."""

from __future__ import annotations

import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from db.engine import Database
from db.models import Study, Trial, TrialKind, TripletList
from db.runs import create_run, finish_run
from study.design import DesignConfig, create_study_from_design
from tests.app.conftest import MAIN


def _values(encoded) -> list:
    """A trace's numbers, as plotly sends them (a list, or base64 bytes with their dtype)."""
    if isinstance(encoded, dict):
        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]).tolist()
    return list(encoded)


def _studies_page() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["researcher_logged_in"] = True
    at.run()
    return at.switch_page("views/studies.py").run()


def _by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def _design(db: Database, slug: str) -> dict:
    with db.read() as session:
        study = session.query(Study).filter_by(slug=slug).one()
        return study.config["extra"]["design"]["config"]


def _create(at: AppTest, slug: str, mode: str, settings: dict) -> AppTest:
    _by_label(at.text_input, "Slug (used in the link)").input(slug)
    for label, value in [("Lists", 1), ("Triplets per level", 2), ("Blocks", 1), ("Catch per block", 1)]:
        _by_label(at.number_input, label).set_value(value)
    _by_label(at.radio, "Design mode").set_value(mode)
    for label, value in settings.items():
        widgets = at.selectbox if label == "Strategy" else at.number_input
        _by_label(widgets, label).set_value(value)
    return _by_label(at.button, "Create study").click().run()


def test_the_create_form_makes_an_adaptive_study_with_its_settings(stimulus_set):
    db = stimulus_set
    at = _create(
        _studies_page(),
        "ada-form",
        "adaptive",
        {
            "Strategy": "disagreement",
            "Random share": 0.3,
            "Refit every N answers": 40,
            "... or every N minutes (0 = off)": 15.0,
            "Lists kept ready": 3,
        },
    )
    assert not at.exception and "Created draft study 'ada-form'" in at.success[0].value
    design = _design(db, "ada-form")
    assert design["mode"] == "adaptive" and design["strategy"] == "disagreement"
    assert (
        design["random_share"],
        design["refit_every"],
        design["refit_minutes"],
        design["lists_ahead"],
    ) == (
        0.3,
        40,
        15.0,
        3,
    )
    with db.read() as session:
        reasons = (
            session.query(Trial.selection).join(TripletList).filter(Trial.kind == TrialKind.EXPERIMENTAL)
        )
        assert {selection["strategy"] for (selection,) in reasons} == {"random"}  # no teacher yet

    at = _create(_studies_page(), "fixed-form", "fixed", {"Refit every N answers": 7})
    assert not at.exception and _design(db, "fixed-form")["mode"] == "fixed"
    assert _design(db, "fixed-form")["refit_every"] == DesignConfig().refit_every  # adaptive settings unused


def test_the_design_panel_plots_held_out_accuracy_against_answers(stimulus_set):
    db = stimulus_set
    design = DesignConfig(n_between_class=2, n_within_class=2, n_class_border=2, n_blocks=1, mode="adaptive")
    study_id, _ = create_study_from_design(db, "ada-curve", 1, design)
    at = _studies_page()
    at.selectbox(key="adaptive_study").select("ada-curve").run()
    assert "No refit yet" in at.info[0].value and not at.get("plotly_chart")

    for n_answers, random_share, adaptive in [(100, (40, 25), (30, 14)), (200, (60, 42), (50, 26))]:
        run = create_run(db, "adaptive", {"study": "ada-curve"}, study_id=study_id)
        held_out = {
            "random share": {"n": random_share[0], "correct": random_share[1]},
            "adaptive": {"n": adaptive[0], "correct": adaptive[1]},
        }
        for values in held_out.values():
            values["accuracy"] = values["correct"] / values["n"]
        finish_run(db, run, {"n_answers": n_answers, "held_out_by_selection": held_out}, {})
    failed = create_run(db, "adaptive", {"study": "ada-curve"}, study_id=study_id)
    finish_run(db, failed, {"n_answers": 300}, {})  # a refit without a split: no point

    at = _studies_page()
    at.selectbox(key="adaptive_study").select("ada-curve").run()
    assert not at.exception, at.exception
    (chart,) = at.get("plotly_chart")
    traces = {trace["name"]: trace for trace in json.loads(chart.proto.spec)["data"]}
    assert set(traces) == {"random share", "adaptive"}
    assert _values(traces["random share"]["x"]) == [100, 200]
    assert _values(traces["random share"]["y"]) == [25 / 40, 42 / 60]
    assert _values(traces["adaptive"]["y"]) == [14 / 30, 26 / 50]
    table = at.dataframe[-1].value
    assert table["n"].tolist() == [30, 50, 40, 60]
