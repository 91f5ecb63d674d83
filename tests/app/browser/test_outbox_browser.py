"""The outbox's contract, in Debian's chromium against a scripted API (Playwright routes play the server).

A queued answer is forgotten only when the server stored it (stored/duplicate) or refused it for good
(409 rejected); a 401 (a server restarted with another key), 404, 5xx or a network error keeps it and it is
retried; a new token re-signs and resends the queue; an outbox that gets nowhere for 10 minutes stops and
says so."""

from __future__ import annotations

import json
import time

import pytest

from app.participant.components import WEB

pytestmark = pytest.mark.browser
ORIGIN = "http://outbox.test"
PAGE = f"<!doctype html><html><body><script>{(WEB / 'outbox.js').read_text()}</script></body></html>"


class ScriptedApi:
    """Answers POST /api/responses with the next scripted (status, json) and records what was sent."""

    def __init__(self, page):
        self.replies: list[tuple[int, dict] | str] = []
        self.received: list[dict] = []
        page.route(f"{ORIGIN}/", lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
        page.route(f"{ORIGIN}/api/**", self._answer)

    def _answer(self, route):
        self.received.append(json.loads(route.request.post_data))
        reply = self.replies.pop(0) if self.replies else (200, {"status": "stored"})
        if reply == "network":
            route.abort("connectionreset")
        else:
            status, body = reply
            route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


@pytest.fixture
def outbox_page(browser):
    context = browser.new_context()
    page = context.new_page()
    api = ScriptedApi(page)
    page.clock.install()
    page.goto(f"{ORIGIN}/")
    yield page, api
    context.close()


def _put(page, trial_index: int, token: str = "1.old") -> None:
    page.evaluate(
        """([i, token]) => { window.box = outboxFor("p1", "/api", token);
             window.box.put("r:" + i, "/responses", {trial_index: i}); }""",
        [trial_index, token],
    )


def _pending(page) -> list[str]:
    return page.evaluate("() => window.box.pending('r:')")


def _wait_for_requests(page, api, count: int) -> None:
    _eventually(page, lambda: len(api.received) >= count, f"{count} requests")


def _eventually(page, condition, what: str) -> None:
    """Advance the page's clock in small steps (real time passes too, for the routes) until `condition`."""
    for _ in range(300):
        if condition():
            return
        page.clock.run_for(100)
        time.sleep(0.01)
    raise AssertionError(f"never reached: {what}")


def _settles_empty(page) -> None:
    _eventually(page, lambda: _pending(page) == [], "an empty outbox")


def test_a_401_keeps_the_answer_and_a_new_token_resends_it(outbox_page):
    page, api = outbox_page
    api.replies = [(401, {"status": "error", "reason": "bad token"})] * 3
    _put(page, 5)
    _wait_for_requests(page, api, 3)
    assert _pending(page) == ["r:5"] and {r["token"] for r in api.received} == {"1.old"}
    api.replies = []  # the server now stores what it gets
    page.evaluate("() => window.box.setToken('1.new')")
    _wait_for_requests(page, api, 4)
    _settles_empty(page)
    assert api.received[-1] == {"trial_index": 5, "token": "1.new"}
    assert page.evaluate("() => window.box.answered('r:5')")


@pytest.mark.parametrize(
    "failure", ["network", (500, {}), (404, {"status": "error"}), (400, {"status": "error"})]
)
def test_failures_that_are_not_a_decision_keep_the_answer_until_it_is_stored(outbox_page, failure):
    page, api = outbox_page
    api.replies = [failure, failure]
    _put(page, 2)
    _wait_for_requests(page, api, 2)
    assert _pending(page) == ["r:2"]
    _wait_for_requests(page, api, 3)  # the retry after backoff is stored
    _settles_empty(page)


def test_a_rejected_answer_is_forgotten_but_not_taken_as_answered(outbox_page):
    page, api = outbox_page
    api.replies = [(409, {"status": "rejected", "reason": "RT outside the window"})]
    _put(page, 3)
    _settles_empty(page)
    assert not page.evaluate("() => window.box.answered('r:3')")


def test_an_outbox_that_gets_nowhere_for_ten_minutes_stops_and_says_so(outbox_page):
    page, api = outbox_page
    api.replies = ["network"] * 1000
    page.evaluate("() => { window.stalls = []; }")
    _put(page, 1)
    page.evaluate("() => window.box.subscribe((w) => { if (w.stalled) window.stalls.push(w); })")
    page.clock.run_for(11 * 60 * 1000)
    _eventually(page, lambda: page.evaluate("() => window.box.isStalled()"), "a stalled outbox")
    assert page.evaluate("() => window.stalls.length") == 1
    sent = len(api.received)
    page.clock.run_for(60 * 1000)
    assert len(api.received) == sent  # no more retries on its own
    api.replies = []
    page.evaluate("() => window.box.resume()")
    _settles_empty(page)
    assert not page.evaluate("() => window.box.isStalled()")
