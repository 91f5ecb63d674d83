"""The data directory: ``ALIGNLAB_HOME`` is read here and nowhere else.

Resolving the path is free of side effects (many modules ask for it); creating it happens once, explicitly,
through ``ensure_home()`` at the entry points (the CLI, the app, the database engine for a SQLite file).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "ALIGNLAB_HOME"
DEFAULT_HOME = "data"


def configured_home() -> Path | None:
    """``$ALIGNLAB_HOME`` as given, or None when it is not set (callers with their own default use this)."""
    value = os.environ.get(HOME_VARIABLE)
    return Path(value).expanduser() if value else None


def data_home() -> Path:
    """The data directory (``$ALIGNLAB_HOME``, default ``./data``), absolute; not created here."""
    return (configured_home() or Path(DEFAULT_HOME)).resolve()


def ensure_home() -> Path:
    """The data directory, created if missing: called once by each entry point before anything is written."""
    home = data_home()
    home.mkdir(parents=True, exist_ok=True)
    return home
