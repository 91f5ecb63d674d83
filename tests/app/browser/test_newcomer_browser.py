"""A newcomer after `make run` on a fresh machine: the data home is built exactly as `make run` builds it
(`alignlab db upgrade`, `alignlab demo build`, here waiting for the demo's closed loop), then a real
`streamlit run app/server.py` is driven by Debian's chromium.

From the first page, clicking only (and logging in with the password the app generated), the newcomer
reaches Maps and sees two populated maps whose points show their thumbnails on hover, and the evaluation
table; the home page's study door leads to the participant study. On the way the test saves the README's
screenshots: into $ALIGNLAB_SCREENSHOTS when set (`make screenshots` sets it to docs/screenshots), else into
a temporary folder, so `make test` leaves the tracked images alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.browser_harness import EVENT_LOG_SCRIPT, ROOT, AppServer, wait_for_state

pytestmark = [pytest.mark.browser, pytest.mark.slow]
VIEWPORT = {"width": 1400, "height": 900}
PAGE_TIMEOUT_MS = 90_000  # a Streamlit rerun, or UMAP on a loaded 2-core machine
REPRESENTATIONS = ("base", "teacher", "AligNet", "UnAligNet")
# Where a point of the after map (second subplot) sits, relative to the plot element, and how many points
# each subplot holds. Evaluated inside the maps iframe.
MAP_POINTS = """() => {
  const gd = document.querySelector('.plotly-graph-div');
  const count = (axis) => gd._fullData.filter((t) => t.xaxis === axis && t.name !== 'hovered')
                                       .reduce((n, t) => n + t.x.length, 0);
  const trace = gd._fullData.find((t) => t.xaxis === 'x2' && t.x.length > 0);
  const xa = gd._fullLayout.xaxis2, ya = gd._fullLayout.yaxis2;
  return {before: count('x'), after: count('x2'),
          x: xa._offset + xa.l2p(trace.x[0]), y: ya._offset + ya.l2p(trace.y[0])};
}"""
ENABLED_INSTRUCTION_BUTTONS = """() => [...document.querySelectorAll('[class*="st-key-instr_next_"]')]
  .filter((el) => el.querySelector('button:not([disabled])'))
  .map((el) => [...el.classList].find((c) => c.startsWith('st-key-instr_next_')))"""


@dataclass
class NewcomerServer(AppServer):
    """No researcher password configured, as on a fresh machine: the app generates one into the data home."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("ALIGNLAB_RESEARCHER_PASSWORD", None)
        env.pop("ALIGNLAB_RESEARCHER_PASSWORD_HASH", None)
        return env


def build_like_make_run(home: Path) -> dict[str, float]:
    """`alignlab db upgrade` and `alignlab demo build --runs wait` in a fresh data home; seconds per step."""
    env = dict(
        os.environ,
        ALIGNLAB_HOME=str(home),
        DATABASE_URL=f"sqlite:///{home / 'alignlab.db'}",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    seconds = {}
    for step in (["db", "upgrade"], ["demo", "build", "--runs", "wait"]):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *step],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"alignlab {' '.join(step)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        seconds[" ".join(step)] = time.perf_counter() - start
    return seconds


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("newcomer-home")
    seconds = build_like_make_run(home)
    print(f"\nfresh demo home built: {', '.join(f'{step} {s:.0f} s' for step, s in seconds.items())}")
    server = NewcomerServer(home).start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def page(browser, demo_server):
    context = browser.new_context(base_url=demo_server.url, viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.add_init_script(EVENT_LOG_SCRIPT)  # trial onsets, for `wait_for_state`
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """The folder the screenshots go to: $ALIGNLAB_SCREENSHOTS if set, else a temporary one."""
    chosen = os.environ.get("ALIGNLAB_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page, folder: Path, name: str) -> None:
    """Write FOLDER/NAME.png once the app has finished running its script."""
    wait_until_idle(page)
    page.screenshot(path=folder / f"{name}.png")


def wait_until_idle(page) -> None:
    """Streamlit shows a status widget while the script runs; wait until it has gone (and stays gone)."""
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")
    time.sleep(1.0)
    page.get_by_test_id("stStatusWidget").wait_for(state="hidden")


def open_in_sidebar(page, title: str, heading: str | None = None) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=heading or title, exact=True, level=1).wait_for()


def maps_frame(page):
    """The frame of the embedded maps HTML, once plotly has drawn its points."""
    iframe = page.locator("iframe").first
    iframe.wait_for()
    frame = iframe.element_handle().content_frame()
    frame.wait_for_selector(".plotly-graph-div .scatterlayer .point", timeout=PAGE_TIMEOUT_MS)
    return iframe, frame


def hover_a_point(frame) -> None:
    """Move the mouse onto the first point of the after map, approaching it as a hand would."""
    where = frame.evaluate(MAP_POINTS)
    plot = frame.locator(".plotly-graph-div").first
    plot.hover(position={"x": where["x"] - 40, "y": where["y"] - 40})
    plot.hover(position={"x": where["x"], "y": where["y"]})


def walk_through_intro_pages(study, timeout: float = 180) -> None:
    """Consent, age, and the instruction pages up to the practice's intro screen. Each page's forward button
    (Streamlit key `instr_next_N`) is clicked once, when enabled: under load the previous page's button is
    briefly on screen next to the new one."""
    study.get_by_role("button", name="I agree and want to take part").click()
    study.get_by_label("Age in years").fill("30")
    study.get_by_role("button", name="Continue").click()
    clicked: set[str] = set()
    deadline = time.time() + timeout
    while not study.get_by_test_id("al-intro").is_visible():
        assert time.time() < deadline, "the instruction pages did not lead to the practice"
        for key in study.evaluate(ENABLED_INSTRUCTION_BUTTONS):
            if key not in clicked:
                clicked.add(key)
                study.locator(f".{key} button").click()
        time.sleep(0.3)


def evaluation_table(page):
    page.get_by_role("heading", name="Evaluation on held-out human judgments").scroll_into_view_if_needed()
    table = page.get_by_test_id("stDataFrame").last
    table.scroll_into_view_if_needed()
    return table


def log_in_with_the_generated_password(page, demo_server) -> None:
    """The researcher login with the password the app generated into the data home on first run."""
    open_in_sidebar(page, "Log in", "Researcher login")
    page.get_by_text("one was generated on first run").wait_for()
    password = (demo_server.home / "researcher_password.txt").read_text().strip()
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def test_newcomer_clicks_from_the_first_page_to_populated_maps_and_the_evaluation_table(
    page, demo_server, screenshots
):
    page.goto("/")
    page.get_by_text("This is the built-in demo.").wait_for()
    assert not page.get_by_test_id("stSidebarNav").get_by_role("link", name="Maps").count()  # behind login
    log_in_with_the_generated_password(page, demo_server)
    open_in_sidebar(page, "Maps")
    iframe, frame = maps_frame(page)
    points = frame.evaluate(MAP_POINTS)
    assert points["before"] == points["after"] > 100  # every demo image on both maps (129 photos)
    iframe.scroll_into_view_if_needed()
    screenshot(page, screenshots, "maps")
    thumb = frame.locator("#alignlab-hover-thumb")
    assert not thumb.is_visible()
    hover_a_point(frame)
    thumb.wait_for(state="visible", timeout=10_000)
    assert (
        frame.locator("#alignlab-hover-thumb img").get_attribute("src").startswith("data:image/jpeg;base64,")
    )

    table = evaluation_table(page)
    last_row = table.get_by_role("gridcell", name="UnAligNet", exact=True, include_hidden=True).last
    last_row.wait_for(state="attached")  # all rows drawn
    cells = table.get_by_role("gridcell", include_hidden=True).all_text_contents()
    assert set(REPRESENTATIONS) <= set(cells)
    assert {"overall", "between_class", "within_class", "class_border"} <= set(cells)
    screenshot(page, screenshots, "maps_evaluation")


def test_the_study_door_on_the_home_page_leads_to_the_participant_study(page, screenshots):
    page.goto("/")
    door = page.get_by_role("link", name="open the demo study")
    with page.context.expect_page() as opened:  # markdown links open in a new tab
        door.click()
    study = opened.value
    study.get_by_role("button", name="I agree and want to take part").wait_for()
    assert "?study=demo" in study.url
    walk_through_intro_pages(study)
    state = wait_for_state(study, 0, timeout=60)
    if state == "intro":  # the practice's intro screen
        study.get_by_test_id("al-continue").click()
        study.get_by_test_id("al-intro").wait_for(state="hidden")
        state = wait_for_state(study, 0, timeout=60)
    assert state == "trial"
    for slot in range(3):
        study.get_by_test_id(f"al-slot-{slot}").locator("img").wait_for()
    study.wait_for_function("() => [...document.querySelectorAll('img')].every((img) => img.complete)")
    study.mouse.move(5, VIEWPORT["height"] - 5)  # no slot highlighted under the cursor
    study.screenshot(path=screenshots / "participant_trial.png")


def test_researcher_pages_after_logging_in_with_the_generated_password(page, demo_server, screenshots):
    page.goto("/")
    log_in_with_the_generated_password(page, demo_server)
    open_in_sidebar(page, "Studies")
    page.get_by_test_id("stDataFrame").first.get_by_role(
        "gridcell", name="demo", exact=True, include_hidden=True
    ).wait_for(state="attached")
    assert page.get_by_role("radio", name="open", exact=True, include_hidden=True).is_checked()  # its status
    page.get_by_text("DEMO-DONE").wait_for()  # the demo's completion code, not the default one
    screenshot(page, screenshots, "dashboard")
    page.get_by_role("button", name="Save as new version").wait_for()
    page.get_by_role("heading", name="Edit a study", exact=True).evaluate(
        "(heading) => heading.scrollIntoView({block: 'start'})"  # the form fills the screenshot
    )
    screenshot(page, screenshots, "study_edit")
    open_in_sidebar(page, "Participants & data")
    page.get_by_test_id("stDataFrame").first.wait_for()
    screenshot(page, screenshots, "participants_qc")
    page.get_by_role("tab", name="Agreement").click()
    page.get_by_text("Model–human agreement, live").wait_for()
    page.get_by_text("THINGS modal consistency").wait_for(timeout=PAGE_TIMEOUT_MS)  # the human tables, read
    assert not page.get_by_text("Computing…").count()  # in the background (120 participants) and then shown
    screenshot(page, screenshots, "live_agreement")
    open_in_sidebar(page, "Alignment runs")
    page.get_by_role("heading", name="Runs", exact=True).wait_for()
    page.get_by_test_id("stDataFrame").first.get_by_role(
        "gridcell", name="succeeded", include_hidden=True
    ).first.wait_for(state="attached")
    screenshot(page, screenshots, "alignment_runs")
