"""The participant REST API under Starlette's TestClient (no browser): every rule of "every stored value is
checked against the study", each with its status code, a reason that names the field, and a database left
unchanged; the `unavailable` outcome; consent and finishing enforced by the server; images only for a
participant's own list."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from db.models import InteractionEvent, Participant, ParticipantStatus, Response, Stimulus
from db.settings import data_home
from study import participation as P
from study.export import things_table, trial_table
from study.qc import participant_qc
from tests.support.participant_study import FAST_CONFIG, make_stimuli, make_study
from workflows.participant import api
from workflows.participant.payloads import CLIENT_EVENT_KINDS
from workflows.participant.tokens import TokenKey

KEY = TokenKey(b"api-test-secret", "test")
SLUG = "test-study"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def client(db, home) -> TestClient:
    make_study(db, home, SLUG, config=FAST_CONFIG)  # min valid RT 100 ms, window 8000 ms
    return TestClient(Starlette(routes=api.api_routes("/api", lambda: db, KEY)))


@pytest.fixture
def pid(db, client) -> int:
    return P.enter_study(db, SLUG, "P1").participant_id


def plan(db, participant_id: int) -> list[P.PlannedTrial]:
    return P.trial_plan(db, participant_id)


def answer(db, participant_id: int, index: int = 0, **changes) -> dict:
    trial = plan(db, participant_id)[index]
    body = {
        "token": KEY.token(participant_id),
        "trial_index": trial.trial_index,
        "shown": list(trial.shown),
        "chosen_position": 1,
        "rt_ms": 900.0,
        "client_onset_ms": time.time() * 1000,
        "input_modality": "mouse",
        "timed_out": False,
    }
    return body | changes


def event(participant_id: int, **changes) -> dict:
    body = {
        "token": KEY.token(participant_id),
        "client_event_id": f"ev-{time.perf_counter_ns()}",
        "kind": "blur",
        "detail": {},
        "trial_index": 0,
        "client_time_ms": time.time() * 1000,
    }
    return body | changes


def snapshot(db) -> tuple:
    """Everything a refused request must leave alone: responses, participants' flow fields, client events
    (a refused response logs one internal `rejected_response` event; that is the only allowed change)."""
    with db.read() as session:
        responses = [
            (r.participant_id, r.trial_index, r.chosen_position, r.rt_ms, r.timed_out, r.unavailable)
            for r in session.scalars(select(Response).order_by(Response.id))
        ]
        people = session.execute(
            select(
                Participant.id,
                Participant.status,
                Participant.consent,
                Participant.list_id,
                Participant.browser,
            )
        ).all()
        events = session.execute(
            select(InteractionEvent.client_event_id).where(InteractionEvent.kind != "rejected_response")
        ).all()
    return responses, [tuple(p) for p in people], [tuple(e) for e in events]


def refused(client, db, path: str, body, status: int, *names: str, headers: dict | None = None) -> dict:
    """POST, then check the status, that the reason names every given field, and that nothing was stored."""
    before = snapshot(db)
    sent = json.dumps(body) if not isinstance(body, str | bytes) else body
    headers = {"Content-Type": "application/json"} | (headers or {})
    reply = client.post(path, content=sent, headers=headers)
    assert reply.status_code == status, reply.text
    data = reply.json()
    assert data["status"] == ("rejected" if status in (409, 429) else "error")
    for name in names:
        assert name in data["reason"], (name, data["reason"])
    assert snapshot(db) == before
    return data


# ---------------------------------------------------------------- responses: values against the study


def test_a_good_answer_is_stored_then_reported_as_duplicate(client, db, pid):
    body = answer(db, pid)
    assert client.post("/api/responses", json=body).json() == {"status": "stored", "trial_index": 0}
    assert client.post("/api/responses", json=body | {"chosen_position": 2}).json() == {
        "status": "duplicate",
        "trial_index": 0,
    }
    with db.read() as session:
        row = session.scalars(select(Response)).one()
    assert (row.chosen_position, row.rt_ms, row.input_modality, row.timed_out) == (1, 900.0, "mouse", False)


@pytest.mark.parametrize(
    ("changes", "status", "names"),
    [
        # RT within [minimum valid RT, response window + slack]
        ({"rt_ms": 13_001.0}, 409, ("rt_ms", "response window plus slack (13000 ms)")),
        ({"rt_ms": 3_600_000.0}, 409, ("rt_ms", "response window")),
        ({"rt_ms": 0.0}, 409, ("rt_ms", "minimum valid response time of 100 ms")),
        ({"rt_ms": 99.9}, 409, ("rt_ms", "minimum valid response time")),
        ({"rt_ms": -1.0}, 400, ("rt_ms", ">= 0")),
        ({"rt_ms": None}, 409, ("rt_ms", "finite number for an answered trial")),
        ({"rt_ms": "900"}, 400, ("rt_ms",)),
        # a timed-out trial has neither RT nor choice
        ({"timed_out": True, "rt_ms": -99999.0, "chosen_position": None}, 400, ("rt_ms",)),
        ({"timed_out": True, "rt_ms": 500.0, "chosen_position": None}, 409, ("rt_ms must be null",)),
        ({"timed_out": True, "rt_ms": None}, 409, ("chosen_position must be null",)),
        # onset finite and plausible (epoch ms near the server's clock)
        ({"client_onset_ms": -1e308}, 400, ("client_onset_ms", "epoch milliseconds")),
        ({"client_onset_ms": 1.0e12}, 400, ("client_onset_ms",)),
        ({"client_onset_ms": time.time() * 1000 + 10 * 86_400_000}, 400, ("client_onset_ms",)),
        ({"client_onset_ms": True}, 400, ("client_onset_ms",)),
        # booleans strictly typed
        ({"timed_out": "false"}, 400, ("timed_out", "JSON boolean")),
        ({"timed_out": 0}, 400, ("timed_out",)),
        ({"timed_out": None}, 400, ("timed_out",)),
        ({"unavailable": "true"}, 400, ("unavailable", "JSON boolean")),
        # trial index: an integer in range, and in the participant's list
        ({"trial_index": 10**30}, 400, ("trial_index", "2147483647")),
        ({"trial_index": -1}, 400, ("trial_index",)),
        ({"trial_index": "0"}, 400, ("trial_index",)),
        ({"trial_index": 1.0}, 400, ("trial_index",)),
        ({"trial_index": 999}, 409, ("trial_index 999", "not part of")),
        # modality from a closed set, never "simulated" through the API
        ({"input_modality": "simulated"}, 400, ("input_modality", "simulated")),
        ({"input_modality": "telepathy"}, 400, ("input_modality",)),
        ({"input_modality": None}, 400, ("input_modality",)),
        # choice and images
        ({"chosen_position": 3}, 400, ("chosen_position",)),
        ({"chosen_position": True}, 400, ("chosen_position",)),
        ({"shown": [1, 2]}, 400, ("shown",)),
        ({"shown": [1, 2, 2**70]}, 400, ("shown",)),
        ({"shown": [1, 2, 3]}, 409, ("shown images", "not the images assigned")),
        # unavailable: only with every other field empty, and only if an image is really missing
        (
            {"unavailable": True, "chosen_position": None, "rt_ms": None, "input_modality": "none"},
            409,
            ("images are available",),
        ),
        (
            {"unavailable": True, "chosen_position": None, "rt_ms": 900.0, "input_modality": "none"},
            409,
            ("rt_ms",),
        ),
        (
            {"unavailable": True, "chosen_position": None, "rt_ms": None},
            409,
            ("input_modality must be 'none'",),
        ),
        (
            {"unavailable": True, "rt_ms": None, "input_modality": "none"},
            409,
            ("chosen_position must be null",),
        ),
    ],
)
def test_every_response_value_is_checked(client, db, pid, changes, status, names):
    refused(client, db, "/api/responses", answer(db, pid, **changes), status, *names)


def test_a_refused_response_is_logged_as_an_internal_event(client, db, pid):
    refused(client, db, "/api/responses", answer(db, pid, rt_ms=20_000.0), 409, "rt_ms")
    with db.read() as session:
        assert session.scalars(select(InteractionEvent.kind)).all() == ["rejected_response"]


# ---------------------------------------------------------------- malformed requests: JSON 4xx, never 500


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 8000 + "]" * 8000, "nested too deeply"),
        ('{"a":' * 2500 + "1" + "}" * 2500, "nested too deeply"),
        ("[1, 2]", "must be a JSON object, got a JSON list"),
        ('"token"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("{not json", "not JSON"),
        ("", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        ('{"token": ' + "9" * 5000 + "}", "not JSON"),
    ],
)
@pytest.mark.parametrize("path", ["/api/responses", "/api/events"])
def test_malformed_bodies_get_a_json_400(client, db, pid, path, body, reason):
    refused(client, db, path, body, 400, reason)


@pytest.mark.parametrize("path", ["/api/responses", "/api/events"])
def test_bodies_over_the_limit_are_refused_by_content_length_before_reading(client, db, pid, path):
    big = json.dumps(answer(db, pid) | {"pad": "x" * api.MAX_BODY_BYTES})
    refused(client, db, path, big, 413, "over the 16384-byte limit")
    refused(client, db, path, "{}", 413, "bytes", headers={"Content-Length": str(300 * 2**20)})


def test_bodies_over_the_limit_are_refused_while_streaming(db, home):
    """No Content-Length (chunked): the server stops reading at the limit instead of buffering 300 MB.
    Driven as raw ASGI, because the test client buffers a streamed body before the app sees it."""
    app = Starlette(routes=api.api_routes("/api", lambda: db, KEY))
    chunk, total = 4096, 300 * 2**20
    received, sent = [0], []

    async def receive():
        received[0] += chunk
        return {"type": "http.request", "body": b" " * chunk, "more_body": received[0] < total}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/responses",
        "raw_path": b"/api/responses",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    before = snapshot(db)
    _run_in_a_fresh_loop(lambda: app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"limit" in sent[1]["body"]
    assert received[0] <= api.MAX_BODY_BYTES + chunk  # stopped at the limit, not after 300 MB
    assert snapshot(db) == before


def _run_in_a_fresh_loop(make_coroutine) -> None:
    """asyncio.run in its own thread: a session-wide Playwright (browser tests in the same pytest process)
    keeps an event loop running in the main thread, where asyncio.run refuses to start."""
    import asyncio
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make_coroutine())
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("path", ["/api/responses", "/api/events"])
def test_missing_forged_or_foreign_key_tokens_get_401_and_unknown_participants_404(client, db, pid, path):
    body = answer(db, pid) if path.endswith("responses") else event(pid)
    other_key = TokenKey(b"another-key", "other")
    mac = KEY.token(pid).split(".")[1]
    for token in (None, "", 42, "42", f"{pid}.deadbeef", other_key.token(pid), "²." + mac, "1" * 70):
        refused(client, db, path, body | {"token": token}, 401, "token")
    refused(client, db, path, body | {"token": KEY.token(99_999)}, 404, "no participant with id 99999")


# ---------------------------------------------------------------- the flow: consent and finishing


def test_no_response_or_event_before_consent_or_after_declining(client, db, pid):
    declined = P.enter_study(db, SLUG, "NO", consent=False).participant_id
    with db.write() as session:  # a row stored before consent was asked at entry (older versions)
        session.add(
            Participant(study_id=session.get(Participant, pid).study_id, external_id="OLD", list_id=None)
        )
    with db.read() as session:
        old = session.scalar(select(Participant.id).where(Participant.external_id == "OLD"))
    trial = plan(db, pid)[0]
    for who, reason in ((declined, "declined consent"), (old, "not given consent")):
        body = answer(db, pid, token=KEY.token(who), trial_index=trial.trial_index, shown=list(trial.shown))
        refused(client, db, "/api/responses", body, 409, reason, "only after consent")
        refused(client, db, "/api/events", event(who), 409, reason)


def test_events_and_new_responses_are_refused_after_finishing(client, db, pid):
    assert client.post("/api/responses", json=answer(db, pid)).json()["status"] == "stored"
    P.finish_participant(db, pid, ParticipantStatus.EARLY_EXIT)
    refused(client, db, "/api/events", event(pid), 409, "already finished (early_exit)")
    refused(client, db, "/api/responses", answer(db, pid, 1), 409, "already finished")
    assert client.post("/api/responses", json=answer(db, pid)).json()["status"] == "duplicate"  # a re-send


# ---------------------------------------------------------------- events


def test_every_client_event_kind_the_page_sends_is_stored(client, db, pid):
    for kind in sorted(CLIENT_EVENT_KINDS):
        reply = client.post("/api/events", json=event(pid, kind=kind, client_event_id=f"k-{kind}"))
        assert reply.json() == {"status": "stored"}, kind
    again = client.post("/api/events", json=event(pid, kind="blur", client_event_id="k-blur"))
    assert again.json() == {"status": "duplicate"}
    with db.read() as session:
        assert set(session.scalars(select(InteractionEvent.kind))) == CLIENT_EVENT_KINDS


def test_a_browser_event_stores_its_facts_on_the_participant(client, db, pid):
    facts = {"user_agent": "test", "screen": [390, 844]}
    assert client.post("/api/events", json=event(pid, kind="browser", detail=facts)).status_code == 200
    with db.read() as session:
        assert session.get(Participant, pid).browser == facts


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"kind": "rejected_response"}, ("kind", "rejected_response")),
        ({"kind": "session_resumed"}, ("kind", "session_resumed")),
        ({"kind": "made_up"}, ("kind",)),
        ({"kind": None}, ("kind",)),
        ({"kind": ["blur"]}, ("kind",)),
        ({"trial_index": 2**70}, ("trial_index", "2147483647")),
        ({"trial_index": "3"}, ("trial_index",)),
        ({"detail": {"pad": "x" * 3000}}, ("detail", "at most 2048")),
        ({"detail": "text"}, ("detail", "JSON object")),
        ({"detail": [1]}, ("detail",)),
        ({"client_event_id": None}, ("client_event_id",)),
        ({"client_event_id": ""}, ("client_event_id",)),
        ({"client_event_id": "x" * 65}, ("client_event_id", "1-64")),
        ({"client_event_id": 12}, ("client_event_id",)),
        ({"client_time_ms": "now"}, ("client_time_ms",)),
    ],
)
def test_every_event_field_is_checked(client, db, pid, changes, names):
    refused(client, db, "/api/events", event(pid, **changes), 400, *names)


def test_events_are_capped_per_participant(client, db, pid, monkeypatch):
    monkeypatch.setattr(P, "MAX_EVENTS_PER_PARTICIPANT", 3)
    for k in range(3):
        assert client.post("/api/events", json=event(pid, client_event_id=f"c{k}")).status_code == 200
    refused(client, db, "/api/events", event(pid), 409, "cap of 3 events")
    refused(client, db, "/api/responses", answer(db, pid, rt_ms=1.0), 409, "rt_ms")  # logs no more events
    with db.read() as session:
        assert len(session.scalars(select(InteractionEvent)).all()) == 3


def test_events_are_rate_limited_with_retry_after(client, db, pid, monkeypatch):
    monkeypatch.setattr(P, "MAX_EVENTS_PER_RATE_WINDOW", 4)
    for k in range(4):
        assert client.post("/api/events", json=event(pid, client_event_id=f"r{k}")).status_code == 200
    before = snapshot(db)
    reply = client.post("/api/events", json=event(pid))
    assert reply.status_code == 429 and reply.headers["Retry-After"] == str(P.EVENT_RATE_WINDOW_S)
    assert "send again later" in reply.json()["reason"] and snapshot(db) == before


def test_a_flood_of_large_events_stays_small(client, db, pid):
    """The issue's 2000 x 15 KB events: every one over the detail cap is refused, nothing is stored."""
    for k in range(50):
        reply = client.post(
            "/api/events", json=event(pid, client_event_id=f"f{k}", detail={"x": "y" * 15_000})
        )
        assert reply.status_code == 400
    with db.read() as session:
        assert session.scalars(select(InteractionEvent)).all() == []


# ---------------------------------------------------------------- stimuli


def _stimulus_outside_the_list(db, home, participant_id: int) -> int:
    """An image of another set (on disk, served to nobody's list here)."""
    mine = {sid for trial in plan(db, participant_id) for sid in trial.shown}
    other = make_stimuli(db, home, per_category=1, name="other-set")["red"][0]
    assert other not in mine
    return other


def test_images_are_served_only_for_the_tokens_own_list(client, db, pid, home):
    from app.participant.blocks import stimulus_url

    mine = plan(db, pid)[0].shown[0]
    url = stimulus_url(mine, KEY.token(pid))
    assert url.startswith("/api/stimuli/") and "token=" in url
    reply = client.get(url)
    assert reply.status_code == 200 and reply.content.startswith(b"\x89PNG")
    assert client.get(f"/api/stimuli/{mine}").status_code == 401
    assert client.get(f"/api/stimuli/{mine}?token={pid}.forged").status_code == 401
    other = _stimulus_outside_the_list(db, home, pid)
    for stimulus in (other, 99_999, "abc", "²", 10**30):
        reply = client.get(f"/api/stimuli/{stimulus}?token={KEY.token(pid)}")
        assert reply.status_code == 403 and "not" in reply.json()["reason"], stimulus
    with db.read() as session:
        path = session.get(Stimulus, mine).path
    (data_home() / path).unlink()
    gone = client.get(url)
    assert gone.status_code == 404 and "missing on the server" in gone.json()["reason"]


def test_a_declined_participant_gets_no_images(client, db, pid):
    declined = P.enter_study(db, SLUG, "NO", consent=False).participant_id
    stimulus = plan(db, pid)[0].shown[0]
    assert client.get(f"/api/stimuli/{stimulus}?token={KEY.token(declined)}").status_code == 403


# ---------------------------------------------------------------- unavailable


def _remove_image(db, stimulus_id: int) -> None:
    with db.read() as session:
        (data_home() / session.get(Stimulus, stimulus_id).path).unlink()


UNAVAILABLE = {"unavailable": True, "chosen_position": None, "rt_ms": None, "input_modality": "none"}


def test_an_unavailable_trial_is_stored_apart_and_replaced_by_its_later_answer(client, db, pid):
    trial = plan(db, pid)[1]
    _remove_image(db, trial.shown[2])
    body = answer(db, pid, 1, **UNAVAILABLE)
    assert client.post("/api/responses", json=body).json()["status"] == "stored"
    assert client.post("/api/responses", json=body).json()["status"] == "duplicate"
    assert P.answered_trials(db, pid) == set() and P.unavailable_trials(db, pid) == {1}
    later = client.post(
        "/api/responses", json=answer(db, pid, 1, chosen_position=2)
    )  # offered again on resume
    assert later.json() == {"status": "stored", "trial_index": 1}
    with db.read() as session:
        rows = session.scalars(select(Response)).all()
    assert [(r.trial_index, r.unavailable, r.chosen_position, r.rt_ms) for r in rows] == [
        (1, False, 2, 900.0)
    ]
    assert P.answered_trials(db, pid) == {1} and P.unavailable_trials(db, pid) == set()
    again = client.post("/api/responses", json=body)  # a stale re-send cannot undo the answer
    assert again.json()["status"] == "duplicate"


def test_unavailable_trials_are_no_timeouts_in_qc_and_their_own_outcome_in_exports(client, db, pid):
    trials = plan(db, pid)
    _remove_image(db, trials[3].shown[0])
    for index in range(len(trials)):
        if index == 3:
            body = answer(db, pid, index, **UNAVAILABLE)
        elif index == 4:
            body = answer(
                db, pid, index, timed_out=True, chosen_position=None, rt_ms=None, input_modality="none"
            )
        else:
            body = answer(db, pid, index)
        assert client.post("/api/responses", json=body).status_code == 200
    assert P.finish_participant(
        db, pid, ParticipantStatus.COMPLETED
    )  # never kept from the code by a lost image
    qc = participant_qc(db, SLUG).iloc[0]
    assert (qc.n_timeouts, qc.n_unavailable) == (1, 1)
    table = trial_table(db, SLUG).set_index("trial_index")
    assert table.loc[3, "outcome"] == "unavailable" and bool(table.loc[3, "unavailable"])
    assert table.loc[4, "outcome"] == "timed_out" and bool(table.loc[4, "timed_out"])
    assert table.loc[5, "outcome"] == "answered"
    assert 3 not in set(things_table(db, SLUG)["trial_nr"])


def test_no_consent_participants_are_in_no_export_or_analysis(client, db, pid):
    """Rows of a participant without consent (as older versions stored answers posted before consent) are
    left out of the trial and THINGS exports and of QC."""
    assert client.post("/api/responses", json=answer(db, pid, 2)).status_code == 200
    other = P.enter_study(db, SLUG, "LATER").participant_id
    assert client.post("/api/responses", json=answer(db, other, 2)).status_code == 200
    with db.write() as session:
        session.get(Participant, other).consent = None
    assert set(trial_table(db, SLUG, raw_ids=True)["subject_id"]) == {"P1"}
    assert set(things_table(db, SLUG, raw_ids=True)["subject_id"]) == {"P1"}
    assert participant_qc(db, SLUG)["external_id"].tolist() == ["P1"]


# ---------------------------------------------------------------- never a 500


@pytest.mark.parametrize(
    "value", [None, True, -1, 0, 2**31, 2**70, 10**30, 1e308, -1e308, "x", "", [], {}, [1, 2, 3], {"a": 1}]
)
def test_no_field_value_makes_a_500(client, db, pid, value):
    for path, body in (("/api/responses", answer(db, pid)), ("/api/events", event(pid))):
        for name in body:
            reply = client.post(path, json=body | {name: value})
            assert 200 <= reply.status_code < 500, (path, name, value, reply.text)
            assert reply.json()["status"] in ("stored", "duplicate", "rejected", "error")
