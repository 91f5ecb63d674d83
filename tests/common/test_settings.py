"""The data directory: resolved without side effects, created only by ensure_home()."""

from __future__ import annotations

from common.settings import configured_home, data_home, ensure_home


def test_resolving_the_home_creates_nothing_and_ensure_home_creates_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    assert data_home() == (tmp_path / "home").resolve() and not (tmp_path / "home").exists()
    assert ensure_home() == data_home() and (tmp_path / "home").is_dir()


def test_unset_home_is_data_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert configured_home() is None and data_home() == (tmp_path / "data").resolve()
