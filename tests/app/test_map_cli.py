"""`alignlab map`: two runs -> figures, report and metrics on disk; clear errors for unusable runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from db.engine import Database
from db.models import Run
from tests.support.map_fixtures import make_fake_runs
from workflows.artifacts import write_embeddings
from workflows.maps.data import load_map_inputs, resolve_representation
from workflows.maps.figures import PngExportUnavailable, chrome_path, write_pngs


@pytest.fixture
def runs(app_home):
    db = Database.from_url()
    yield db, make_fake_runs(db, app_home)
    db.dispose()


def test_map_command_writes_report_figures_and_metrics_that_show_the_planted_reorganisation(
    runs, app_home, capsys
):
    db, fake = runs
    out = app_home / "report"
    assert (
        main(
            [
                "map",
                "--before",
                str(fake.before_run),
                "--after",
                "aligned",
                "--out",
                str(out),
                "--method",
                "pca",
                "--no-png",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["maps.html", "metrics.json", "moved_most.csv", "report.html"]
    summary = {row["measure"]: row for row in json.loads((out / "metrics.json").read_text())["summary"]}
    assert summary["category knn purity"]["before"] < 0.4 and summary["category knn purity"]["after"] > 0.95
    rsa = next(row for name, row in summary.items() if name.startswith("Spearman RSA"))
    assert rsa["after"] > rsa["before"] + 0.4  # the simulated humans judged with the after representation
    maps_html = (out / "maps.html").read_text()
    assert "alignlab-hover-thumb" in maps_html and maps_html.count("data:image/jpeg;base64,") == 80
    report = (out / "report.html").read_text()
    assert "Images whose neighbours changed most" in report and "#2 teacher: aligned" in report
    assert "category knn purity: 0.287 -> 1.000" in capsys.readouterr().out


def test_rows_are_joined_by_stimulus_id_whatever_order_each_run_stored_them_in(runs):
    db, fake = runs
    inputs = load_map_inputs(db, (fake.before_run, "embeddings"), (fake.after_run, "embeddings"))
    np.testing.assert_array_equal(inputs.before.stimulus_ids, inputs.after.stimulus_ids)
    np.testing.assert_array_equal(inputs.stimuli["id"], inputs.before.stimulus_ids)
    assert list(inputs.stimuli["category"][:3]) == ["dog", "dog", "dog"]


def test_a_run_and_one_of_its_other_embeddings_artifacts_can_be_compared(runs, app_home):
    db, fake = runs
    inputs = load_map_inputs(db, (fake.before_run, "embeddings"), (fake.after_run, "embeddings"))
    path = write_embeddings(
        app_home / "runs" / "raw.npz", inputs.before.embeddings, inputs.before.stimulus_ids
    )
    with db.write() as session:
        run = session.get(Run, fake.after_run)
        run.artifacts = {**run.artifacts, "raw_embeddings": str(path.relative_to(app_home))}
    assert resolve_representation(db, "aligned:raw_embeddings") == (fake.after_run, "raw_embeddings")
    assert (
        main(
            [
                "map",
                "--before",
                "aligned:raw_embeddings",
                "--after",
                "aligned",
                "--out",
                str(app_home / "o"),
                "--method",
                "pca",
                "--no-png",
            ]
        )
        == 0
    )


def test_unusable_runs_get_a_message_naming_the_run_and_what_was_expected(runs, app_home, capsys):
    db, fake = runs
    with db.write() as session:
        session.add(Run(kind="teacher", name="empty", artifacts={"teacher": "runs/t"}))
    out = str(app_home / "o")
    assert main(["map", "--before", "nope", "--after", "aligned", "--out", out]) == 2
    assert "no run is called 'nope'" in capsys.readouterr().err
    assert main(["map", "--before", "empty", "--after", "aligned", "--out", out]) == 2
    assert "has no 'embeddings' artifact" in capsys.readouterr().err
    (app_home / "runs" / "base.npz").write_bytes(b"not a zip")
    assert main(["map", "--before", "base", "--after", "aligned", "--out", out]) == 2
    assert "is not a readable .npz file" in capsys.readouterr().err


def test_png_export_without_a_browser_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chrome")
    with pytest.raises(PngExportUnavailable, match="BROWSER_PATH='/nonexistent/chrome' is not an executable"):
        chrome_path()
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("workflows.maps.figures.CHROME_CANDIDATES", ("chromium",))
    with pytest.raises(PngExportUnavailable, match="install Debian's `chromium`"):
        write_pngs({})


@pytest.mark.slow
def test_png_export_through_debian_chromium(runs, app_home):
    db, fake = runs
    out = app_home / "png"
    assert main(["map", "--before", "base", "--after", "aligned", "--out", str(out), "--method", "pca"]) == 0
    for stem in ("maps", "moved_most", "quality", "rsa", "entropy_rt"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
