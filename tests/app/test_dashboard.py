"""The researcher's whole path through the dashboard in AppTest: import a stimulus zip, create and open a
study, run simulated participants and watch them arrive, exclude one, and download the three exports."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from db.engine import Database
from db.models import Participant
from tests.app.conftest import MAIN


def _logged_in(page: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["researcher_logged_in"] = True
    at.run()
    return at.switch_page(page).run()


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _stimulus_zip() -> bytes:
    """3 superordinates x 2 categories x 4 generated images, zipped as superordinate/category/i.png."""
    buffer, colours = io.BytesIO(), iter(range(0, 250, 10))
    with zipfile.ZipFile(buffer, "w") as archive:
        for sup in ("animal", "food", "tool"):
            for cat in ("a", "b"):
                for i in range(4):
                    image = io.BytesIO()
                    Image.new("RGB", (40, 40), (next(colours), 80 + 10 * i, 120)).save(image, "PNG")
                    archive.writestr(f"{sup}/{sup}-{cat}/{i}.png", image.getvalue())
    return buffer.getvalue()


def test_researcher_pages_are_not_reachable_without_login(app_home):
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    with pytest.raises(ValueError, match="not a registered page|Could not find"):
        at.switch_page("views/participants.py").run()


def test_import_create_open_simulate_exclude_and_export(app_home):
    at = _logged_in("views/stimuli.py")
    at.file_uploader[0].set_value(("toy.zip", _stimulus_zip(), "application/zip"))
    next(t for t in at.text_input if t.label == "Name of the new set").input("toy set")
    _button(at, "Import").click().run()
    assert not at.exception and "imported 24 images" in at.success[0].value

    at = _logged_in("views/studies.py")
    inputs = {w.label: w for w in at.text_input}
    inputs["Slug (used in the link)"].input("toy-study")
    numbers = {w.label: w for w in at.number_input}
    for label, value in [("Lists", 3), ("Triplets per level", 2), ("Blocks", 1), ("Catch per block", 1)]:
        numbers[label].set_value(value)
    _button(at, "Create study").click().run()
    assert not at.exception and "Created draft study 'toy-study'" in at.success[0].value
    at.radio(key="status_choice").set_value("open")
    _button(at, "Set status").click().run()
    assert "toy-study is now open" in at.success[0].value

    _button(at, "Run simulated participants").click().run()  # no study is preselected: nothing runs
    assert "Choose the study" in at.error[0].value
    at.selectbox(key="simulate_study").select("toy-study")
    next(n for n in at.number_input if n.label == "Simulated participants").set_value(3)
    _button(at, "Run simulated participants").click().run()
    assert not at.exception and "3 simulated participants" in at.success[0].value
    progress = at.dataframe[0].value.set_index("slug").loc["toy-study"]
    assert (progress.completed, progress.simulated) == (3, 3)

    at = _logged_in("views/participants.py")
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 3  # the QC table, one row per participant
    next(c for c in at.checkbox if c.label == "Exclude from analyses").check()
    next(t for t in at.text_input if t.label == "Reason").input("catch accuracy too low")
    _button(at, "Save decision").click().run()
    assert not at.exception and "excluded" in at.success[0].value
    at.session_state["data_tab"] = "Export"  # only the open tab's section runs
    at.run()
    _button(at, "Prepare export files").click().run()
    downloads = [b.label for b in at.get("download_button") if b.label.startswith("Download")]
    # the anchor export is offered only for studies that hold anchor judgments
    assert downloads == [
        "Download THINGS triplets",
        "Download jsPsych-like trials",
        "Download trials (Parquet)",
        "Download participants",
        "Download participants (Parquet)",
        "Download interaction events",
    ]

    db = Database.from_url()
    with db.read() as session:
        people = session.query(Participant).order_by(Participant.id).all()
    assert all(p.is_simulated for p in people)
    assert people[0].excluded and people[0].exclusion_reason == "catch accuracy too low"
    assert people[0].payment_status == "pending"  # exclusion is not a payment decision
    db.dispose()
