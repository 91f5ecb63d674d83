"""Trial timing of the participant page in a real browser (Debian chromium, `streamlit run` on loopback).

(a) response -> next triplet onset, beyond the configured fixation, over >= 100 trials: our block component
    (client-side queue, preloading) versus a naive page with one Streamlit rerun per trial (bench/naive_*.py).
(b) recorded RT minus the scripted response delay (600/1200/2400 ms), mean and SD, for our page and for a
    plain HTML page timed jsPsych-style (start = performance.now() at DOM insertion, rt = performance.now()
    in the key handler). Two harnesses: "cdp" = Playwright presses a real key `delay` ms after the page
    reported the onset; "in-page" = a keydown is dispatched by a page timer `delay` ms after the onset.
(c) response -> row committed (the POST's acknowledgement arrives after the commit), p50/p95.

    .venv/bin/python -m bench.trial_timing [--trials 120] [--rt-repeats 12] [--iti 500]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from sqlalchemy import select

from db.models import Participant, Response
from study.participation import trial_plan
from tests.support.browser_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    AppServer,
    prepare_home,
    receipt_latencies,
)
from tests.support.participant_study import make_stimuli, make_study, straight_to_trials

DELAYS_MS = (600, 1200, 2400)
ONSET_HOOK = """
window.__al = {onsets: [], responses: [], acks: []};
window.addEventListener('alignlab:onset', (e) => {
  window.__al.onsets.push(e.detail);
  if (window.__alOnset) window.__alOnset(e.detail);
});
window.addEventListener('alignlab:response', (e) => window.__al.responses.push(e.detail));
window.addEventListener('alignlab:ack', (e) => window.__al.acks.push(e.detail));
"""
IN_PAGE_RESPONDER = """
window.__alDelays = %s;
window.addEventListener('alignlab:onset', () => {
  const delay = window.__alDelays.shift();
  const press = () => window.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowLeft'}));
  if (delay !== undefined) setTimeout(press, delay);
});
"""
BASELINE_HTML = """<!doctype html><html><body style="font-family:sans-serif">
<div id="stage" style="height:300px;display:flex;align-items:center;justify-content:center">Press Space</div>
<script>
// jsPsych-style timing: stimulus inserted into the DOM, start = performance.now();
// rt = performance.now() in the handler.
const TRIALS = %s, ITI = %d;
const stage = document.getElementById('stage');
window.__baseline = [];
const cache = TRIALS.flat().map((u) => { const i = new Image(); i.src = u; return i; });
function trial(k) {
  if (k >= TRIALS.length) { stage.textContent = 'done'; return; }
  stage.textContent = '+';
  setTimeout(() => {
    stage.innerHTML = TRIALS[k].map((u) => `<img src="${u}" width="240" height="240">`).join('');
    const start = performance.now();
    window.dispatchEvent(new CustomEvent('alignlab:onset', {detail: {trial_index: k, t: start}}));
    const onKey = (e) => {
      if (!['ArrowLeft', 'ArrowDown', 'ArrowRight'].includes(e.key)) return;
      window.removeEventListener('keydown', onKey);
      window.__baseline.push({trial_index: k, rt_ms: performance.now() - start});
      trial(k + 1);
    };
    window.addEventListener('keydown', onKey);
  }, ITI);
}
window.addEventListener('keydown', (e) => {
  if (e.key === ' ' && stage.textContent === 'Press Space') trial(0);
});
</script></body></html>"""


def percentiles(values, qs=(50, 95)) -> list[float]:
    return [float(np.percentile(values, q)) for q in qs] if len(values) else [float("nan")] * len(qs)


def gaps(log: dict, iti_ms: int) -> list[float]:
    """Next onset minus response minus the fixation, for each response followed by an onset."""
    onset_times = sorted(o["t"] for o in log["onsets"])
    result = []
    for response in log["responses"]:
        later = [t for t in onset_times if t > response["t"]]
        if later:
            result.append(later[0] - response["t"] - iti_ms)
    return result


async def new_page(browser, base_url: str, *, in_page_delays: list[int] | None = None):
    context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    await context.add_init_script(ONSET_HOOK)
    if in_page_delays is not None:
        await context.add_init_script(IN_PAGE_RESPONDER % list(in_page_delays))
    return await context.new_page()


async def respond_by_cdp(page, delays_ms: list[int]) -> None:
    """A real key press (Playwright input) `delay` ms after the page reported each onset."""
    queue: asyncio.Queue = asyncio.Queue()
    await page.expose_function("__alOnset", lambda detail: queue.put_nowait(detail))
    for delay in delays_ms:
        await queue.get()
        await asyncio.sleep(delay / 1000)
        await page.keyboard.press("ArrowLeft")


async def wait_for_responses(page, count: int, key: str = "responses", timeout_s: float = 600) -> None:
    await page.wait_for_function(f"() => window.__al.{key}.length >= {count}", timeout=timeout_s * 1000)


async def start_our_block(page, url: str) -> None:
    from playwright.async_api import expect

    await page.goto(url)
    await page.get_by_role("button", name="I agree and want to take part").click()
    await page.get_by_test_id("al-intro").wait_for()
    await expect(page.get_by_test_id("al-continue")).to_be_enabled(
        timeout=60_000
    )  # the block's images are in
    await page.keyboard.press("Space")


async def run_ours(browser, server: AppServer, slug: str, pid: str, delays: list[int], mode: str) -> dict:
    page = await new_page(browser, server.url, in_page_delays=delays if mode == "in-page" else None)
    responder = asyncio.create_task(respond_by_cdp(page, delays)) if mode == "cdp" else None
    await start_our_block(page, f"/?study={slug}&PROLIFIC_PID={pid}")
    if responder:
        await responder
    await wait_for_responses(page, len(delays))
    await wait_for_responses(page, len(delays), key="acks")
    log = await page.evaluate("() => window.__al")
    await page.context.close()
    return log


async def run_naive(browser, server: AppServer, slug: str, pid: str, delays: list[int]) -> dict:
    page = await new_page(browser, server.url)
    responder = asyncio.create_task(respond_by_cdp(page, delays))
    await page.goto(f"/?study={slug}&pid={pid}")
    await responder
    await wait_for_responses(page, len(delays))
    log = await page.evaluate("() => window.__al")
    await page.context.close()
    return log


async def run_baseline(browser, base_url: str, delays: list[int], mode: str) -> list[dict]:
    page = await new_page(browser, base_url, in_page_delays=delays if mode == "in-page" else None)
    responder = asyncio.create_task(respond_by_cdp(page, delays)) if mode == "cdp" else None
    await page.goto("/baseline.html")
    await page.wait_for_function("() => document.images.length === 0")
    await page.keyboard.press(" ")
    if responder:
        await responder
    await page.wait_for_function(f"() => window.__baseline.length >= {len(delays)}", timeout=600_000)
    rts = await page.evaluate("() => window.__baseline")
    await page.context.close()
    return rts


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_baseline(folder: Path, trials: list[list[str]], iti_ms: int) -> tuple[http.server.HTTPServer, str]:
    (folder / "baseline.html").write_text(BASELINE_HTML % (trials, iti_ms))
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def stored_rts(db, pid: str) -> dict[int, float]:
    with db.read() as session:
        participant = session.scalars(select(Participant).where(Participant.external_id == pid)).one()
        rows = session.scalars(select(Response).where(Response.participant_id == participant.id)).all()
        return {row.trial_index: row.rt_ms for row in rows}


def rt_errors(rts: dict[int, float], delays: list[int]) -> dict[int, list[float]]:
    errors: dict[int, list[float]] = {d: [] for d in DELAYS_MS}
    for index, delay in enumerate(delays):
        if index in rts:
            errors[delay].append(rts[index] - delay)
    return errors


def setup(home: Path, args) -> tuple:
    db = prepare_home(home)
    ids = make_stimuli(db, home, per_category=12, size=240)
    config = straight_to_trials(args.iti)
    make_study(
        db,
        home,
        "timing-gap",
        config=config,
        stimulus_ids=ids,
        n_practice=0,
        n_blocks=1,
        per_block=args.trials,
    )
    n_rt = args.rt_repeats * len(DELAYS_MS)
    make_study(
        db, home, "timing-rt", config=config, stimulus_ids=ids, n_practice=0, n_blocks=1, per_block=n_rt
    )
    return db, ids


def baseline_trials(db, home: Path, folder: Path, pid_plan) -> list[list[str]]:
    from db.models import Stimulus

    with db.read() as session:
        paths = {s.id: s.path for s in session.scalars(select(Stimulus))}
    trials = []
    for trial in pid_plan:
        urls = []
        for stimulus_id in trial.shown:
            name = Path(paths[stimulus_id]).name
            shutil.copy(home / paths[stimulus_id], folder / name)
            urls.append("/" + name)
        trials.append(urls)
    return trials


async def measure(args, home: Path, db) -> dict:
    from playwright.async_api import async_playwright

    ours = AppServer(home).start()
    naive = AppServer(home, script="bench/naive_server.py").start()
    results: dict = {}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            gap_delays = [300] * args.trials
            results["ours_gap"] = await run_ours(browser, ours, "timing-gap", "gap-ours", gap_delays, "cdp")
            results["naive_gap"] = await run_naive(browser, naive, "timing-gap", "gap-naive", gap_delays)
            delays = [DELAYS_MS[k % 3] for k in range(args.rt_repeats * 3)]
            folder = home / "baseline"
            folder.mkdir()
            from study.participation import enter_study

            entry = enter_study(db, "timing-rt", "baseline-plan")
            http_server, base_url = serve_baseline(
                folder, baseline_trials(db, home, folder, trial_plan(db, entry.participant_id)), args.iti
            )
            for mode in ("cdp", "in-page"):
                log = await run_ours(browser, ours, "timing-rt", f"rt-{mode}", delays, mode)
                results[f"ours_rt_{mode}"] = rt_errors(stored_rts(db, f"rt-{mode}"), delays)
                results[f"ours_acks_{mode}"] = [
                    a["latencyMs"] for a in log["acks"] if a["id"].startswith("r:")
                ]
                baseline = await run_baseline(browser, base_url, delays, mode)
                results[f"baseline_rt_{mode}"] = rt_errors(
                    {r["trial_index"]: r["rt_ms"] for r in baseline}, delays
                )
            results["ours_acks_gap"] = [
                a["latencyMs"] for a in results["ours_gap"]["acks"] if a["id"].startswith("r:")
            ]
            results["receipt"] = receipt_latencies(
                db, Participant.external_id.in_(["gap-ours", "rt-cdp", "rt-in-page"])
            )
            http_server.shutdown()
            await browser.close()
    finally:
        ours.stop()
        naive.stop()
    return results


def report(results: dict, iti_ms: int) -> None:
    print(f"\n(a) response -> next onset beyond the {iti_ms} ms fixation (ms)")
    print(f"{'page':<34}{'n':>5}{'p50':>9}{'p95':>9}{'max':>9}")
    for name, key in (
        ("ours (block in the browser)", "ours_gap"),
        ("naive (one rerun per trial)", "naive_gap"),
    ):
        values = gaps(results[key], iti_ms)
        p50, p95 = percentiles(values)
        print(f"{name:<34}{len(values):>5}{p50:>9.1f}{p95:>9.1f}{max(values):>9.1f}")
    print("\n(b) recorded RT minus scripted delay (ms): mean ± SD (n)")
    print(f"{'harness':<10}{'delay':>7}{'ours':>22}{'jsPsych-style baseline':>26}{'diff of means':>15}")
    for mode in ("cdp", "in-page"):
        for delay in DELAYS_MS:
            ours, base = results[f"ours_rt_{mode}"][delay], results[f"baseline_rt_{mode}"][delay]
            cell = lambda v: f"{np.mean(v):7.2f} ± {np.std(v, ddof=1):5.2f} ({len(v)})"  # noqa: E731
            print(
                f"{mode:<10}{delay:>7}{cell(ours):>22}{cell(base):>26}{np.mean(ours) - np.mean(base):>15.2f}"
            )
    acks = results["ours_acks_gap"] + results["ours_acks_cdp"] + results["ours_acks_in-page"]
    print("\n(c) response -> stored row (ms)")
    for name, values in (
        ("POST acknowledged (after the commit)", acks),
        ("received by the server, before the commit (one clock)", results["receipt"]),
    ):
        p50, p95 = percentiles(values)
        print(f"{name:<54} n={len(values):<4} p50 {p50:6.1f}   p95 {p95:6.1f}   max {max(values):6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120, help="trials for the onset-gap comparison")
    parser.add_argument("--rt-repeats", type=int, default=12, help="trials per scripted delay")
    parser.add_argument("--iti", type=int, default=500, help="fixation (ms)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        db, _ = setup(home, args)
        results = asyncio.run(measure(args, home, db))
        report(results, args.iti)
        db.dispose()


if __name__ == "__main__":
    main()
