"""The data directory: resolved without side effects, created only by ensure_home()."""

from __future__ import annotations

from common.settings import (
    configured_home,
    data_home,
    ensure_home,
    public_gallery_enabled,
    trusted_proxies,
)


def test_resolving_the_home_creates_nothing_and_ensure_home_creates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    assert data_home() == (tmp_path / "home").resolve() and not (tmp_path / "home").exists()
    assert ensure_home() == data_home() and (tmp_path / "home").is_dir()


def test_unset_home_is_data_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert configured_home() is None and data_home() == (tmp_path / "data").resolve()


def test_a_new_data_directory_is_private_and_an_existing_one_keeps_its_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "new" / "home"))
    assert ensure_home().stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("ALIGNLAB_HOME", str(shared))
    assert ensure_home().stat().st_mode & 0o777 == 0o755


def test_trusted_proxies_and_the_public_gallery_are_off_unless_configured(monkeypatch):
    monkeypatch.delenv("ALIGNLAB_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("ALIGNLAB_PUBLIC_GALLERY", raising=False)
    assert trusted_proxies() == () and not public_gallery_enabled()
    monkeypatch.setenv("ALIGNLAB_TRUSTED_PROXIES", " 127.0.0.1, 10.0.0.0/8 ,")
    monkeypatch.setenv("ALIGNLAB_PUBLIC_GALLERY", "1")
    assert trusted_proxies() == ("127.0.0.1", "10.0.0.0/8") and public_gallery_enabled()
