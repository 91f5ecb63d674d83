"""Signed participant tokens for the REST endpoints: the browser proves which participant it speaks for.

The secret comes from `ALIGNLAB_SECRET_KEY` or a file under the data directory created on first use,
so tokens handed out before a server restart stay valid after it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from db.settings import data_home

SECRET_FILENAME = "participant_token.key"


class InvalidToken(ValueError):
    pass


@lru_cache(maxsize=1)
def _secret() -> bytes:
    if os.environ.get("ALIGNLAB_SECRET_KEY"):
        return os.environ["ALIGNLAB_SECRET_KEY"].encode()
    path = data_home() / SECRET_FILENAME
    if not path.exists():
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_hex(32))
        except FileExistsError:  # another process created it first
            pass
    return path.read_text().strip().encode()


def _mac(participant_id: int) -> str:
    return hmac.new(_secret(), f"participant:{participant_id}".encode(), hashlib.sha256).hexdigest()[:32]


def participant_token(participant_id: int) -> str:
    return f"{participant_id}.{_mac(participant_id)}"


def participant_from_token(token: object) -> int:
    """The participant id a token was issued for; InvalidToken if it is malformed or forged."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 64:
        raise InvalidToken("missing or malformed participant token")
    raw_id, mac = token.split(".")
    if not raw_id.isdigit() or not hmac.compare_digest(mac, _mac(int(raw_id))):
        raise InvalidToken("participant token does not verify")
    return int(raw_id)
