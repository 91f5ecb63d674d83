"""Row-level problems in researcher input (image folders, manifests, design files), reported all at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class RowProblem:
    """One bad row or file: where it is, what was wrong, and what was expected instead."""

    where: str
    problem: str
    expected: str = ""

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}"
        return f"{text}; expected {self.expected}" if self.expected else text


class InputRejected(ValueError):
    """The whole input was refused because of the listed problems; nothing was stored."""

    def __init__(self, source: str, problems: Sequence[RowProblem]):
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{len(self.problems)} problem(s) in {source}; nothing was imported:"]
        lines += [f"  - {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        super().__init__("\n".join(lines))
