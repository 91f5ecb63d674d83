"""Keeps a study's answer summary (`study.answer_summary`) fresh for the researcher pages without making a
render wait for a whole study: a few participants with new answers are read during the render; many (a
server that never summarised the study, or a large import) are read by a background thread of the server
process, while the page shows how far it got and the last finished numbers.

The thread lives in the server process, not in a separate job process (`workflows.jobs`): the summary it
builds is kept in the process's memory for the pages, and on disk (SQLite) for the next process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from db.engine import Database
from study.answer_summary import AnswerSummary, cached_summary, stale_participants, update_summary

READ_DURING_RENDER = 100  # at most this many participants with new answers are read by a render itself


@dataclass
class Refresh:
    """A background update of one study's summary: participants read so far of those to read."""

    total: int
    done: int = 0
    error: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return not self.finished.is_set()


_REFRESHES: dict[tuple[str, str], Refresh] = {}  # (database url, slug) -> the latest background update
_LOCK = threading.Lock()


def fresh_summary(db: Database, slug: str) -> tuple[AnswerSummary | None, Refresh | None]:
    """(summary, refresh): the summary, brought up to date here when few participants have new answers
    (`READ_DURING_RENDER`);
    otherwise the last finished one (None if never computed) and the background `Refresh` reading the rest
    (started here if none is running). `refresh` is also returned when its last run failed."""
    key = (str(db.engine.url), slug)
    with _LOCK:
        running = _REFRESHES.get(key)
        if running is not None and running.running:
            return cached_summary(db, slug), running
    summary = cached_summary(db, slug)
    stale = stale_participants(db, slug, summary)
    if not stale:
        return summary, running if running is not None and running.error else None
    if len(stale) <= READ_DURING_RENDER:
        return update_summary(db, slug), None
    return summary, _start(db, slug, key, stale)


def _start(db: Database, slug: str, key: tuple[str, str], stale: list[int]) -> Refresh:
    with _LOCK:
        running = _REFRESHES.get(key)
        if running is not None and running.running:
            return running
        refresh = _REFRESHES[key] = Refresh(total=len(stale))

    def read() -> None:
        def progress(done: int, total: int) -> None:
            refresh.done, refresh.total = done, total

        try:
            update_summary(db, slug, progress)
        except Exception as error:  # shown on the page; the next render tries again
            refresh.error = f"{type(error).__name__}: {error}"
        finally:
            refresh.finished.set()

    threading.Thread(target=read, name=f"summary-{slug}", daemon=True).start()
    return refresh
