"""Signed participant tokens for the REST endpoints: the browser proves which participant it speaks for.

The key is an explicit object, loaded once when the server starts (`TokenKey.load`) and handed to the REST
routes and the participant page: from `ALIGNLAB_SECRET_KEY`, or else a file under the data directory created
on first use, so tokens handed out before a server restart stay valid after it. Several app processes must
share one key (the same ALIGNLAB_SECRET_KEY, or one data directory). A new key invalidates every token handed
out before; the page hands out a fresh token on every render, so a reload repairs a participant's page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from db.engine import Database
from db.models import Participant, ParticipantStatus

SECRET_FILENAME = "participant_token.key"
SECRET_ENV = "ALIGNLAB_SECRET_KEY"
MAX_TOKEN_CHARS = 64
LOG = logging.getLogger("alignlab.tokens")


class InvalidToken(ValueError):
    pass


@dataclass(frozen=True)
class TokenKey:
    """The secret that signs participant tokens, and where it came from."""

    secret: bytes = field(repr=False)
    source: str  # "ALIGNLAB_SECRET_KEY" or the key file's path
    created: bool = False  # True: the key file did not exist and was written just now

    @classmethod
    def load(cls, home: Path, environ: Mapping[str, str] = os.environ) -> TokenKey:
        """ALIGNLAB_SECRET_KEY if set, else `<home>/participant_token.key` (created if missing, 0600)."""
        if environ.get(SECRET_ENV):
            return cls(environ[SECRET_ENV].encode(), SECRET_ENV)
        path = home / SECRET_FILENAME
        created = False
        if not path.exists():
            try:
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                    handle.write(secrets.token_hex(32))
                created = True
            except FileExistsError:  # another process created it first
                pass
        return cls(path.read_text().strip().encode(), str(path), created)

    def _mac(self, participant_id: int) -> str:
        return hmac.new(self.secret, f"participant:{participant_id}".encode(), hashlib.sha256).hexdigest()[
            :32
        ]

    def token(self, participant_id: int) -> str:
        return f"{participant_id}.{self._mac(participant_id)}"

    def participant(self, token: object) -> int:
        """The participant id a token was issued for; InvalidToken if it is missing, malformed or forged."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("missing or malformed participant token")
        raw_id, mac = token.split(".")
        if not (raw_id.isascii() and raw_id.isdigit()) or not hmac.compare_digest(
            mac.encode(), self._mac(int(raw_id)).encode()
        ):
            raise InvalidToken("participant token does not verify (signed with another key, or forged)")
        return int(raw_id)


def warn_if_new_key(key: TokenKey, db: Database) -> bool:
    """At start-up: a key file created just now while participants exist means every token handed out
    before is invalid (a lost or recreated key file, or a second host without the shared key). Logs a loud
    warning and returns True in that case."""
    if not key.created:
        return False
    try:
        with db.read() as session:
            total = session.scalar(select(func.count()).select_from(Participant)) or 0
            active = (
                session.scalar(select(func.count()).where(Participant.status == ParticipantStatus.STARTED))
                or 0
            )
    except SQLAlchemyError:  # no schema yet (`alignlab db upgrade` not run): no participants either
        return False
    if not total:
        return False
    LOG.warning(
        "\n%s\nA NEW participant token key was just created at %s, but the database already holds %d "
        "participants (%d still in progress). Tokens handed out before are now INVALID: open participant "
        "pages get 401 until they reload. If the old key file was lost or this is another host, restore the "
        "file, or set %s to the same value on every app process.\n%s",
        "!" * 78,
        key.source,
        total,
        active,
        SECRET_ENV,
        "!" * 78,
    )
    return True
