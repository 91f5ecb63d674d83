"""`alignlab stimuli ...` and `alignlab study ...`: summaries on success, row-level errors and exit 2 on bad
input."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.cli import main
from db.models import Study, StudyStatus, Trial
from tests.support.stimulus_files import make_image, make_layout, snapshot

LAYOUT = {sup: {f"{sup}{c}": 4 for c in range(3)} for sup in ("animal", "tool", "food")}


@pytest.fixture
def env(db, tmp_path, monkeypatch):
    """The CLI talks to the test database and keeps files under a temporary data dir."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ALIGNLAB_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    return home


def test_stimuli_import_prints_a_summary_and_list_shows_it(env, tmp_path, capsys):
    source = make_layout(tmp_path / "src", LAYOUT)
    assert main(["stimuli", "import", str(source), "--name", "objects"]) == 0
    out = capsys.readouterr().out
    assert "imported 36 images into stimulus set 'objects'" in out
    assert "9 categories in 3 superordinate(s)" in out and "animal: 3 categories, 12 images" in out
    assert main(["stimuli", "list"]) == 0
    assert "objects" in capsys.readouterr().out


def test_stimuli_import_reports_bad_rows_and_exits_2(db, env, tmp_path, capsys):
    source = make_layout(tmp_path / "src", LAYOUT)
    (source / "animal" / "animal0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,category\nanimal/animal0/animal00.jpg,a\nanimal/nope.jpg,a\n")
    before = snapshot(db, env)
    assert main(["stimuli", "import", str(source), "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "animal/animal0/broken.jpg: is" in err and "nothing was imported" in err
    assert main(["stimuli", "import", str(source), "--name", "bad", "--manifest", str(manifest)]) == 2
    assert "m.csv line 3: unknown path 'animal/nope.jpg'" in capsys.readouterr().err
    assert snapshot(db, env) == before


def test_study_create_open_pause_close_and_list(db, env, tmp_path, capsys):
    main(["stimuli", "import", str(make_layout(tmp_path / "src", LAYOUT)), "--name", "objects"])
    design = tmp_path / "design.toml"
    design.write_text("n_lists = 2\nn_between_class = 6\nseed = 3\n")
    code = main(
        [
            "study",
            "create",
            "pilot-1",
            "--stimuli",
            "objects",
            "--design",
            str(design),
            "--within",
            "3",
            "--border",
            "3",
            "--blocks",
            "2",
            "--catch-per-block",
            "1",
            "--practice",
            "1",
            "--target",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "created study 'pilot-1'" in out and "2 list(s) of 15 trials" in out
    assert "within_class = three images of one category" in out and "alignlab study open pilot-1" in out
    for command, status in (
        ("open", StudyStatus.OPEN),
        ("pause", StudyStatus.PAUSED),
        ("close", StudyStatus.CLOSED),
    ):
        assert main(["study", command, "pilot-1"]) == 0
        with db.read() as session:
            assert session.scalar(select(Study.status).where(Study.slug == "pilot-1")) == status
    assert main(["study", "list"]) == 0
    assert "pilot-1" in capsys.readouterr().out


def test_study_create_errors_exit_2_and_change_nothing(db, env, tmp_path, capsys):
    main(["stimuli", "import", str(make_layout(tmp_path / "src", LAYOUT)), "--name", "objects"])
    assert main(["study", "create", "pilot-1", "--stimuli", "objects", "--open"]) == 0
    capsys.readouterr()
    with db.read() as session:
        n_trials = session.scalar(select(func.count()).select_from(Trial))
    assert main(["study", "create", "pilot-1", "--stimuli", "objects"]) == 2
    assert "slug 'pilot-1' already exists" in capsys.readouterr().err
    assert main(["study", "create", "pilot-2", "--stimuli", "nothing"]) == 2
    assert "no stimulus set named 'nothing'; known sets: objects" in capsys.readouterr().err
    assert main(["study", "create", "pilot-3", "--stimuli", "objects", "--within", "50"]) == 2
    assert "allows only 36 distinct within_class triplets but each list needs 50" in capsys.readouterr().err
    assert main(["study", "open", "missing"]) == 2
    for template, reason in (
        ("https://app.prolific.com/submissions/complete?cc={cc}", "uses the placeholder {cc}"),
        ("javascript:alert(1)//{code}", "is not an http or https URL"),
    ):
        config = tmp_path / "bad.toml"
        config.write_text(f"completion_url_template = {template!r}\n")
        assert main(["study", "create", "pilot-4", "--stimuli", "objects", "--config", str(config)]) == 2
        error = capsys.readouterr().err
        assert reason in error and "completion_url_template" in error and "Traceback" not in error
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Trial)) == n_trials
        assert session.scalar(select(func.count()).select_from(Study)) == 1


def test_import_design_levels_and_things(db, env, tmp_path, capsys):
    source = tmp_path / "src"
    for name in ("dog/a.jpg", "dog/b.jpg", "cat/c.jpg", "car/d.jpg"):
        make_image(source / name)
    main(["stimuli", "import", str(source), "--name", "tiny"])
    levels = tmp_path / "inputs.csv"
    levels.write_text(
        "id,image1,image2,image3,trial,triplet_class\n"
        "participant_1,a.jpg,c.jpg,d.jpg,0,between_class\n"
        "participant_1,a.jpg,b.jpg,c.jpg,1,class_border\n"
        "participant_2,a.jpg,b.jpg,zebra.jpg,0,class_border\n"
    )
    assert main(["study", "import-design", "levels-1", str(levels), "--stimuli", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "inputs.csv line 4: image3: unknown image 'zebra.jpg': not in the stimulus set" in err
    levels.write_text(levels.read_text().replace("zebra.jpg", "d.jpg"))
    assert main(["study", "import-design", "levels-1", str(levels), "--stimuli", "tiny", "--open"]) == 0
    out = capsys.readouterr().out
    assert "2 list(s), 3 trials (3 experimental)" in out and "study 'levels-1' is open" in out
    things = tmp_path / "triplets.txt"
    things.write_text("0 1 2\n0 1 3\n")  # names sorted: car/d, cat/c, dog/a, dog/b
    assert (
        main(["study", "import-design", "things-1", str(things), "--stimuli", "tiny", "--per-list", "1"]) == 0
    )
    assert "2 list(s), 2 trials" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("alignlab: error: ")
    return err


def test_config_typos_are_one_line_naming_the_key_and_the_known_keys(env, tmp_path, capsys):
    assert main(["align", "--study", "any", "--config", '{"bogus": 1}']) == 2
    err = _one_error_line(capsys)
    assert "unknown AlignConfig key(s) ['bogus']; known keys: ['backbone', 'pseudo', 'similarity'," in err
    qc = tmp_path / "qc.json"
    qc.write_text('{"min_catch_acuracy": 0.8}')
    assert main(["study", "qc", "any", "--config", str(qc)]) == 2
    err = _one_error_line(capsys)
    assert "unknown QCConfig key(s) ['min_catch_acuracy']; known keys: ['fast_10th_ms'," in err
    assert "'min_catch_accuracy'" in err


def test_wrong_types_and_broken_json_are_one_line_too(env, capsys):
    assert main(["align", "--study", "any", "--config", '{"student": []}']) == 2
    assert "AlignConfig.student must be a table (dict); got [] (list)" in _one_error_line(capsys)
    assert main(["align", "--study", "any", "--config", "{bogus"]) == 2
    assert "--config is not valid JSON" in _one_error_line(capsys)
    assert main(["teacher", "fit", "--study", "any", "--config", '{"lr": "fast"}']) == 2
    assert "TeacherConfig.lr must be a number (float) or null (None); got 'fast' (str)" in _one_error_line(
        capsys
    )


def test_a_malformed_feature_spec_is_refused_before_any_work_with_the_reason(env, capsys):
    for command in (["features", "extract"], ["teacher", "fit"], ["align"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--study", "any", "--backbone", "timm:tf_efficientnet_lite0@5:gridx"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert "argument --backbone: feature source 'timm:tf_efficientnet_lite0@5:gridx'" in err
        assert "followed by a grid size of 2 or more" in err


def test_import_design_with_structure_and_pilot_link(db, env, tmp_path, capsys):
    main(["stimuli", "import", str(make_layout(tmp_path / "src", LAYOUT)), "--name", "objects"])
    design = tmp_path / "levels.csv"
    rows = [
        f"p{k},animal/animal0/animal0{k}.jpg,tool/tool0/tool0{k}.jpg,food/food0/food0{k}.jpg,{k},between_class"
        for k in range(3)
    ]
    design.write_text("id,image1,image2,image3,trial,triplet_class\n" + "\n".join(rows) + "\n")
    args = ["study", "import-design", "levels-1", str(design), "--stimuli", "objects"]
    structure = ["--blocks", "1", "--catch-per-block", "2", "--practice", "1", "--keep-image-order"]
    assert main(args + structure) == 0
    assert "3 list(s), 12 trials (6 catch, 3 experimental, 3 practice)" in capsys.readouterr().out
    with db.read() as session:
        orders = set(session.scalars(select(Trial.display_order).where(Trial.kind == "experimental")))
    assert orders == {"012"}  # between-class rows: stored in the file's order, shown so
    assert main(["study", "pilot-link", "levels-1", "--base", "https://lab.example/"]) == 0
    link = capsys.readouterr().out.strip()
    assert (
        link.startswith("https://lab.example/?study=levels-1&pilot=") and len(link.split("pilot=")[1]) == 24
    )
    design.write_text("id,image1,image2,image3,trial,triplet_class,block\n" + rows[0] + ",-1\n")
    assert main(args[:2] + ["levels-2"] + args[3:]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "levels.csv line 2: block -1 (practice) holds a between_class trial" in err
    )
