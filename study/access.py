"""Researcher login: scrypt password hashes, constant-time checks, and back-off on failed attempts.

The researcher pages show participants' data, so a wrong password must be cheap to refuse and guessing slow,
yet nobody else's failures may lock the researcher out. Two back-offs, both exponential and both applying only
to an address that has itself failed recently (so a fresh address always has its password checked):

- per client address: after `free_failures` failures, the address waits 2^(excess) seconds after its last
  failure, up to `client_max_delay_s` (a lone guesser slows to a crawl);
- per account: after `free_failures` failures of anyone, every address that failed waits
  2^(excess) × `account_base_delay_s` after its own last failure, capped at `account_max_delay_s` (many
  guessing addresses together slow each other down, but a researcher who mistyped once gets their next try
  within that cap, well under a minute).

Attempts refused during a back-off are neither checked nor recorded, so waiting out the delay is enough.
The address is the real client's (`client_address`): `X-Forwarded-For` counts only from a configured proxy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from db.engine import Database
from db.models import LoginAttempt, as_utc, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
HASH_PREFIX = "scrypt"
LOCAL_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class LoginPolicy:
    free_failures: int = 3
    client_max_delay_s: float = 900.0
    account_base_delay_s: float = 0.5
    account_max_delay_s: float = 30.0
    window_minutes: int = 15


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    retry_after_s: float = 0.0


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


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Collection[str]) -> str:
    """The address a login attempt is counted against.

    `peer` is what the web server reports (None for a local connection). The ASGI server (uvicorn) already
    replaces the peer with an `X-Forwarded-For` entry when the connection comes from localhost (its default
    FORWARDED_ALLOW_IPS), which lets anyone behind a local hop choose their address. So when the header is
    present and the reported peer is one of its entries, the real peer was that local hop. The header is
    then honoured only when that hop is one of `trusted_proxies` (ALIGNLAB_TRUSTED_PROXIES): the client is
    the rightmost entry that is not a trusted proxy, the one the proxy itself appended.
    """
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    real_peer = peer or LOCAL_ADDRESS
    if real_peer in hops:
        real_peer = LOCAL_ADDRESS
    if not _is_trusted(real_peer, trusted_proxies):
        return real_peer
    untrusted = [hop for hop in hops if not _is_trusted(hop, trusted_proxies)]
    return untrusted[-1] if untrusted else real_peer


def _is_trusted(address: str, trusted_proxies: Collection[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address in trusted_proxies
    for entry in trusted_proxies:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def attempt_login(
    db: Database,
    client_key: str,
    password: str,
    stored_hash: str,
    policy: LoginPolicy = LoginPolicy(),
    *,
    now: datetime | None = None,
) -> LoginResult:
    """Check a password unless this address is still backing off (see the module docstring); record the
    attempt when it was checked."""
    now = as_utc(now or utcnow())
    client_key = client_key[:128]
    since = now - timedelta(minutes=policy.window_minutes)
    with db.write() as session:
        recent_failures = select(func.count(), func.max(LoginAttempt.attempted_at)).where(
            LoginAttempt.succeeded.is_(False), LoginAttempt.attempted_at >= since
        )
        client_failures, client_last = session.execute(
            recent_failures.where(LoginAttempt.client_key == client_key)
        ).one()
        if client_failures:
            account_failures = session.execute(recent_failures).one()[0]
            wait = backoff_seconds(client_failures, account_failures, policy)
            retry_after = (as_utc(client_last) + timedelta(seconds=wait) - now).total_seconds()
            if retry_after > 0:
                return LoginResult(
                    False,
                    f"Too many failed attempts from this address; try again in {math.ceil(retry_after)} s.",
                    retry_after,
                )
        ok = verify_password(password, stored_hash)
        session.add(LoginAttempt(client_key=client_key, succeeded=ok, attempted_at=now))
    return LoginResult(ok, "" if ok else "Wrong password.")


def backoff_seconds(client_failures: int, account_failures: int, policy: LoginPolicy) -> float:
    """How long an address that failed `client_failures` times waits after its last failure, when the
    account saw `account_failures` failures in the window: the larger of the two back-offs."""
    excess = client_failures - policy.free_failures
    client = min(2.0 ** min(excess, 30), policy.client_max_delay_s) if excess >= 0 else 0.0
    account_excess = account_failures - policy.free_failures
    account = (
        min(policy.account_base_delay_s * 2.0 ** min(account_excess, 30), policy.account_max_delay_s)
        if account_excess >= 0
        else 0.0
    )
    return max(client, account)
