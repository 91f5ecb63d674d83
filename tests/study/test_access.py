"""Researcher login: hashed passwords, constant-time verification, rate-limited attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from db.models import LoginAttempt, utcnow
from study.access import (
    LoginPolicy,
    attempt_login,
    backoff_seconds,
    client_address,
    hash_password,
    verify_password,
)


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


def test_a_guessing_address_backs_off_exponentially_while_others_are_checked(db, stored):
    policy = LoginPolicy(free_failures=3, account_base_delay_s=0, client_max_delay_s=900)
    now = utcnow()
    for _ in range(3):
        assert attempt_login(db, "1.2.3.4", "guess", stored, policy, now=now).message == "Wrong password."
    locked = attempt_login(db, "1.2.3.4", "correct horse", stored, policy, now=now)
    assert not locked.ok and "try again in 1 s" in locked.message  # 2^0 s after the third failure
    assert attempt_login(db, "5.6.7.8", "correct horse", stored, policy, now=now).ok  # others unaffected
    later = now + timedelta(seconds=1)
    assert attempt_login(db, "1.2.3.4", "guess", stored, policy, now=later).message == "Wrong password."
    assert attempt_login(db, "1.2.3.4", "correct horse", stored, policy, now=later).retry_after_s == 2
    assert attempt_login(db, "1.2.3.4", "correct horse", stored, policy, now=later + timedelta(seconds=2)).ok


def test_back_off_ends_with_the_window(db, stored):
    policy = LoginPolicy(free_failures=0, client_max_delay_s=10_000, window_minutes=15)
    attempt_login(db, "c", "guess", stored, policy)
    assert not attempt_login(db, "c", "correct horse", stored, policy).ok
    with db.write() as session:
        session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=16)))
    assert attempt_login(db, "c", "correct horse", stored, policy).ok


def test_the_researcher_gets_in_within_a_minute_after_200_wrong_attempts_from_other_addresses(db, stored):
    """Many guessing addresses slow each other down (account back-off) but cannot lock the researcher out:
    a fresh address is checked at once, and one that mistyped waits at most the account cap (30 s)."""
    now = utcnow()
    for attempt in range(200):
        assert attempt_login(db, f"10.0.{attempt}.1", "guess", stored, now=now).message == "Wrong password."
        now += timedelta(milliseconds=100)
    again = [attempt_login(db, f"10.0.{attempt}.1", "guess", stored, now=now) for attempt in range(200)]
    assert all("try again in" in result.message for result in again)  # repeated guesses: refused unchecked
    assert attempt_login(db, "192.0.2.7", "correct horse", stored, now=now).ok  # the researcher's address
    assert attempt_login(db, "192.0.2.8", "typo", stored, now=now).message == "Wrong password."
    waiting = attempt_login(db, "192.0.2.8", "correct horse", stored, now=now)
    assert not waiting.ok and waiting.retry_after_s <= 30
    assert attempt_login(db, "192.0.2.8", "correct horse", stored, now=now + timedelta(seconds=30)).ok


def test_backoff_is_exponential_and_capped():
    policy = LoginPolicy(
        free_failures=3, client_max_delay_s=900, account_base_delay_s=0.5, account_max_delay_s=30
    )
    assert backoff_seconds(1, 1, policy) == 0  # one typo: try again at once
    assert backoff_seconds(1, 3, policy) == 0.5
    assert backoff_seconds(1, 6, policy) == 4  # 0.5 * 2^(6 - 3)
    assert backoff_seconds(1, 10_000, policy) == 30  # the account cap: under a minute
    assert backoff_seconds(6, 6, policy) == 8  # the address's own: 2^(6 - 3)
    assert backoff_seconds(10_000, 10_000, policy) == 900


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        ("203.0.113.5", None, (), "203.0.113.5"),  # a direct client
        (None, None, (), "127.0.0.1"),  # Streamlit reports a local client as None
        ("198.51.100.9", "198.51.100.9", (), "127.0.0.1"),  # uvicorn believed a local hop's header: undone
        ("203.0.113.5", "198.51.100.9", (), "203.0.113.5"),  # a direct client's header is ignored
        ("198.51.100.9", "1.1.1.1, 198.51.100.9", ("127.0.0.1",), "198.51.100.9"),  # proxy appended it
        (None, "6.6.6.6, 198.51.100.9", ("127.0.0.0/8",), "198.51.100.9"),  # spoofed entries to the left
        ("10.0.0.2", "198.51.100.9, 10.0.0.3", ("10.0.0.0/24",), "198.51.100.9"),  # two trusted proxies
    ],
)
def test_client_address_believes_forwarded_for_only_from_a_configured_proxy(
    peer, forwarded, proxies, expected
):
    assert client_address(peer, forwarded, proxies) == expected
