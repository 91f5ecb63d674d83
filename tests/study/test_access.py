"""Researcher login: hashed passwords, constant-time verification, rate-limited attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from db.models import LoginAttempt, utcnow
from study.access import LoginPolicy, attempt_login, hash_password, verify_password


@pytest.fixture(scope="module")
def stored():
    return hash_password("correct horse")


def test_hash_is_salted_and_verifies_only_the_right_password(stored):
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert stored != hash_password("correct horse")  # fresh salt each time
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)


def test_malformed_hash_is_a_clear_error():
    with pytest.raises(ValueError, match="malformed"):
        verify_password("x", "plaintext-password")
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_login_locks_a_client_after_repeated_failures(db, stored):
    policy = LoginPolicy(max_failures=3)
    for _ in range(3):
        assert attempt_login(db, "1.2.3.4", "guess", stored, policy).message == "Wrong password."
    locked = attempt_login(db, "1.2.3.4", "correct horse", stored, policy)
    assert not locked.ok and "Too many" in locked.message
    assert attempt_login(db, "5.6.7.8", "correct horse", stored, policy).ok  # other clients unaffected


def test_lock_expires_after_the_window(db, stored):
    policy = LoginPolicy(max_failures=2, window_minutes=15)
    for _ in range(2):
        attempt_login(db, "c", "guess", stored, policy)
    assert not attempt_login(db, "c", "correct horse", stored, policy).ok
    with db.write() as session:
        session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=16)))
    assert attempt_login(db, "c", "correct horse", stored, policy).ok


def test_global_limit_stops_guessing_from_many_addresses(db, stored):
    policy = LoginPolicy(max_failures=100, max_global_failures=4)
    for i in range(4):
        attempt_login(db, f"10.0.0.{i}", "guess", stored, policy)
    assert not attempt_login(db, "10.0.0.99", "correct horse", stored, policy).ok
