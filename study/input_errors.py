"""Row-level problems in researcher input (image folders, manifests, design files), reported all at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def read_text_file(path: Path, expected: str) -> str:
    """The file's text, decoded as UTF-8 (a BOM is dropped); InputRejected naming the file and what it
    seems to be instead when it is empty, UTF-16, binary or in another encoding (Latin-1, Windows-1252)."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problem = "is UTF-16 text"
    elif b"\0" in data:
        problem = "is a binary file, not text"
    elif not data.strip():
        problem = "is empty"
    else:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            problem = (
                f"is not UTF-8 text (byte {data[error.start]:#04x} on line {line}: Latin-1 or Windows-1252?)"
            )
    raise InputRejected(path.name, [RowProblem(path.name, problem, f"{expected}, saved as UTF-8 text")])
