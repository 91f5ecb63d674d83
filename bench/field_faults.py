"""Field faults: participants answering through one app process, or two processes + nginx + PostgreSQL,
while faults are injected; then the database is compared with what every participant gave.

Participants are plain-HTTP clients that follow the browser's protocol (an outbox that forgets an answer only
when the server stored it or refused it with 409, retries everything else with backoff, and takes a fresh
token after a 401 as a reloaded page would), plus optional real browser participants (Debian's chromium).
Faults, one per run: none; offline (each participant offline for 20 s at a random moment); failures (30 % of
requests fail: half never reach the server, half lose the server's answer, so the retry is a duplicate);
latency (every request delayed 100-600 ms); restart (an app process killed and restarted 20 s later);
key_change (an app process restarted with another secret key).

Usage (from the repository root):
    .venv/bin/python -m bench.field_faults [--setups one two] [--faults none offline failures latency restart
        key_change] [--participants 100] [--browsers 0] [--answers 40] [--interval 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from sqlalchemy import select

from db.engine import Database
from db.models import Participant, Response
from study.participation import enter_study, trial_plan
from tests.support.browser_harness import CHROMIUM, CHROMIUM_ARGS, AppServer, prepare_home
from tests.support.deployment import SHARED_KEY, TwoProcessDeployment, migrate
from tests.support.participant_study import FAST_CONFIG, make_stimuli, make_study
from tests.support.pg_temp import TemporaryPostgres
from workflows.participant.tokens import TokenKey

FAULTS = ("none", "offline", "failures", "latency", "restart", "key_change")
OFFLINE_S = 20.0
DOWN_S = 20.0
SECOND_KEY = "second-key-" + "9" * 48


# ---- one participant over plain HTTP -------------------------------------------------------------------
@dataclass
class Tally:
    given: dict[int, int] = field(default_factory=dict)  # trial_index -> chosen position
    acked: set[int] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)


class HttpParticipant:
    """Answers its trials every `interval` s through an outbox with the browser's forgetting rules."""

    def __init__(self, run: FaultRun, external_id: str, seed: int):
        self.run, self.external_id = run, external_id
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.outbox: dict[int, tuple[dict, float]] = {}  # trial_index -> (body, queued at)
        self.offline_until = 0.0
        self.connection: http.client.HTTPConnection | None = None
        self.participant_id = 0
        self.token = ""

    def play(self, answers: int, interval: float, start_delay: float) -> None:
        time.sleep(start_delay)
        entry = enter_study(self.run.db, "field-study", self.external_id)
        self.participant_id = entry.participant_id
        self.token = self.run.token_for(self.participant_id)
        offline_at = (
            time.time() + self.rng.uniform(0, answers * interval) if self.run.fault == "offline" else None
        )
        for trial in trial_plan(self.run.db, self.participant_id)[:answers]:
            if offline_at and time.time() >= offline_at:
                self.offline_until, offline_at = time.time() + OFFLINE_S, None
            self._answer(trial)
            self._flush()
            time.sleep(interval)
        deadline = time.time() + 180
        while self.outbox and time.time() < deadline:
            self._flush()
            time.sleep(0.5)

    def _answer(self, trial) -> None:
        position = self.rng.randrange(3)
        self.tally.given[trial.trial_index] = position
        body = {
            "trial_index": trial.trial_index,
            "shown": list(trial.shown),
            "chosen_position": position,
            "rt_ms": self.rng.uniform(FAST_CONFIG.min_valid_rt_ms + 400, 3000),
            "client_onset_ms": time.time() * 1000 - 1000,
            "input_modality": "keyboard",
            "timed_out": False,
        }
        self.outbox[trial.trial_index] = (body, time.perf_counter())

    def _flush(self) -> None:
        for trial_index, (body, queued) in list(self.outbox.items()):
            status, answer = self._post(body | {"token": self.token})
            if status == 200 or (status == 409 and answer.get("status") == "rejected"):
                del self.outbox[trial_index]
                self.tally.acked.add(trial_index)
                self.tally.latencies_ms.append((time.perf_counter() - queued) * 1000)
            elif status == 401:
                self.token = self.run.token_for(self.participant_id)  # a reload: the page's fresh token

    def _post(self, body: dict) -> tuple[int, dict]:
        if time.time() < self.offline_until:
            return 0, {}
        if self.run.fault == "latency":
            time.sleep(self.rng.uniform(0.1, 0.6))
        dropped = self.run.fault == "failures" and self.rng.random() < 0.3
        if dropped and self.rng.random() < 0.5:
            return 0, {}  # never reached the server
        try:
            self.connection = self.connection or http.client.HTTPConnection(*self.run.address, timeout=30)
            self.connection.request(
                "POST", "/api/responses", json.dumps(body), {"Content-Type": "application/json"}
            )
            reply = self.connection.getresponse()
            status, text = reply.status, reply.read()
        except (OSError, http.client.HTTPException):
            self.connection = None
            return 0, {}
        if dropped:
            return 0, {}  # stored, but the answer was lost on the way back: the retry is a duplicate
        try:
            return status, json.loads(text)
        except ValueError:
            return status, {}


# ---- one run: a set-up, a fault, many participants -----------------------------------------------------
@dataclass
class FaultRun:
    setup: str
    fault: str
    db: Database
    url: str
    restart: Callable[[str | None], None]  # kill an app process, wait, start it (with a new key if given)
    keys: list[TokenKey]

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def token_for(self, participant_id: int) -> str:
        return self.keys[-1].token(participant_id)


def _server_fault(run: FaultRun, after_s: float) -> threading.Thread:
    def inject() -> None:
        time.sleep(after_s)
        if run.fault == "restart":
            run.restart(None)
        elif run.fault == "key_change":
            run.keys.append(TokenKey(SECOND_KEY.encode(), "bench"))
            run.restart(SECOND_KEY)

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    return thread


async def _browser_participant(browser, run: FaultRun, external_id: str, deadline: float, seed: int) -> Tally:
    """A real page answering ~1 s after each onset, with the run's fault applied to its own network."""
    from playwright.async_api import expect

    rng = random.Random(seed)
    context = await browser.new_context(base_url=run.url, viewport={"width": 1280, "height": 800})
    await context.add_init_script(
        "window.__al={responses:[],acks:[]};"
        "addEventListener('alignlab:response',e=>__al.responses.push(e.detail));"
        "addEventListener('alignlab:ack',e=>{if(e.detail.id&&e.detail.id.startsWith('r:'))__al.acks.push(e.detail)});"
        "addEventListener('alignlab:onset',e=>setTimeout(()=>dispatchEvent(new KeyboardEvent('keydown',"
        "{key:['ArrowLeft','ArrowDown','ArrowRight'][e.detail.trial_index%3]})),1000));"
    )
    if run.fault in ("failures", "latency"):

        async def fault(route):
            if run.fault == "latency":
                await asyncio.sleep(rng.uniform(0.1, 0.6))
            elif rng.random() < 0.3:
                await route.abort("connectionreset")
                return
            await route.continue_()

        await context.route("**/api/**", fault)
    page = await context.new_page()
    page.set_default_timeout(180_000)
    await page.goto(f"/?study=field-study&PROLIFIC_PID={external_id}")
    await _consent_and_instructions(page)
    went_offline = None
    while time.time() < deadline and not await page.get_by_text("Your code").is_visible():
        if run.fault == "offline" and went_offline is None and rng.random() < 0.05:
            went_offline = time.time()
            await context.set_offline(True)
        if went_offline and time.time() - went_offline > OFFLINE_S:
            await context.set_offline(False)
        intro = page.get_by_test_id("al-intro")
        if await intro.is_visible() and await page.get_by_test_id("al-continue").is_enabled():
            await page.keyboard.press("Space")
        almost_done = page.get_by_text("Almost done")
        if await almost_done.is_visible():
            await page.get_by_role("textbox").fill("bench")
            await _click_until_gone(page.get_by_role("button", name="Finish"), almost_done)
        await asyncio.sleep(0.3)
    await context.set_offline(False)
    await expect(page.get_by_text("Your code")).to_be_visible(timeout=60_000)
    log = await page.evaluate("() => window.__al")
    await context.close()
    tally = Tally()
    tally.given = {r["trial_index"]: r["position"] for r in log["responses"]}
    tally.acked = {int(a["id"][2:]) for a in log["acks"]}
    tally.latencies_ms = [a["latencyMs"] for a in log["acks"]]
    return tally


async def _consent_and_instructions(page) -> None:
    """Consent, demographics and the instruction pages, each step waiting for the next page as a participant
    does. On a loaded machine a click sent while Streamlit is still redrawing can be lost; like a person,
    the participant clicks again when nothing happened after 10 s (counted in `LOST_CLICKS`)."""
    await page.get_by_role("button", name="I agree and want to take part").click()
    age = page.get_by_label("Age in years")
    await age.fill("30")
    await _click_until_gone(page.get_by_role("button", name="Continue"), age)
    while True:
        caption = await page.get_by_text(re.compile(r"^Page \d+ of \d+$")).inner_text()
        number, total = (int(x) for x in re.findall(r"\d+", caption))
        if number == total:
            shown = page.get_by_text(caption, exact=True)
            await _click_until_gone(page.get_by_role("button", name="Start the practice"), shown)
            await page.get_by_test_id("al-intro").wait_for()
            return
        shown = page.get_by_text(caption, exact=True)
        await _click_until_gone(page.get_by_role("button", name="Next"), shown)


LOST_CLICKS: list[str] = []


async def _click_until_gone(button, gone, attempts: int = 6) -> None:
    """Click `button` until `gone` (what marks the current page) disappears. A click counts as lost only
    when the page still shows `gone` after 10 s; the page may also move on late, after the wait, which is
    slow, not lost, so the button is looked up again (briefly) rather than waited for."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import expect

    name = await button.inner_text()
    for _ in range(attempts):
        try:
            await button.click(timeout=30_000)  # waits out a minimum viewing time
        except PlaywrightError:
            if not await gone.is_visible():
                return
            raise
        try:
            await expect(gone).to_be_hidden(timeout=10_000)
            return
        except AssertionError:
            if await gone.is_visible():
                LOST_CLICKS.append(name)
    raise AssertionError(f"{name!r} did nothing after {attempts} clicks")


async def _browsers(run: FaultRun, n: int, deadline: float) -> list[tuple[str, Tally]]:
    if n == 0:
        return []
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ids = [f"{run.setup}-{run.fault}-browser-{k}" for k in range(n)]
        tallies = await asyncio.gather(
            *(_browser_participant(browser, run, i, deadline, k) for k, i in enumerate(ids))
        )
        await browser.close()
    return list(zip(ids, tallies, strict=True))


def run_fault(run: FaultRun, args) -> dict:
    people = [
        HttpParticipant(run, f"{run.setup}-{run.fault}-http-{k:03d}", k) for k in range(args.participants)
    ]
    threads = [
        threading.Thread(target=p.play, args=(args.answers, args.interval, args.interval * k / len(people)))
        for k, p in enumerate(people)
    ]
    started = time.time()
    for thread in threads:
        thread.start()
    injector = _server_fault(run, args.answers * args.interval / 3)
    deadline = started + args.answers * args.interval + 600
    browser_tallies = asyncio.run(_browsers(run, args.browsers, deadline))
    for thread in threads:
        thread.join()
    injector.join()
    tallies = [(p.external_id, p.tally) for p in people] + browser_tallies
    return _compare_with_database(run.db, tallies) | {"wall_s": time.time() - started}


def _compare_with_database(db: Database, tallies: list[tuple[str, Tally]]) -> dict:
    with db.read() as session:
        rows = session.execute(
            select(
                Participant.external_id, Response.trial_index, Response.chosen_position, Response.timed_out
            )
            .join(Response, Response.participant_id == Participant.id)
            .where(Participant.external_id.in_([external_id for external_id, _ in tallies]))
        ).all()
    stored: dict[tuple[str, int], list] = {}
    for external_id, trial_index, position, timed_out in rows:
        stored.setdefault((external_id, trial_index), []).append((position, timed_out))
    given = lost = duplicated = wrong = spurious = acked = 0
    latencies: list[float] = []
    for external_id, tally in tallies:
        given += len(tally.given)
        acked += len(tally.acked)
        latencies += tally.latencies_ms
        for trial_index, position in tally.given.items():
            found = stored.get((external_id, trial_index), [])
            lost += not found
            duplicated += max(0, len(found) - 1)
            spurious += any(timed_out for _, timed_out in found)
            wrong += any(p != position and not t for p, t in found)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (np.nan,) * 3
    return dict(
        given=given,
        acked=acked,
        stored=len(rows),
        lost=lost,
        duplicated=duplicated,
        wrong=wrong,
        spurious_timeouts=spurious,
        p50=p50,
        p95=p95,
        p99=p99,
    )


# ---- set-ups ------------------------------------------------------------------------------------------
def wait_until_idle(servers: list[AppServer], timeout_s: float = 180.0) -> float:
    """Wait until the app processes are idle (< 10 % of a core over 2 s): a fresh process compiles UMAP in
    the background first, which would otherwise be measured as ack latency. Returns the seconds waited."""
    started = time.time()

    def cpu_seconds() -> float:
        total = 0.0
        for server in servers:
            fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    while time.time() - started < timeout_s:
        before = cpu_seconds()
        time.sleep(2)
        if (cpu_seconds() - before) / 2 < 0.1 * len(servers):
            break
    return time.time() - started


def _study(db: Database, home: Path, answers: int) -> None:
    per_block = max(4, answers // 2)
    make_study(
        db,
        home,
        "field-study",
        stimulus_ids=make_stimuli(db, home),
        n_practice=0,
        n_blocks=2,
        per_block=per_block,
        participants_per_list=10_000,
    )


def _restarter(server: AppServer) -> Callable[[str | None], None]:
    """The `restart` fault for one app process: kill it, leave it down DOWN_S seconds, start it again (with
    another secret key if one is given)."""

    def restart(new_key: str | None) -> None:
        server.kill()
        time.sleep(DOWN_S)
        if new_key:
            server.extra_env["ALIGNLAB_SECRET_KEY"] = new_key
        server.start()

    return restart


def _fault_run(setup: str, fault: str, db: Database, url: str, server: AppServer) -> FaultRun:
    return FaultRun(setup, fault, db, url, _restarter(server), [TokenKey(SHARED_KEY.encode(), "bench")])


def run_one_process(args, fault: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="alignlab-field-"))
    db = prepare_home(home)
    _study(db, home, args.answers)
    server = AppServer(home, extra_env={"ALIGNLAB_SECRET_KEY": SHARED_KEY}).start()
    wait_until_idle([server])
    try:
        return run_fault(_fault_run("one", fault, db, server.url, server), args)
    finally:
        server.stop()
        db.dispose()


def run_two_processes(args, fault: str) -> dict:
    home = Path(tempfile.mkdtemp(prefix="alignlab-field2-"))
    with TemporaryPostgres(database="field", max_connections=300) as postgres:
        migrate(postgres.url, home)
        db = Database.from_url(postgres.url)
        _study(db, home, args.answers)
        setup = TwoProcessDeployment(home, postgres).start()
        wait_until_idle(setup.apps)
        try:  # the restart faults hit the first of the two app processes
            return run_fault(_fault_run("two", fault, db, setup.url, setup.apps[0]), args)
        finally:
            setup.stop()
            db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", default=["one", "two"], choices=["one", "two"])
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--participants", type=int, default=100, help="plain-HTTP participants")
    parser.add_argument("--browsers", type=int, default=0, help="browser participants (Debian's chromium)")
    parser.add_argument("--answers", type=int, default=40, help="answers per participant")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between a participant's answers")
    args = parser.parse_args()
    header = (
        f"{'setup':6} {'fault':11} {'given':>6} {'acked':>6} {'stored':>6} {'lost':>5} {'dup':>4} "
        f"{'wrong':>5} {'spur.TO':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'wall s':>7}"
    )
    print(
        f"{args.participants} HTTP + {args.browsers} browser participants, {args.answers} answers each, "
        f"one every {args.interval} s\n{header}",
        flush=True,
    )
    runners = {"one": run_one_process, "two": run_two_processes}
    for setup in args.setups:
        for fault in args.faults:
            r = runners[setup](args, fault)
            print(
                f"{setup:6} {fault:11} {r['given']:>6} {r['acked']:>6} {r['stored']:>6} {r['lost']:>5} "
                f"{r['duplicated']:>4} {r['wrong']:>5} {r['spurious_timeouts']:>7} {r['p50']:>8.1f} "
                f"{r['p95']:>8.1f} {r['p99']:>8.1f} {r['wall_s']:>7.0f}",
                flush=True,
            )
    if args.browsers:
        print(f"browser clicks repeated after 10 s without effect: {dict(Counter(LOST_CLICKS)) or 0}")


if __name__ == "__main__":
    main()
