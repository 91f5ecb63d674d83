"""The one config loader: known answers for unknown keys, wrong types, TOML sections and nested configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from common.config import ConfigError, LoadableConfig, config_from_dict, config_from_file, config_from_text


@dataclass(frozen=True)
class Inner:
    by: str = "triplet"
    fraction: float = 0.2


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 10
    rate: float | None = None
    flag: bool = False
    grid: tuple[float, ...] = (1.0,)
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")


def test_unknown_key_is_refused_with_the_known_keys_listed():
    with pytest.raises(ConfigError) as error:
        config_from_dict(Outer, {"name": "x", "stpes": 3})
    assert str(error.value) == (
        "unknown Outer key(s) ['stpes']; known keys: "
        "['extra', 'flag', 'grid', 'inner', 'mode', 'name', 'rate', 'steps']"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": "3"}, "Outer.steps must be a whole number (int); got '3' (str)"),
        ({"steps": True}, "Outer.steps must be a whole number (int); got True (bool)"),
        ({"flag": 1}, "Outer.flag must be true or false (bool); got 1 (int)"),
        ({"rate": "fast"}, "Outer.rate must be a number (float) or null (None); got 'fast' (str)"),
        ({"grid": [1, "x"]}, "Outer.grid[1] must be a number (float); got 'x' (str)"),
        ({"mode": "c"}, "Outer.mode must be one of ['a', 'b']; got 'c' (str)"),
        ({"inner": {"fraction": "half"}}, "Outer.inner.fraction must be a number (float); got 'half' (str)"),
        ({"inner": {"bye": 1}}, "unknown Outer.inner key(s) ['bye']; known keys: ['by', 'fraction']"),
        ({"extra": [1]}, "Outer.extra must be a table (dict); got [1] (list)"),
    ],
)
def test_a_wrong_type_names_the_key_the_expected_type_and_the_value(data, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(Outer, {"name": "x", **data})
    assert str(error.value) == message


def test_values_are_converted_to_the_annotated_types():
    config = config_from_dict(
        Outer, {"name": "x", "rate": 1, "grid": [1, 2.5], "inner": {"fraction": 1}, "extra": {"k": [1]}}
    )
    assert config == Outer("x", rate=1.0, grid=(1.0, 2.5), inner=Inner(fraction=1.0), extra={"k": [1]})
    assert isinstance(config.rate, float) and isinstance(config.grid, tuple)


def test_a_missing_required_key_and_a_post_init_check_are_config_errors():
    with pytest.raises(ConfigError, match=r"Outer needs key\(s\) \['name'\]"):
        config_from_dict(Outer, {})
    with pytest.raises(ConfigError, match="^Outer: steps must be >= 1; got 0$"):
        config_from_dict(Outer, {"name": "x", "steps": 0})


def test_toml_section_table_or_top_level_keys():
    text = 'other = 1\n[outer]\nname = "t"\nsteps = 4\n[outer.inner]\nby = "image"\n'
    assert config_from_text(Outer, text, fmt="toml", section="outer") == Outer("t", 4, inner=Inner("image"))
    assert config_from_text(Outer, 'name = "top"', fmt="toml", section="outer") == Outer("top")


def test_files_by_suffix_and_unreadable_text(tmp_path):
    (tmp_path / "c.json").write_text('{"name": "j", "inner": {"by": "subject"}}')
    (tmp_path / "c.toml").write_text('name = "t"\n')
    assert config_from_file(Outer, tmp_path / "c.json") == Outer("j", inner=Inner("subject"))
    assert config_from_file(Outer, tmp_path / "c.toml") == Outer("t")
    with pytest.raises(ConfigError, match="Outer config is not valid JSON"):
        config_from_text(Outer, "{name: x}")
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        config_from_file(Outer, tmp_path / "missing.json")
    assert issubclass(ConfigError, ValueError)


@dataclass(frozen=True)
class Sectioned(LoadableConfig):
    SECTION = "teacher"
    lr: float = 0.1


def test_the_mixin_gives_every_config_the_same_constructors(tmp_path):
    (tmp_path / "t.toml").write_text("[teacher]\nlr = 1\n")
    assert Sectioned.from_file(tmp_path / "t.toml") == Sectioned(1.0)
    assert Sectioned.from_text('{"teacher": {"lr": 0.5}}') == Sectioned(0.5)
    assert Sectioned.from_dict({}) == Sectioned()
    with pytest.raises(ConfigError, match=r"unknown Sectioned key\(s\) \['SECTION'\]; known keys: \['lr'\]"):
        Sectioned.from_dict({"SECTION": "x"})
