"""CLI: `alignlab study exclude|include|approve|reject|bonus|payments|edit`."""

from __future__ import annotations

import pytest

from app.cli import main
from db.engine import Database
from db.models import Base, Participant
from study.participation import enter_study
from study.qc import participant_qc
from study.studies import get_study, study_config
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant

SLUG = "cli-study"
PID = "5f1a00000000000000000001"


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    database = Database.from_url(url)
    Base.metadata.create_all(database.engine)
    ids = make_stimuli(database)
    make_study(database, SLUG, [[experimental(ids[0], ids[3], ids[6])]], participants_per_list=10)
    enter_study(database, SLUG, PID, source="prolific")
    run_participant(database, SLUG, PID, [ids[6]])
    run_participant(database, SLUG, "OTHER-2", [ids[6]])
    yield database
    database.dispose()


def _excluded(db) -> dict[str, tuple[bool, str | None]]:
    qc = participant_qc(db, SLUG)
    return {row.external_id: (row.excluded, row.exclusion_reason) for row in qc.itertuples()}


def test_exclude_and_include_by_external_or_internal_id(cli_db, capsys):
    assert main(["study", "exclude", SLUG, PID, "--reason", "failed catch trials"]) == 0
    assert "is excluded (failed catch trials)" in capsys.readouterr().out
    assert _excluded(cli_db) == {PID: (True, "failed catch trials"), "OTHER-2": (False, None)}
    with cli_db.read() as session:
        internal = session.query(Participant.id).filter_by(external_id="OTHER-2").scalar()
    assert main(["study", "exclude", SLUG, str(internal), "--reason", "left early"]) == 0
    assert main(["study", "include", SLUG, PID]) == 0
    assert _excluded(cli_db) == {PID: (False, None), "OTHER-2": (True, "left early")}


def test_decision_commands_refuse_bad_input_in_one_line(cli_db, capsys):
    assert main(["study", "exclude", SLUG, "NOBODY", "--reason", "x"]) == 2
    assert "has no participant 'NOBODY'" in capsys.readouterr().err
    assert main(["study", "exclude", SLUG, PID, "--reason", " "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["study", "bonus", SLUG, PID, "1.234"]) == 2
    assert "at most two decimals" in capsys.readouterr().err
    assert main(["study", "approve", SLUG]) == 2
    assert _excluded(cli_db)[PID] == (False, None)


def test_payment_decisions_and_files(cli_db, tmp_path, capsys):
    assert main(["study", "approve", SLUG, "--all-completed"]) == 0
    assert "approved 1 submission(s)" in capsys.readouterr().out  # OTHER-2 has no PROLIFIC_PID
    assert main(["study", "bonus", SLUG, PID, "2.5"]) == 0
    assert main(["study", "payments", SLUG, "--out", str(tmp_path / "pay")]) == 0
    assert "bonus.csv (1 bonuses, total 2.50)" in capsys.readouterr().out
    assert (tmp_path / "pay" / "approve.csv").read_text() == f"{PID}\n"
    assert (tmp_path / "pay" / "bonus.csv").read_text() == f"{PID},2.50\n"
    assert main(["study", "reject", SLUG, PID, "--reason", "no answers"]) == 0
    assert main(["study", "payments", SLUG, "--out", str(tmp_path / "pay")]) == 0
    assert (tmp_path / "pay" / "approve.csv").read_text() == ""
    assert (tmp_path / "pay" / "reject.csv").read_text() == f"participant_id,reason\n{PID},no answers\n"


def test_edit_applies_a_toml_file_as_a_new_version(cli_db, tmp_path, capsys):
    edit = tmp_path / "edit.toml"
    edit.write_text('[study]\nconsent_text = "New consent."\ncompletion_code = "C-2"\n')
    assert main(["study", "edit", SLUG, "--config", str(edit), "--target", "30"]) == 0
    assert "config version 2 (consent_text, completion_code, target_participants)" in capsys.readouterr().out
    with cli_db.read() as session:
        study = get_study(session, SLUG)
        assert (study_config(study).consent_text, study.target_participants) == ("New consent.", 30)
    assert main(["study", "edit", SLUG, "--config", str(edit)]) == 0
    assert "nothing changed; config version 2 stays current" in capsys.readouterr().out
    edit.write_text('completion_url_template = "https://x.org/?cc={cc}"\n')
    assert main(["study", "edit", SLUG, "--config", str(edit)]) == 2
    assert "{code} is the only one allowed" in capsys.readouterr().err
    assert main(["study", "edit", SLUG, "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err
