"""Payment decisions and the files Prolific's bulk approve and bulk bonus tools take."""

from __future__ import annotations

import pytest

from study.participation import enter_study
from study.payments import bonus_cents, set_bonus, set_payment, write_payment_files
from tests.support.analysis_helpers import experimental, make_stimuli, make_study, run_participant

SLUG = "pay-study"


@pytest.fixture
def finished_study(db):
    """Three Prolific participants who completed, one anonymous lab participant, one simulated."""
    ids = make_stimuli(db)
    make_study(db, SLUG, [[experimental(ids[0], ids[3], ids[6])]], participants_per_list=10)
    people = {}
    for pid in ("5f1a0000000000000000000a", "5f1a0000000000000000000b", "5f1a0000000000000000000c"):
        enter_study(
            db, SLUG, pid, external_study_id="STUDY1", external_session_id=f"S-{pid}", source="prolific"
        )
        people[pid] = run_participant(db, SLUG, pid, [ids[6]])
    people["lab"] = run_participant(db, SLUG, "lab-1", [ids[6]])
    people["sim"] = run_participant(db, SLUG, "sim-1", [ids[6]], simulated=True)
    return db, people


def test_bulk_approve_reject_and_bonus_files_for_a_finished_study(finished_study, tmp_path):
    db, people = finished_study
    a, b, c = "5f1a0000000000000000000a", "5f1a0000000000000000000b", "5f1a0000000000000000000c"
    set_payment(db, people[a], "approved")
    set_payment(db, people[c], "approved")
    set_payment(db, people[b], "rejected", "=failed 3 of 3 attention checks")
    set_bonus(db, people[a], "1.50")
    set_bonus(db, people[c], 0.1)
    set_payment(db, people["lab"], "approved")  # not on Prolific: left out of the files

    files = write_payment_files(db, SLUG, tmp_path / "pay")
    assert (tmp_path / "pay" / "approve.csv").read_text() == f"{a}\n{c}\n"
    assert (tmp_path / "pay" / "bonus.csv").read_text() == f"{a},1.50\n{c},0.10\n"
    # a reason that a spreadsheet would run as a formula arrives as text
    assert (tmp_path / "pay" / "reject.csv").read_text() == (
        f"participant_id,reason\n{b},'=failed 3 of 3 attention checks\n"
    )
    assert (files.n_approved, files.n_rejected, files.n_bonuses, files.bonus_total, files.n_left_out) == (
        2,
        1,
        2,
        "1.60",
        1,
    )


def test_decisions_that_cannot_be_paid_are_refused(finished_study):
    db, people = finished_study
    with pytest.raises(ValueError, match="needs a reason"):
        set_payment(db, people["lab"], "rejected", "  ")
    with pytest.raises(ValueError, match="simulated: there is nobody to pay"):
        set_payment(db, people["sim"], "approved")
    with pytest.raises(ValueError, match="unknown"):
        set_payment(db, people["lab"], "paid")


@pytest.mark.parametrize("amount", ["-1", "1.505", "abc", "1e9", "nan"])
def test_a_bonus_amount_must_be_money(amount):
    with pytest.raises(ValueError, match="bonus"):
        bonus_cents(amount)


def test_bonus_amounts_are_exact_cents():
    assert [bonus_cents(x) for x in ("0.1", 0.2, "12", "", None)] == [10, 20, 1200, 0, 0]
