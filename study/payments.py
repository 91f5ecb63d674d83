"""Payment decisions for Prolific (approve, reject with a reason, bonus) and the files its bulk tools take.

A payment decision is separate from the analysis decision (`excluded`): Prolific expects a completed
submission to be approved unless it failed its attention checks, whatever the analysis keeps. Decisions are
stored on the participant (`payment_status`, `payment_reason`, `bonus_cents`) and written as:

- `approve.csv`: one Prolific participant id per line, no header (paste into "Bulk approve");
- `reject.csv`: `participant_id,reason` with a header (Prolific rejects one submission at a time, with a
  reason; this is the list to work through);
- `bonus.csv`: `participant_id,amount` lines, no header, amount in the study's currency with two decimals
  (paste into "Bulk bonus payment").

Only Prolific participants (entered with a PROLIFIC_PID) are written; simulated participants never get a
decision. Amounts are stored in cents so that 0.1 + 0.2 never becomes 0.30000000000000004.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from db.engine import Database
from db.models import Participant, ParticipantStatus
from study.export import write_csv
from study.participation import ParticipantNotFound
from study.studies import get_study

PAYMENT_STATUSES = ("pending", "approved", "rejected")
PROLIFIC_SOURCE = "prolific"
MAX_BONUS = Decimal("1000.00")  # a typo guard: a bonus above this is refused


@dataclass(frozen=True)
class PaymentFiles:
    folder: Path
    n_approved: int
    n_rejected: int
    n_bonuses: int
    bonus_total: str  # e.g. "12.50"
    n_left_out: int  # decisions on non-Prolific participants, not written


def set_payment(db: Database, participant_id: int, status: str, reason: str | None = None) -> None:
    """Record approve / reject (a reason is required) / pending for one participant."""
    if status not in PAYMENT_STATUSES:
        raise ValueError(f"payment decision {status!r} is unknown; expected one of {list(PAYMENT_STATUSES)}")
    reason = (reason or "").strip() or None
    if status == "rejected" and reason is None:
        raise ValueError("rejecting a submission needs a reason (e.g. 'failed 2 of 3 attention checks')")
    with db.write() as session:
        participant = _payable(session, participant_id)
        participant.payment_status = status
        participant.payment_reason = reason if status == "rejected" else None


def set_bonus(db: Database, participant_id: int, amount: str | float | Decimal | None) -> None:
    """Record a bonus (e.g. "1.50"; 0 or None removes it)."""
    cents = bonus_cents(amount)
    with db.write() as session:
        _payable(session, participant_id).bonus_cents = cents or None


def bonus_cents(amount: str | float | Decimal | None) -> int:
    """Whole cents of a bonus amount; ValueError naming the amount unless 0 <= amount <= MAX_BONUS with at
    most two decimals."""
    if amount is None or amount == "":
        return 0
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise ValueError(f"bonus {amount!r} is not an amount; expected e.g. 1.50") from None
    if not value.is_finite() or value < 0 or value > MAX_BONUS or value != value.quantize(Decimal("0.01")):
        raise ValueError(
            f"bonus {amount!r} is not valid: "
            f"expected an amount from 0 to {MAX_BONUS} with at most two decimals"
        )
    return int(value * 100)


def approve_completed(db: Database, slug: str) -> int:
    """Approve every completed, still pending, Prolific participant of the study; returns how many."""
    with db.write() as session:
        study = get_study(session, slug)
        pending = session.scalars(
            select(Participant).where(
                Participant.study_id == study.id,
                Participant.source == PROLIFIC_SOURCE,
                Participant.is_simulated.is_(False),
                Participant.is_pilot.is_(False),
                Participant.status == ParticipantStatus.COMPLETED,
                Participant.payment_status == "pending",
            )
        ).all()
        for participant in pending:
            participant.payment_status = "approved"
        return len(pending)


def _payable(session, participant_id: int) -> Participant:
    participant = session.get(Participant, participant_id)
    if participant is None:
        raise ParticipantNotFound(f"no participant with id {participant_id}")
    if participant.is_simulated or participant.is_pilot:
        kind = "simulated" if participant.is_simulated else "a pilot run"
        raise ValueError(f"participant {participant.external_id!r} is {kind}: there is nobody to pay")
    return participant


def payment_tables(db: Database, slug: str) -> dict[str, pd.DataFrame]:
    """approve / reject / bonus tables of the study's Prolific participants, ordered by participant."""
    with db.read() as session:
        study = get_study(session, slug)
        rows = session.execute(
            select(
                Participant.external_id,
                Participant.source,
                Participant.payment_status,
                Participant.payment_reason,
                Participant.bonus_cents,
            )
            .where(
                Participant.study_id == study.id,
                Participant.is_simulated.is_(False),
                Participant.is_pilot.is_(False),
            )
            .order_by(Participant.id)
        ).all()
    people = pd.DataFrame(rows, columns=["participant_id", "source", "status", "reason", "bonus_cents"])
    prolific = people[people["source"] == PROLIFIC_SOURCE]
    bonus = prolific[prolific["bonus_cents"].fillna(0) > 0]
    return {
        "approve": prolific.loc[prolific["status"] == "approved", ["participant_id"]],
        "reject": prolific.loc[prolific["status"] == "rejected", ["participant_id", "reason"]],
        "bonus": pd.DataFrame(
            {"participant_id": bonus["participant_id"], "amount": bonus["bonus_cents"].map(_amount)}
        ),
        "left_out": people[
            (people["source"] != PROLIFIC_SOURCE)
            & ((people["status"] != "pending") | (people["bonus_cents"].fillna(0) > 0))
        ],
    }


def _amount(cents: int) -> str:
    cents = int(cents)
    return f"{cents // 100}.{cents % 100:02d}"


def write_payment_files(db: Database, slug: str, folder: str | Path) -> PaymentFiles:
    """approve.csv, reject.csv and bonus.csv in `folder` (each written whole or not at all)."""
    folder = Path(folder)
    tables = payment_tables(db, slug)
    write_csv(tables["approve"], folder / "approve.csv", header=False)
    write_csv(tables["reject"], folder / "reject.csv")
    write_csv(tables["bonus"], folder / "bonus.csv", header=False)
    total = int(sum(bonus_cents(amount) for amount in tables["bonus"]["amount"]))
    return PaymentFiles(
        folder,
        len(tables["approve"]),
        len(tables["reject"]),
        len(tables["bonus"]),
        _amount(total),
        len(tables["left_out"]),
    )
