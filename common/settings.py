"""Process settings from the environment, read here and nowhere else: the data directory (``ALIGNLAB_HOME``),
the proxies whose ``X-Forwarded-For`` is believed (``ALIGNLAB_TRUSTED_PROXIES``) and whether the public map
gallery is on (``ALIGNLAB_PUBLIC_GALLERY``).

Resolving the path is free of side effects (many modules ask for it); creating it happens once, explicitly,
through ``ensure_home()`` at the entry points (the CLI, the app, the database engine for a SQLite file).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "ALIGNLAB_HOME"
DEFAULT_HOME = "data"
PROXIES_VARIABLE = "ALIGNLAB_TRUSTED_PROXIES"
GALLERY_VARIABLE = "ALIGNLAB_PUBLIC_GALLERY"
HOME_MODE = 0o700  # participants' data: only this machine's user may list or read it


def configured_home() -> Path | None:
    """``$ALIGNLAB_HOME`` as given, or None when it is not set (callers with their own default use this)."""
    value = os.environ.get(HOME_VARIABLE)
    return Path(value).expanduser() if value else None


def data_home() -> Path:
    """The data directory (``$ALIGNLAB_HOME``, default ``./data``), absolute; not created here."""
    return (configured_home() or Path(DEFAULT_HOME)).resolve()


def ensure_home() -> Path:
    """The data directory, created if missing (mode 700, whatever the umask): called once by each entry point
    before anything is written. An existing directory keeps its mode: it may be shared on purpose."""
    home = data_home()
    if not home.exists():
        home.mkdir(parents=True, mode=HOME_MODE, exist_ok=True)
        home.chmod(HOME_MODE)
    return home


def trusted_proxies() -> tuple[str, ...]:
    """Addresses or networks (comma-separated in ``$ALIGNLAB_TRUSTED_PROXIES``, e.g. ``127.0.0.1``) of the
    reverse proxies whose ``X-Forwarded-For`` names the client; none by default, so the header is ignored."""
    return tuple(part.strip() for part in os.environ.get(PROXIES_VARIABLE, "").split(",") if part.strip())


def public_gallery_enabled() -> bool:
    """Whether the researcher turned on the public, read-only map gallery (``ALIGNLAB_PUBLIC_GALLERY=1``)."""
    return os.environ.get(GALLERY_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}
