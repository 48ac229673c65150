"""Recovering runs on the real database with the worker: a retry goes on from the step that failed
the run, on the original or the current version, and repeats nothing before it (an upstream that
counts requests sees none again, the outbox holds one message); a waiting or running run can be
cancelled; and waiting runs are found by the runs list, saying what they wait for until when."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from nectar.shared.config import Role
from tests.core.conftest import Browser, drain_jobs
from tests.core.test_run_signals import WAITS_FOR_PAYMENT, get_run, send, start
from tests.core.upstream import serving


@pytest.fixture(scope="module")
def app(local_outbound_app):
    return local_outbound_app


class Upstream:
    """Counts requests by path; /flaky answers 503 for the items in `failing`."""

    def __init__(self):
        self.seen: Counter[str] = Counter()
        self.keys: dict[str, list[str]] = {}
        self.failing: set[str] = set()
        self.on_request = None

    def __call__(self, path, headers):
        self.seen[path] += 1
        self.keys.setdefault(path, []).append(headers.get("Idempotency-Key"))
        if self.on_request:
            self.on_request(path)
        item = path.partition("item=")[2]
        if path.startswith("/flaky") and item in self.failing:
            return 503, {}, {"error": "try later"}
        return 200, {}, {"path": path}


@pytest.fixture
def upstream():
    counter = Upstream()
    with serving(counter) as url:
        counter.url = url
        yield counter


def outbox_count(database, address) -> int:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT count(*) FROM email_outbox WHERE to_address = %s", (address,)).fetchone()[
            0
        ]


def retry(browser, token, run_id, version=None):
    body = {} if version is None else {"version": version}
    return browser.api("POST", f"/api/v1/runs/{run_id}/retry", token=token, json=body)


def test_a_retry_goes_on_from_the_failed_step_and_repeats_nothing_before_it(app, upstream, database):
    browser = Browser(app)
    buyer = f"buyer-{id(upstream)}@example.com"
    token, run_id = start(
        browser,
        {
            "steps": [
                {"id": "charge", "type": "http_request", "method": "POST", "url": f"{upstream.url}/charge"},
                {"id": "receipt", "type": "send_email", "to": buyer, "subject": "Receipt", "body": "Thanks"},
                {
                    "id": "each",
                    "type": "for_each",
                    "items": "trigger.items",
                    "steps": [
                        {
                            "id": "notify",
                            "type": "http_request",
                            "url": f"{upstream.url}/flaky?item={{{{ item }}}}",
                        }
                    ],
                },
                {"id": "done", "type": "set", "values": {"charged": "{{ steps.charge.body.path }}"}},
            ]
        },
        {"items": ["1", "2"]},
    )
    upstream.failing = {"2"}
    drain_jobs(app)
    failed = get_run(browser, token, run_id)
    assert failed["status"] == "failed", failed
    assert failed["failed_step"] == "each[1]/notify", failed["error"]

    upstream.failing = set()  # the target is back
    retried = retry(browser, token, run_id)
    assert retried.status_code == 202, retried.json
    assert retried.json["trigger"] == "retry" and retried.json["rerun_of"] == run_id
    assert retried.json["version_id"] == failed["version_id"]
    drain_jobs(app)
    run = get_run(browser, token, retried.json["id"])
    assert run["status"] == "succeeded", run["error"]
    assert upstream.seen == {"/charge": 1, "/flaky?item=1": 1, "/flaky?item=2": 2}
    assert outbox_count(database, buyer) == 1
    first_key, retry_key = upstream.keys["/flaky?item=2"]
    assert first_key != retry_key  # the retried step is a new request, not a replay of the failed one
    assert [s["step_id"] for s in run["steps"]] == ["charge", "receipt", "each", "notify", "notify", "done"]
    kept = [
        s
        for s in run["steps"]
        if datetime.fromisoformat(s["started_at"]) < datetime.fromisoformat(run["queued_at"])
    ]
    assert [s["step_id"] for s in kept] == [
        "charge",
        "receipt",
        "notify",
    ]  # what the failed run did, shown as it was
    assert run["output"]["output"] == {"charged": "/charge"}
    assert get_run(browser, token, run_id)["status"] == "failed"  # the failed run stays as it happened


def test_a_retry_does_again_the_step_that_failed_in_a_parallel_branch(app, upstream):
    browser = Browser(app)
    token, run_id = start(
        browser,
        {
            "steps": [
                {
                    "id": "both",
                    "type": "parallel",
                    "branches": [
                        [{"id": "ok", "type": "http_request", "url": f"{upstream.url}/ok"}],
                        [{"id": "bad", "type": "http_request", "url": f"{upstream.url}/flaky?item=1"}],
                    ],
                }
            ]
        },
    )
    upstream.failing = {"1"}
    drain_jobs(app)
    failed = get_run(browser, token, run_id)
    assert failed["status"] == "failed" and failed["failed_step"] == "bad", failed

    upstream.failing = set()
    retried = retry(browser, token, run_id)
    assert retried.status_code == 202, retried.json
    drain_jobs(app)
    run = get_run(browser, token, retried.json["id"])
    assert run["status"] == "succeeded", run["error"]
    assert upstream.seen == {"/ok": 1, "/flaky?item=1": 2}  # the failed step again, the other kept


def test_a_retry_on_the_current_version_keeps_what_the_steps_before_did(app, upstream, database):
    browser = Browser(app)
    steps = [
        {"id": "charge", "type": "http_request", "method": "POST", "url": f"{upstream.url}/charge"},
        {"id": "total", "type": "transform", "expression": "sum(trigger.prices)"},
    ]
    token, run_id = start(browser, {"steps": steps}, {"prices": [1, "two"]})
    drain_jobs(app)
    failed = get_run(browser, token, run_id)
    assert failed["status"] == "failed" and failed["failed_step"] == "total"
    fixed = [steps[0], {"id": "total", "type": "transform", "expression": "length(trigger.prices)"}]
    saved = browser.api(
        "POST",
        f"/api/v1/workflows/{failed['workflow_id']}/versions",
        token=token,
        json={"definition": {"trigger": {"type": "manual"}, "steps": fixed}},
    )
    assert saved.status_code == 201
    on_original = retry(browser, token, run_id, "original")
    on_current = retry(browser, token, run_id, "current")
    drain_jobs(app)
    assert get_run(browser, token, on_original.json["id"])["status"] == "failed"  # the same bug again
    run = get_run(browser, token, on_current.json["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["version_id"] != failed["version_id"] and run["output"]["output"] == 2
    assert upstream.seen == {"/charge": 1}  # neither retry charged again


def test_only_a_failed_run_is_retried_and_the_version_is_original_or_current(app):
    browser = Browser(app)
    token, run_id = start(browser, {"steps": [{"id": "s", "type": "set", "values": {}}]})
    drain_jobs(app)
    assert retry(browser, token, run_id).status_code == 409
    assert retry(browser, token, run_id, "newest").status_code == 422


def test_a_waiting_run_is_cancelled_and_takes_nothing_more(app, database):
    browser = Browser(app)
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    drain_jobs(app)
    assert get_run(browser, token, run_id)["status"] == "waiting"
    cancelled = browser.api("POST", f"/api/v1/runs/{run_id}/cancel", token=token)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert "It was waiting for the event 'payment.done'" in cancelled.json["error"]
    assert cancelled.json["waiting_for"] is None and cancelled.json["finished_at"]
    assert send(browser, token, run_id, "payment.done", {"amount": 1}).status_code == 409
    drain_jobs(app)  # its pending wake-ups find it ended
    assert get_run(browser, token, run_id)["status"] == "cancelled"
    assert browser.api("POST", f"/api/v1/runs/{run_id}/cancel", token=token).status_code == 409
    listed = browser.api("GET", "/api/v1/runs?status=waiting", token=token).json["items"]
    assert run_id not in [r["id"] for r in listed]


def test_a_running_run_stops_at_its_next_step_once_cancelled(app, upstream, database):
    browser = Browser(app)
    later = f"later-{id(upstream)}@example.com"
    started: dict = {}

    def cancel_while_requested(path):  # the worker is inside the first step meanwhile
        answer = browser.api("POST", f"/api/v1/runs/{started['run']}/cancel", token=started["token"])
        started["answer"] = answer.status_code

    token, run_id = start(
        browser,
        {
            "steps": [
                {"id": "slow", "type": "http_request", "url": f"{upstream.url}/slow"},
                {"id": "mail", "type": "send_email", "to": later, "subject": "s", "body": "b"},
            ]
        },
    )
    started.update(run=run_id, token=token)
    upstream.on_request = cancel_while_requested
    drain_jobs(app)
    assert started["answer"] == 200
    run = get_run(browser, token, run_id)
    assert run["status"] == "cancelled" and run["error"].startswith("Cancelled by")
    assert [s["step_id"] for s in run["steps"]] == ["slow"]
    assert outbox_count(database, later) == 0


def test_a_run_shows_running_once_it_gets_to_a_step_that_takes_time(app, upstream):
    """Until then it shows queued: most runs finish before anyone could see them running, and each
    change of status costs a write."""
    browser = Browser(app)
    seen: dict = {}
    token, run_id = start(
        browser,
        {
            "steps": [
                {"id": "sum", "type": "transform", "expression": "`1`"},
                {"id": "slow", "type": "http_request", "url": f"{upstream.url}/slow"},
            ]
        },
    )
    assert get_run(browser, token, run_id)["status"] == "queued"
    upstream.on_request = lambda path: seen.update(get_run(browser, token, run_id))
    drain_jobs(app)
    assert seen["status"] == "running" and seen["started_at"], seen
    assert get_run(browser, token, run_id)["status"] == "succeeded"


def test_a_run_cancelled_during_its_last_step_stays_cancelled_with_that_step(app, upstream):
    """No step follows to stop at: the run's outcome is written over a cancellation that came first,
    and the cancellation stands."""
    browser = Browser(app)
    started: dict = {}
    upstream.on_request = lambda path: started.update(
        answer=browser.api(
            "POST", f"/api/v1/runs/{started['run']}/cancel", token=started["token"]
        ).status_code
    )
    token, run_id = start(
        browser, {"steps": [{"id": "slow", "type": "http_request", "url": f"{upstream.url}/slow"}]}
    )
    started.update(run=run_id, token=token)
    drain_jobs(app)
    assert started["answer"] == 200
    run = get_run(browser, token, run_id)
    assert run["status"] == "cancelled" and run["error"].startswith("Cancelled by")
    assert [s["step_id"] for s in run["steps"]] == ["slow"] and run["finished_at"]
    assert browser.api("POST", f"/api/v1/runs/{run_id}/cancel", token=token).status_code == 409


def test_waiting_runs_are_listed_with_what_they_wait_for_and_until_when(app, database):
    browser = Browser(app)
    token, waiting_id = start(browser, WAITS_FOR_PAYMENT)
    _, done_id = start(browser, {"steps": [{"id": "s", "type": "set", "values": {}}]}, token=token)
    drain_jobs(app)
    listed = browser.api("GET", "/api/v1/runs?status=waiting", token=token)
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json["items"]] == [waiting_id]
    waiting = listed.json["items"][0]
    assert waiting["waiting_for"]["event"] == "payment.done" and waiting["wake_at"]
    assert browser.api("GET", "/api/v1/runs?status=sleeping", token=token).status_code == 400
    page = browser.get("/org/runs?status=waiting").get_data(as_text=True)
    assert f"/org/runs/{waiting_id}" in page and f"/org/runs/{done_id}" not in page
    assert "for payment.done until" in page
    detail = browser.get(f"/org/runs/{waiting_id}").get_data(as_text=True)
    assert "the event <strong>payment.done</strong>" in detail and "/resume/" in detail
    assert 'id="cancel"' in detail


def test_the_run_page_offers_a_retry_of_a_failed_run(app):
    browser = Browser(app)
    token, run_id = start(
        browser, {"steps": [{"id": "x", "type": "transform", "expression": "abs(trigger)"}]}
    )
    drain_jobs(app)
    page = browser.get(f"/org/runs/{run_id}").get_data(as_text=True)
    assert "Retry from the failed step on v1" in page and "(step x)" in page


def test_a_retry_or_re_run_sent_again_with_its_idempotency_key_starts_nothing_more(app):
    browser = Browser(app)
    failing = {"steps": [{"id": "boom", "type": "http_request", "url": "http://127.0.0.1:9/{{ trigger.n }}"}]}
    token, failed_id = start(browser, failing, {"n": "1"})
    workflow_id = get_run(browser, token, failed_id)["workflow_id"]
    other = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {"n": "2"}}
    )
    other_id = other.json["id"]  # keys are the workflow's: another run of it
    drain_jobs(app)
    assert get_run(browser, token, failed_id)["status"] == "failed"

    def ask(action, run_id, key):
        return browser.api(
            "POST", f"/api/v1/runs/{run_id}/{action}", token=token, headers={"Idempotency-Key": key}
        )

    for action in ("retry", "rerun"):
        first, again = ask(action, failed_id, f"{action}-1"), ask(action, failed_id, f"{action}-1")
        assert first.status_code == 202 and again.status_code == 200, (first.json, again.json)
        assert again.json["id"] == first.json["id"] and first.json["rerun_of"] == failed_id
        of_another = ask(action, other_id, f"{action}-1")  # the key names the first request
        assert of_another.status_code == 422 and of_another.json["errors"][0]["field"] == "Idempotency-Key"
    assert ask("retry", failed_id, "rerun-1").status_code == 422  # that key started a re-run
    listed = browser.api("GET", "/api/v1/runs", token=token).json["items"]
    assert sorted(run["trigger"] for run in listed) == ["manual", "manual", "rerun", "retry"]
