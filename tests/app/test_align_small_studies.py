"""Issue 14 "Must show": `alignlab align` with its defaults on a 36-image study with 3 simulated participants,
and on imported judgments without a `level` column, runs through (or refuses up front with the reason).
Each test prints its wall time (no wall-clock assert: the machine is shared)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from db.engine import Database
from db.models import StudyStatus
from db.runs import get_run, list_runs
from study.design import DesignConfig, create_study_from_design
from study.judgments import load_judgments
from study.simulate import simulate_participants
from study.stimuli import import_stimulus_set, load_stimulus_table, stimulus_set_id_by_name
from study.studies import set_study_status


@pytest.fixture
def photos36(app_home, tmp_path_factory):
    """36 images: 3 superordinates x 2 categories x 6, each category its own hue with per-image noise."""
    folder = tmp_path_factory.mktemp("photos36")
    rng = np.random.default_rng(0)
    for s, sup in enumerate(("animal", "food", "tool")):
        for c, cat in enumerate(("a", "b")):
            (folder / sup / f"{sup}-{cat}").mkdir(parents=True)
            base = np.array([60 + 80 * s, 40 + 120 * c, 200 - 60 * s], float)
            for i in range(6):
                pixels = np.clip(base + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / sup / f"{sup}-{cat}" / f"{i}.png")
    db = Database.from_url()
    import_stimulus_set(db, folder, "photos36")
    return db


def _align(capsys, slug: str) -> tuple[int, str, str, float]:
    started = time.perf_counter()
    code = main(["align", "--study", slug])
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\n[align on {slug}: exit {code} in {seconds:.1f} s]")
    return code, out, err, seconds


def _check_finished_loop(db, out: str) -> dict:
    loop = next(r for r in list_runs(db, kind="align"))
    assert loop.error is None
    metrics = loop.metrics
    for key in ("teacher_run", "labels_run", "alignet_run", "unalignet_run", "eval_run"):
        assert get_run(db, metrics[key]).status.value == "succeeded"
    assert "caveats" in metrics and "category_silhouette" in metrics
    assert ("caveats: none" in out) == (not metrics["caveats"])
    for caveat in metrics["caveats"]:
        assert caveat["reason"] in out and caveat["help"] in out
    labels = get_run(db, metrics["labels_run"]).metrics
    assert labels["settings"]["n_clusters"] == 6 and labels["n_triplets"] >= 256  # the pool rule for 36
    return metrics


@pytest.mark.slow
def test_align_with_defaults_on_a_36_image_study_with_3_participants(photos36, capsys):
    db = photos36
    create_study_from_design(db, "small36", 1, DesignConfig(n_lists=6, seed=1))
    set_study_status(db, "small36", StudyStatus.OPEN)
    simulate_participants(db, "small36", 3)
    assert load_judgments(db, "small36")["level"].notna().any()  # Levels types (catch trials have none)
    code, out, err, _ = _align(capsys, "small36")
    assert code == 0, err
    metrics = _check_finished_loop(db, out)
    assert set(metrics["accuracy"]) == {"base", "teacher", "AligNet", "UnAligNet"}
    assert "unseen-image accuracy not measured" in out  # too small: said, with what it would need


def _import_without_levels(db, tmp_path, n_per_subject: int = 70) -> str:
    """Three subjects' odd-one-out choices on random triplets (the odd one out: the image whose category
    differs, else random), as a CSV with no level column."""
    stimuli = load_stimulus_table(db, stimulus_set_id_by_name(db, "photos36"))
    names = np.array([s.name for s in stimuli])
    categories = np.array([s.category for s in stimuli])
    rng = np.random.default_rng(3)
    lines = ["image1,image2,image3,odd_one_out,subject_id,rt"]
    for subject in ("s1", "s2", "s3"):
        for _ in range(n_per_subject):
            trio = rng.choice(len(names), 3, replace=False)
            cats = categories[trio]
            lonely = [i for i in range(3) if (cats == cats[i]).sum() == 1]
            odd = trio[lonely[0]] if len(lonely) == 1 else trio[rng.integers(3)]
            lines.append(",".join([*names[trio], names[odd], subject, str(int(rng.uniform(900, 2500)))]))
    path = tmp_path / "no_levels.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.slow
def test_align_with_defaults_on_imported_judgments_without_levels(photos36, capsys, tmp_path):
    db = photos36
    csv = _import_without_levels(db, tmp_path)
    assert main(["judgments", "import", csv, "--stimuli", "photos36", "--slug", "nolevels"]) == 0
    assert load_judgments(db, "nolevels")["level"].isna().all()
    code, out, err, _ = _align(capsys, "nolevels")
    assert code == 0, err
    metrics = _check_finished_loop(db, out)
    assert set(metrics["gain"]["AligNet"]) == {"overall"}  # no Levels types: one overall row per model


def test_a_study_too_small_for_the_students_is_refused_before_any_run(photos36, capsys):
    db = photos36
    create_study_from_design(db, "small36", 1, DesignConfig(n_lists=6, seed=1))
    set_study_status(db, "small36", StudyStatus.OPEN)
    simulate_participants(db, "small36", 3)
    code = main(["align", "--study", "small36", "--config", '{"student": {"min_triplets": 5000}}'])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the study's 36 images give 675 pseudo-labelled triplets" in err
    assert "add images to the stimulus set (about" in err and "or lower student.min_triplets" in err
    assert list_runs(db) == []
