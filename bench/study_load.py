"""Many participants at once on one app process: N browser contexts (Debian chromium) each answering one
trial every `interval` seconds for `minutes` minutes against `streamlit run app/server.py` on loopback.

Reports lost responses (given in the browser vs rows in the database), the acknowledgement latency of the
response POSTs (response -> row committed) and the response -> next-onset gap beyond the fixation; then the
same response rate from plain HTTP clients on the same process, to separate the server's share of the
latency from the browsers' (20 headless renderers compete for the same CPU cores as the server).

    .venv/bin/python -m bench.study_load [--participants 20] [--minutes 5] [--interval 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from db.models import Participant, ParticipantStatus, Response
from tests.support.browser_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    AppServer,
    prepare_home,
    receipt_latencies,
)
from tests.support.participant_study import make_stimuli, make_study, straight_to_trials

ITI_MS = 500
LOG_SCRIPT = """
window.__al = {onsets: [], responses: [], acks: []};
window.addEventListener('alignlab:onset', (e) => window.__al.onsets.push(e.detail));
window.addEventListener('alignlab:response', (e) => window.__al.responses.push(e.detail));
window.addEventListener('alignlab:ack', (e) => window.__al.acks.push(e.detail));
"""
RESPONDER = """
window.addEventListener('alignlab:onset', (e) => setTimeout(() => window.dispatchEvent(
  new KeyboardEvent('keydown', {key: ['ArrowLeft', 'ArrowDown', 'ArrowRight'][e.detail.trial_index %% 3]})
), %d));
"""


async def participant(
    browser, url: str, pid: str, respond_after_ms: int, deadline: float, delay_s: float
) -> dict:
    """One participant arriving after `delay_s`: consent, then every trial answered `respond_after_ms` after
    its onset; breaks are continued at once. Returns the page's log of onsets, responses and acks."""
    from playwright.async_api import expect

    await asyncio.sleep(delay_s)
    context = await browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
    await context.add_init_script(LOG_SCRIPT)
    await context.add_init_script(RESPONDER % respond_after_ms)
    page = await context.new_page()
    page.set_default_timeout(120_000)
    await page.goto(f"/?study=load-study&PROLIFIC_PID={pid}")
    await page.get_by_role("button", name="I agree and want to take part").click()
    while time.time() < deadline:
        intro, end = page.get_by_test_id("al-intro"), page.get_by_text("Your code")
        if await end.is_visible():
            break
        if await intro.is_visible():
            await expect(page.get_by_test_id("al-continue")).to_be_enabled(timeout=60_000)
            await page.keyboard.press("Space")
        await asyncio.sleep(0.5)
    await page.wait_for_function(
        "() => window.__al.acks.filter(a => a.id.startsWith('r:')).length >= window.__al.responses.length",
        timeout=120_000,
    )
    log = await page.evaluate("() => window.__al")
    await context.close()
    return log


def onset_gaps(log: dict, per_block: int) -> list[float]:
    """Response -> next onset beyond the fixation, within blocks (a block's last response is followed by the
    break screen, not by a fixation)."""
    onsets = {o["trial_index"]: o["t"] for o in log["onsets"]}
    return [
        onsets[r["trial_index"] + 1] - r["t"] - ITI_MS
        for r in log["responses"]
        if (r["trial_index"] + 1) % per_block and r["trial_index"] + 1 in onsets
    ]


def rest_only(server: AppServer, db, n_clients: int, interval_s: float, count: int) -> list[float]:
    """The same response rate from plain HTTP clients (no browsers): the server's own share of the latency."""
    import json
    import threading
    import urllib.request

    from study.participation import enter_study, trial_plan
    from workflows.participant.tokens import TokenKey

    key = TokenKey.load(server.home)  # tokens signed with the server's key file

    latencies: list[float] = []

    def client(k: int) -> None:
        entry = enter_study(db, "load-study", f"rest-{k:02d}")
        token = key.token(entry.participant_id)
        time.sleep(k * interval_s / n_clients)
        for trial in trial_plan(db, entry.participant_id)[:count]:
            body = json.dumps(
                {
                    "token": token,
                    "trial_index": trial.trial_index,
                    "shown": list(trial.shown),
                    "chosen_position": 0,
                    "rt_ms": 1000.0,
                    "input_modality": "keyboard",
                }
            ).encode()
            started = time.perf_counter()
            request = urllib.request.Request(
                server.url + "/api/responses", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as reply:
                reply.read()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(max(0.0, interval_s - (time.perf_counter() - started)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


async def run(args, home: Path, db) -> tuple[list[dict], list[float]]:
    from playwright.async_api import async_playwright

    server = AppServer(home).start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            deadline = time.time() + args.minutes * 60 + args.arrival_spread + 120
            respond_after = int(args.interval * 1000) - ITI_MS
            tasks = [
                participant(
                    browser,
                    server.url,
                    f"load-{k:02d}",
                    respond_after,
                    deadline,
                    args.arrival_spread * k / args.participants,
                )
                for k in range(args.participants)
            ]
            logs = await asyncio.gather(*tasks)
            await browser.close()
        rest = rest_only(
            server,
            db,
            args.participants,
            args.interval,
            count=min(40, math.ceil(args.minutes * 60 / args.interval)),
        )
    finally:
        server.stop()
    return logs, rest


def report(logs: list[dict], rest: list[float], db, args, wall_s: float) -> None:
    given = sum(len(log["responses"]) for log in logs)
    acked = [a for log in logs for a in log["acks"] if a["id"].startswith("r:")]
    with db.read() as session:
        rows = session.scalar(
            select(func.count())
            .select_from(Response)
            .join(Participant)
            .where(Participant.external_id.startswith("load-"))
        )
        per_participant = dict(
            session.execute(
                select(Participant.external_id, func.count(Response.id))
                .join(Response, Response.participant_id == Participant.id)
                .group_by(Participant.external_id)
            ).all()
        )
        completed = session.scalar(
            select(func.count()).where(Participant.status == ParticipantStatus.COMPLETED)
        )
    lost = sum(
        max(0, len(log["responses"]) - per_participant.get(f"load-{k:02d}", 0)) for k, log in enumerate(logs)
    )
    latencies = np.array([a["latencyMs"] for a in acked])
    receipt = np.array(receipt_latencies(db, Participant.external_id.startswith("load-")))
    per_block = math.ceil(math.ceil(args.minutes * 60 / args.interval) / 2)
    gaps = np.array([g for log in logs for g in onset_gaps(log, per_block)])
    print(
        f"\n{args.participants} participants arriving over {args.arrival_spread:.0f} s, one response every "
        f"{args.interval} s, {args.minutes} min, one app process; wall time {wall_s:.0f} s"
    )
    print(
        f"responses given in the browsers {given}, acknowledged {len(acked)}, rows in the database {rows}, "
        f"lost {lost}, participants completed {completed}/{args.participants}"
    )
    print(f"{'measure (ms)':<44}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for name, values in (
        ("ack latency (response -> row committed)", latencies),
        ("response -> server receipt, before commit", receipt),
        (f"onset gap beyond the {ITI_MS} ms fixation", gaps),
        (f"REST only: {len(rest)} POSTs, no browsers", np.array(rest)),
    ):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(f"{name:<44}{p50:>8.1f}{p95:>8.1f}{p99:>8.1f}{values.max():>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between responses")
    parser.add_argument(
        "--arrival-spread",
        type=float,
        default=30.0,
        help="participants arrive evenly over this many seconds (0: all at once)",
    )
    parser.add_argument("--home", type=Path, help="keep the data directory (database, server log) here")
    args = parser.parse_args()
    trials = math.ceil(args.minutes * 60 / args.interval)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        db = prepare_home(home)
        ids = make_stimuli(db, home, per_category=12, size=240)
        config = straight_to_trials(ITI_MS)
        make_study(
            db,
            home,
            "load-study",
            config=config,
            stimulus_ids=ids,
            n_practice=0,
            n_blocks=2,
            per_block=math.ceil(trials / 2),
            participants_per_list=2 * args.participants,
        )
        started = time.time()
        logs, rest = asyncio.run(run(args, home, db))
        report(logs, rest, db, args, time.time() - started)
        db.dispose()


if __name__ == "__main__":
    main()
