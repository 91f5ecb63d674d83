"""How imported files name a stimulus set's images: by full name, by unique file name, or by index.

An index means nothing without an order. Three rules map indices to images:
- `list`: an explicit image list (one name per line; line 1 is index `base`), the only rule that cannot
  be misread;
- `natural`: names in natural order ("2.jpg" before "10.jpg"), what numbered files mean;
- `text`: names in plain text order ("10.jpg" before "2.jpg"), what our own THINGS export writes.
With no rule stated, indices are read in natural order only when it equals the text order (then both
readings agree); otherwise the file is refused with the reason -- never silently mapped to wrong images.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

IndexOrder = Literal["natural", "text", "list"]
INDEX_ORDERS: tuple[str, ...] = ("natural", "text")


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: '2.jpg' < '10.jpg'."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    )


class AmbiguousIndexOrder(ValueError):
    """Indices whose images depend on an unstated order: the whole file is refused, not a row."""


@dataclass(frozen=True)
class IndexRule:
    """Which order integer image references count in, and from which base (0 or 1)."""

    order: IndexOrder | None = None  # None: natural if it agrees with text order, else refused
    image_list: tuple[str, ...] = ()
    base: int = 0
    image_list_name: str = ""

    @classmethod
    def from_options(
        cls, order: str | None = None, image_list: str | Path | None = None, base: int = 0
    ) -> IndexRule:
        """The rule the CLI options state: `--image-list FILE` or `--index-order natural|text`."""
        if base not in (0, 1):
            raise ValueError(f"index base must be 0 or 1, got {base}")
        if image_list is not None:
            if order not in (None, "list"):
                raise ValueError("give either an image list or an index order, not both")
            path = Path(image_list)
            if not path.is_file():
                raise FileNotFoundError(f"image list {path} does not exist")
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
            names = tuple(line for line in lines if line and not line.startswith("#"))
            return cls("list", names, base, path.name)
        if order not in (None, *INDEX_ORDERS):
            raise ValueError(f"index order must be one of {INDEX_ORDERS}, got {order!r}")
        return cls(cast(IndexOrder | None, order), (), base)  # checked just above


class StimulusNames:
    """Finds stimuli (objects with `id` and `name`) by full name, by unique file name, or by index."""

    def __init__(self, stimuli: Sequence[Any], rule: IndexRule = IndexRule()):
        self.by_name = {s.name: s for s in stimuli}
        self.by_basename: dict[str, list[Any]] = defaultdict(list)
        for s in stimuli:
            self.by_basename[PurePosixPath(s.name).name].append(s)
        self.stimuli, self.rule = list(stimuli), rule
        self._ordered: list[Any] | None = None

    def find(self, text: str) -> Any:
        """The stimulus called `text`; raises ValueError(problem, expected) when there is none or several."""
        if text in self.by_name:
            return self.by_name[text]
        matches = self.by_basename.get(PurePosixPath(text.replace("\\", "/")).name, [])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(
                f"image {text!r} matches {len(matches)} stimuli ({', '.join(m.name for m in matches[:3])})",
                "a full stimulus name such as 'animal/dog/1.jpg'",
            )
        raise ValueError(
            f"unknown image {text!r}: not in the stimulus set", "a stimulus name or a file name of the set"
        )

    def at(self, text: str) -> Any:
        """The stimulus at index `text` under the rule; AmbiguousIndexOrder when the rule is unstated and
        text and natural order disagree."""
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"{text!r} is not an index", "whole numbers")
        ordered = self.in_index_order()
        position = int(text) - self.rule.base
        if not 0 <= position < len(ordered):
            first = self.rule.base
            raise ValueError(
                f"index {text} is out of range",
                f"{first}..{first + len(ordered) - 1} "
                + (
                    f"(the image list has {len(ordered)} images)"
                    if self.rule.order == "list"
                    else f"(the set has {len(ordered)} stimuli)"
                ),
            )
        return ordered[position]

    def in_index_order(self) -> list[Any]:
        if self._ordered is None:
            self._ordered = self._order()
        return self._ordered

    def _order(self) -> list[Any]:
        if self.rule.order == "list":
            return self._listed()
        text = sorted(self.stimuli, key=lambda s: s.name)
        natural = sorted(self.stimuli, key=lambda s: natural_key(s.name))
        if self.rule.order == "text":
            return text
        if self.rule.order is None and [s.id for s in text] != [s.id for s in natural]:
            first = next(i for i, (a, b) in enumerate(zip(text, natural, strict=True)) if a.id != b.id)
            raise AmbiguousIndexOrder(
                f"integer image indices are ambiguous: index {first + self.rule.base} is "
                f"{text[first].name!r} in text order but {natural[first].name!r} in natural order",
                "an explicit mapping: --image-list FILE (one image name per line), or "
                "--index-order natural ('2.jpg' before '10.jpg') or text ('10.jpg' before '2.jpg')",
            )
        return natural

    def _listed(self) -> list[Any]:
        listed, problems = [], []
        for line, name in enumerate(self.rule.image_list, start=1):
            try:
                listed.append(self.find(name))
            except ValueError as error:
                problems.append(f"entry {line}: {error.args[0]}")
        if len({s.id for s in listed}) != len(listed):
            problems.append("an image appears more than once")
        if problems or not listed:
            raise AmbiguousIndexOrder(
                f"image list {self.rule.image_list_name}: " + ("; ".join(problems[:3]) or "is empty"),
                "one image name of the stimulus set per line, each once",
            )
        return listed
