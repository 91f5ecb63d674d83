"""CLI: `alignlab judgments import` and the study analysis subcommands (export, simulate, qc, reliability)."""

from __future__ import annotations

import pandas as pd
import pytest

from app.cli import main
from db.engine import Database
from db.models import Base
from tests.support.analysis_helpers import levels_list, make_stimuli, make_study


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    database = Database.from_url(url)
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_judgments_import_command(cli_db, tmp_path, capsys):
    make_stimuli(cli_db)
    good = tmp_path / "things.txt"
    good.write_text("0 1 6\n3 4 9\n")
    assert main(["judgments", "import", str(good), "--stimuli", "set", "--slug", "cli-import"]) == 2
    assert "headerless file does not say what its columns are" in capsys.readouterr().err
    command = ["judgments", "import", str(good), "--stimuli", "set", "--slug", "cli-import"]
    assert main([*command, "--format", "odd-one-out"]) == 0
    assert "imported 2 odd_one_out judgments from 1 subjects as study 'cli-import'" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("image1,image2,image3\n0,1,6\n0,1,77\n")
    assert main(["judgments", "import", str(bad), "--stimuli", "set", "--slug", "cli-bad"]) == 2
    assert "line 3: image3: index 77 is out of range" in capsys.readouterr().err


def test_judgments_import_reads_a_folder_of_levels_files(cli_db, tmp_path, capsys):
    make_stimuli(cli_db)
    folder = tmp_path / "levels"
    folder.mkdir()
    header = "exp_trial_type,image1Path,image2Path,image3Path,selected_image,triplet_type,rt\n"
    for stem, odd in (("p1", "vehicle/car/0.png"), ("p2", "animal/dog/1.png")):
        row = f"exp_trial,animal/dog/0.png,animal/dog/1.png,vehicle/car/0.png,{odd},between_class,900\n"
        (folder / f"{stem}.csv").write_text(header + row)
    command = ["judgments", "import", str(folder), "--stimuli", "set", "--slug", "cli-levels"]
    assert main([*command, "--format", "levels"]) == 0
    assert "imported 2 odd_one_out judgments from 2 subjects as study 'cli-levels'" in capsys.readouterr().out


def test_simulate_qc_reliability_and_export_commands(cli_db, tmp_path, capsys):
    ids = make_stimuli(cli_db, per_category=4)
    make_study(cli_db, "cli-study", [levels_list(ids)], participants_per_list=20)
    assert main(["study", "simulate", "cli-study", "--participants", "5", "--careless", "0.2"]) == 0
    assert "simulated 5 participants (1 careless)" in capsys.readouterr().out
    assert main(["study", "qc", "cli-study", "--csv", str(tmp_path / "qc.csv")]) == 0
    assert "1 of 5 participants suggested for exclusion" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "qc.csv")) == 5
    assert main(["study", "reliability", "cli-study"]) == 0
    assert "between_class" in capsys.readouterr().out
    out = tmp_path / "export.csv"
    assert main(["study", "export", "cli-study", "--format", "things", "--out", str(out)]) == 0
    assert f"from 5 participants to {out} (things)" in capsys.readouterr().out
    assert pd.read_csv(out)["is_simulated"].all()
    with pytest.raises(SystemExit):
        main(["study", "export", "cli-study", "--format", "xlsx", "--out", str(out)])
