"""Many participants at once on one app process: N browser contexts (Debian chromium) each answering one
trial every `interval` seconds for `minutes` minutes against `streamlit run app/server.py` on loopback.

Reports lost responses (given in the browser vs rows in the database), the acknowledgement latency of the
response POSTs (response -> row committed) and the response -> next-onset gap beyond the fixation.

    .venv/bin/python bench/study_load.py [--participants 20] [--minutes 5] [--interval 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.app.browser.harness

from db.models import Participant, ParticipantStatus, Response  # noqa: E402
from study.config import StudyConfig  # noqa: E402
from tests.app.browser.harness import CHROMIUM, CHROMIUM_ARGS, AppServer, prepare_home  # noqa: E402
from tests.app.participant_study import make_stimuli, make_study  # noqa: E402

ITI_MS = 500
LOG_SCRIPT = """
window.__al = {onsets: [], responses: [], acks: []};
window.addEventListener('alignlab:onset', (e) => window.__al.onsets.push(e.detail));
window.addEventListener('alignlab:response', (e) => window.__al.responses.push(e.detail));
window.addEventListener('alignlab:ack', (e) => window.__al.acks.push(e.detail));
"""
RESPONDER = """
window.addEventListener('alignlab:onset', (e) => setTimeout(() => window.dispatchEvent(
  new KeyboardEvent('keydown', {key: ['ArrowLeft', 'ArrowDown', 'ArrowRight'][e.detail.trial_index %% 3]})), %d));
"""


async def participant(browser, url: str, pid: str, respond_after_ms: int, deadline: float) -> dict:
    """One participant: consent, then every trial answered `respond_after_ms` after its onset; breaks
    are continued at once. Returns the page's log of onsets, responses and acknowledgements."""
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
            await page.keyboard.press("Space")
        await asyncio.sleep(0.5)
    await page.wait_for_function("() => window.__al.acks.filter(a => a.id.startsWith('r:')).length"
                                 " >= window.__al.responses.length", timeout=120_000)
    log = await page.evaluate("() => window.__al")
    await context.close()
    return log


def onset_gaps(log: dict) -> list[float]:
    onsets = sorted(o["t"] for o in log["onsets"])
    gaps = []
    for response in log["responses"]:
        later = [t for t in onsets if t > response["t"]]
        if later and later[0] - response["t"] < 5_000:  # a break screen in between is not a gap
            gaps.append(later[0] - response["t"] - ITI_MS)
    return gaps


async def run(args, home: Path) -> list[dict]:
    from playwright.async_api import async_playwright

    server = AppServer(home).start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            deadline = time.time() + args.minutes * 60 + 120
            respond_after = int(args.interval * 1000) - ITI_MS
            tasks = [participant(browser, server.url, f"load-{k:02d}", respond_after, deadline)
                     for k in range(args.participants)]
            logs = await asyncio.gather(*tasks)
            await browser.close()
    finally:
        server.stop()
    return logs


def report(logs: list[dict], db, args, wall_s: float) -> None:
    given = sum(len(log["responses"]) for log in logs)
    acked = [a for log in logs for a in log["acks"] if a["id"].startswith("r:")]
    with db.read() as session:
        rows = session.scalar(select(func.count()).select_from(Response))
        per_participant = dict(session.execute(select(Participant.external_id, func.count(Response.id))
                                               .join(Response, Response.participant_id == Participant.id)
                                               .group_by(Participant.external_id)).all())
        completed = session.scalar(select(func.count()).where(Participant.status == ParticipantStatus.COMPLETED))
    lost = sum(max(0, len(log["responses"]) - per_participant.get(f"load-{k:02d}", 0)) for k, log in enumerate(logs))
    latencies = np.array([a["latencyMs"] for a in acked])
    gaps = np.array([g for log in logs for g in onset_gaps(log)])
    print(f"\n{args.participants} participants, one response every {args.interval} s, {args.minutes} min, "
          f"one app process; wall time {wall_s:.0f} s")
    print(f"responses given in the browsers {given}, acknowledged {len(acked)}, rows in the database {rows}, "
          f"lost {lost}, participants completed {completed}/{args.participants}")
    print(f"{'measure (ms)':<44}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for name, values in (("ack latency (response -> row committed)", latencies),
                         (f"onset gap beyond the {ITI_MS} ms fixation", gaps)):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(f"{name:<44}{p50:>8.1f}{p95:>8.1f}{p99:>8.1f}{values.max():>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between responses")
    args = parser.parse_args()
    trials = math.ceil(args.minutes * 60 / args.interval)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        db = prepare_home(home)
        ids = make_stimuli(db, home, per_category=12, size=240)
        config = StudyConfig(iti_ms=ITI_MS, min_valid_rt_ms=0, response_window_ms=15000, instructions=(),
                             ask_demographics=False, ask_strategy=False, completion_url_template="")
        make_study(db, home, "load-study", config=config, stimulus_ids=ids, n_practice=0, n_blocks=2,
                   per_block=math.ceil(trials / 2), participants_per_list=args.participants)
        started = time.time()
        logs = asyncio.run(run(args, home))
        report(logs, db, args, time.time() - started)
        db.dispose()


if __name__ == "__main__":
    main()
