"""Real-browser harness: a `streamlit run app/server.py` on loopback with its own data directory and
database, and Debian's chromium driven by Playwright. Used by the browser tests and the benches."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from sqlalchemy import select

from db.engine import Database
from db.models import Base, Participant, Response
from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def prepare_home(home: Path) -> Database:
    """A data directory with a SQLite database holding the current schema."""
    home.mkdir(parents=True, exist_ok=True)
    database = Database.from_url(f"sqlite:///{home / 'alignlab.db'}")
    Base.metadata.create_all(database.engine)
    return database


@dataclass
class AppServer:
    """One app process (`streamlit run app/server.py`); `kill()` is SIGKILL, like a crash."""

    home: Path
    port: int = field(default_factory=free_port)
    script: str = "app/server.py"
    base_path: str = ""  # server.baseUrlPath, e.g. "/lab" (as behind a proxy that forwards only that path)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. ALIGNLAB_SECRET_KEY for a key change

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ALIGNLAB_HOME=str(self.home),
            DATABASE_URL=f"sqlite:///{self.home / 'alignlab.db'}",
            HF_HUB_OFFLINE="1",
            PYTHONPATH=str(ROOT),
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> AppServer:
        self.log_path = self.home / f"server-{int(time.time() * 1000)}.log"
        command = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            self.script,
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
            "--server.runOnSave",
            "false",
        ] + (["--server.baseUrlPath", self.base_path] if self.base_path else [])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"app server not healthy within {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# ---- driving a participant -------------------------------------------------------------------------
EVENT_LOG_SCRIPT = """
window.__al = {onsets: [], responses: [], acks: [], load: Math.random()};
window.addEventListener('alignlab:onset', (e) => window.__al.onsets.push(e.detail));
window.addEventListener('alignlab:response', (e) => window.__al.responses.push(e.detail));
window.addEventListener('alignlab:ack', (e) => window.__al.acks.push(e.detail));
"""
KEYS = ("ArrowLeft", "ArrowDown", "ArrowRight")


def new_participant_page(browser, base_url: str):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    context.add_init_script(EVENT_LOG_SCRIPT)
    return context.new_page()


def study_url(slug: str, pid: str | None = None) -> str:
    return f"/?study={slug}" + (f"&PROLIFIC_PID={pid}&STUDY_ID=st-1&SESSION_ID=se-{pid}" if pid else "")


def go_through_intro_pages(page, *, age: int = 30) -> None:
    """Consent, demographics and the instruction pages (waiting out their minimum viewing time); each
    click waits for the next page, as a participant would."""
    page.get_by_role("button", name="I agree and want to take part").click()
    page.get_by_label("Age in years").fill(str(age))
    click_until_gone(page.get_by_role("button", name="Continue"), page.get_by_text("About you"))
    go_through_instructions(page)


def click_until_gone(button, page_marker, *, attempts: int = 3, wait_ms: float = 10_000) -> None:
    """Click and wait for the page to move on; a click that did nothing within `wait_ms` is repeated, as a
    participant would, and reported as a warning (a Streamlit click sent while the page redraws under heavy
    load was seen lost; nothing is stored wrong when it happens, but it should stay rare and visible). A page
    that moves on just after the wait was slow, not deaf: it is not clicked again."""
    from playwright.sync_api import expect

    for attempt in range(attempts):
        if attempt and not page_marker.is_visible():
            return
        button.click()
        try:
            expect(page_marker).to_be_hidden(timeout=wait_ms)
            return
        except AssertionError:
            warnings.warn(
                f"click on {button} did nothing within {wait_ms / 1000:.0f} s (attempt {attempt + 1})",
                stacklevel=2,
            )
    raise AssertionError(f"{button} did nothing after {attempts} clicks")


def go_through_instructions(page) -> None:
    """The paged instructions, each page waited out, up to the first block's intro."""
    while True:
        caption = page.get_by_text(re.compile(r"^Page \d+ of \d+$")).inner_text()
        number, total = (int(x) for x in re.findall(r"\d+", caption))
        if number == total:
            page.get_by_role("button", name="Start the practice").click(
                timeout=15_000
            )  # enabled after the minimum
            page.get_by_test_id("al-intro").wait_for()
            return
        page.get_by_role("button", name="Next").click(timeout=15_000)
        page.get_by_text(f"Page {number + 1} of {total}", exact=True).wait_for()


def onsets(page) -> list[dict]:
    return page.evaluate("() => window.__al.onsets")


def shown_ids(page) -> list[int]:
    """Stimulus ids of the three images on screen, left to right (each slot names the stimulus it shows)."""
    return [int(page.get_by_test_id(f"al-slot-{p}").get_attribute("data-stimulus")) for p in range(3)]


def wait_for_state(page, seen_onsets: int, timeout: float = 30.0) -> str:
    """'trial' (a new onset), 'intro', 'strategy' or 'end'."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if page.evaluate("() => window.__al ? window.__al.onsets.length : 0") > seen_onsets:
                return "trial"
            if page.get_by_test_id("al-intro").is_visible():
                return "intro"
            if page.get_by_text("Almost done").is_visible():
                return "strategy"
            if page.get_by_text("Your code").is_visible():
                return "end"
        except Exception:  # the page is navigating or re-rendering; look again
            pass
        time.sleep(0.03)
    raise TimeoutError(f"no trial, intro, strategy or end page within {timeout} s")


def continue_when_loaded(page, timeout_ms: float = 60_000) -> None:
    """The intro's Continue is enabled once every image of the block is loaded (or known to be gone)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("al-continue")).to_be_enabled(timeout=timeout_ms)


def respond(page, position: int, via: str) -> None:
    if via == "keyboard":
        page.keyboard.press(KEYS[position])
    else:
        page.get_by_test_id(f"al-slot-{position}").click()


@dataclass
class Played:
    chosen: dict[int, int] = field(default_factory=dict)  # trial_index -> position pressed
    shown: dict[int, list[int]] = field(default_factory=dict)  # trial_index -> stimulus ids on screen
    ended: bool = False
    page_load: float | None = None  # which page load `onsets_handled` counts in
    onsets_handled: int = 0  # onsets of that load already answered (a trial on screen between calls is not)


def play(
    page,
    *,
    via: str = "keyboard",
    choose=lambda index: index % 3,
    max_trials: int | None = None,
    played: Played | None = None,
    answer_delay_s: float = 0.15,
    finish: bool = True,
    respond_with=None,
) -> Played:
    """Answer trials as they appear (intro screens continued with Space or a click) until the end page,
    or until `max_trials` answers were given in this call."""
    played = played or Played()
    given = 0
    load = page.evaluate("() => window.__al.load")
    seen = played.onsets_handled if played.page_load == load else len(onsets(page))
    played.page_load = load
    while max_trials is None or given < max_trials:
        state = wait_for_state(page, seen)
        if state == "intro":
            continue_when_loaded(page)
            if via == "keyboard":
                page.keyboard.press("Space")
            elif via == "touch":
                page.get_by_test_id("al-continue").tap()
            else:
                page.get_by_test_id("al-continue").click()
            page.get_by_test_id("al-intro").wait_for(state="hidden")
        elif state == "trial":
            onset = onsets(page)[seen]
            seen += 1
            played.onsets_handled = seen
            index = onset["trial_index"]
            played.shown[index] = shown_ids(page)
            time.sleep(answer_delay_s)
            (respond_with or respond)(page, choose(index), via)
            played.chosen[index] = choose(index)
            given += 1
        elif state == "strategy":
            if not finish:
                return played
            page.get_by_role("textbox").fill("played by a test")
            click_until_gone(page.get_by_role("button", name="Finish"), page.get_by_text("Almost done"))
        else:
            played.ended = True
            return played
    return played


def receipt_latencies(db: Database, which_participants) -> list[float]:
    """Server receipt time minus the browser's response time (client onset + RT; one machine, one clock) for
    the participants matching `which_participants` (a filter on Participant, e.g. an external-id prefix)."""
    with db.read() as session:
        rows = session.execute(
            select(Response.server_received_at, Response.client_onset_ms, Response.rt_ms)
            .join(Participant, Participant.id == Response.participant_id)
            .where(which_participants)
        ).all()
    return [
        received.replace(tzinfo=received.tzinfo or UTC).timestamp() * 1000 - (onset + rt)
        for received, onset, rt in rows
        if onset and rt is not None
    ]
