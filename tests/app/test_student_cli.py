"""`alignlab student export`: a student run (found in the database) or a weights file -> export folder whose
card carries the evaluation table of the align run that trained it; clear one-line errors otherwise."""

from __future__ import annotations

import pandas as pd

from app.cli import main
from db.engine import Database
from db.models import Run, RunStatus


def _student_file(path):
    from alignment.finetune import FinetuneConfig, build_finetune_student, save_finetuned

    config = FinetuneConfig(
        backbone="timm:mobilenetv3_small_050", weights="random", image_size=32, head_dim=8
    )
    return save_finetuned(build_finetune_student(config), config, path)


def _add(db, **values) -> int:
    with db.write() as session:
        run = Run(**values)
        session.add(run)
        session.flush()
        return run.id


def test_export_a_student_run_with_its_align_runs_table(app_home, capsys):
    _student_file(app_home / "runs" / "5" / "student.pt")
    block = {"task": "odd_one_out", "held_out": "seen", "level": "overall", "flags": [[]] * 2}
    pd.DataFrame(
        {"model": ["AligNet", "base"], "n_judgments": [12, 12], "accuracy": [0.58, 0.5], **block}
    ).to_parquet(app_home / "results.parquet", index=False)  # as the eval stage stores it
    db = Database.from_url()
    student = _add(
        db,
        kind="student",
        status=RunStatus.SUCCEEDED,
        config={"study": "s", "space": "aligned"},
        artifacts={"student": "runs/5/student.pt"},
    )
    align = _add(
        db,
        kind="align",
        status=RunStatus.SUCCEEDED,
        metrics={"alignet_run": student},
        artifacts={"results": "results.parquet"},
    )
    failed = _add(db, kind="student", status=RunStatus.FAILED, error="boom")
    db.dispose()
    out = app_home / "export"
    assert main(["student", "export", "--run", str(student), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert (
        "| AligNet | overall · odd_one_out seen | 12 | 0.580 |" in card
        and f"evaluation from run {align}" in card
    )
    assert (out / "model.safetensors").is_file() and (out / "triplet_head.safetensors").is_file()
    assert main(["student", "export", "--run", str(failed), "--out", str(out)]) == 2
    assert "only a succeeded run can be used" in capsys.readouterr().err
    assert main(["student", "export", "--run", "999", "--out", str(out)]) == 2
    assert "no run with id 999" in capsys.readouterr().err
    assert main(["student", "export", "--run", str(align), "--out", str(out)]) == 2
    assert "expected a 'student' run" in capsys.readouterr().err


def test_export_a_weights_file(app_home, capsys):
    weights = _student_file(app_home / "student.pt")
    assert main(["student", "export", "--weights", str(weights), "--out", str(app_home / "x")]) == 0
    assert "exported to" in capsys.readouterr().out
    assert (
        main(["student", "export", "--weights", str(app_home / "none.pt"), "--out", str(app_home / "y")]) == 2
    )
    assert "student weights not found" in capsys.readouterr().err
    assert not (app_home / "y").exists()
