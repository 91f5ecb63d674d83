"""In a real browser, hovering a point of the exported maps shows its thumbnail and rings it on both maps."""

from __future__ import annotations

import pytest

from app.cli import main
from db.engine import Database
from tests.support.map_fixtures import make_fake_runs

pytestmark = pytest.mark.browser

POINT_POSITION = """() => {
  const gd = document.querySelector('.plotly-graph-div'), trace = gd._fullData[1];  // first label, after map
  const xa = gd._fullLayout.xaxis2, ya = gd._fullLayout.yaxis2, box = gd.getBoundingClientRect();
  return [box.left + xa._offset + xa.l2p(trace.x[0]), box.top + ya._offset + ya.l2p(trace.y[0]), trace.x[0]];
}"""


def test_hovering_a_point_shows_its_thumbnail_and_rings_it_on_both_maps(browser, app_home):
    db = Database.from_url()
    make_fake_runs(db, app_home, n_judgments=0)
    db.dispose()
    out = app_home / "report"
    assert (
        main(
            [
                "map",
                "--before",
                "base",
                "--after",
                "aligned",
                "--out",
                str(out),
                "--method",
                "pca",
                "--no-png",
            ]
        )
        == 0
    )
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    page.goto((out / "maps.html").as_uri())
    page.wait_for_selector(".plotly-graph-div .scatterlayer")
    thumb = page.locator("#alignlab-hover-thumb")
    assert not thumb.is_visible()
    x, y, data_x = page.evaluate(POINT_POSITION)
    page.mouse.move(x - 40, y - 40)
    page.mouse.move(x, y, steps=5)
    thumb.wait_for(state="visible", timeout=5000)
    assert (
        page.locator("#alignlab-hover-thumb img").get_attribute("src").startswith("data:image/jpeg;base64,")
    )
    rings = page.evaluate(
        "() => { const d = document.querySelector('.plotly-graph-div').data;"
        " return [d[d.length - 2].x, d[d.length - 1].x]; }"
    )
    assert len(rings[0]) == 1 and rings[1] == [
        pytest.approx(data_x, abs=0.2)
    ]  # the hovered point (or its neighbour)
    page.mouse.move(5, 690)
    thumb.wait_for(state="hidden", timeout=5000)
    page.close()
