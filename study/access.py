"""Researcher login: scrypt password hashes, constant-time checks, and rate-limited attempts.

The researcher pages show participants' data, so a wrong password must be cheap to refuse and
expensive to guess: each client gets `max_failures` tries per window, and all clients together
`max_global_failures`, before further attempts are refused without checking the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from db.engine import Database
from db.models import LoginAttempt, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
HASH_PREFIX = "scrypt"


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    max_global_failures: int = 50
    window_minutes: int = 15


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$<salt>$<hash>` (base64); store this, never the password."""
    if not password:
        raise ValueError("the researcher password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join([HASH_PREFIX, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored_hash: str) -> bool:
    """Constant-time comparison of the scrypt digest."""
    try:
        prefix, salt_b64, digest_b64 = stored_hash.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError as error:
        raise ValueError(
            "the stored researcher password hash is malformed; expected scrypt$<salt>$<hash> "
            "as written by `alignlab researcher hash-password`"
        ) from error
    if prefix != HASH_PREFIX:
        raise ValueError(f"unknown password hash scheme {prefix!r}; expected {HASH_PREFIX!r}")
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return hmac.compare_digest(digest, expected)


def attempt_login(
    db: Database, client_key: str, password: str, stored_hash: str, policy: LoginPolicy = LoginPolicy()
) -> LoginResult:
    """Check a password unless this client (or everyone) has failed too often recently; record the attempt."""
    since = utcnow() - timedelta(minutes=policy.window_minutes)
    with db.write() as session:
        failures = select(func.count()).where(
            LoginAttempt.succeeded.is_(False), LoginAttempt.attempted_at >= since
        )
        client_failures = session.execute(failures.where(LoginAttempt.client_key == client_key)).scalar_one()
        if (
            client_failures >= policy.max_failures
            or session.execute(failures).scalar_one() >= policy.max_global_failures
        ):
            return LoginResult(
                False, f"Too many failed attempts; try again in {policy.window_minutes} minutes."
            )
        ok = verify_password(password, stored_hash)
        session.add(LoginAttempt(client_key=client_key[:128], succeeded=ok))
    return LoginResult(ok, "" if ok else "Wrong password.")
