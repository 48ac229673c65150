"""Events for durable runs through the API and resume URLs, on the real database with the worker
(drain_jobs) and, where time matters, an injected clock: an event to an ended run is refused (409),
one sent before its step is reached is taken when the run gets there, a resume URL works without
credentials and is refused when forged (403) or expired (410), and a timeout takes its branch."""

from __future__ import annotations

import contextvars
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nectar.core.runs.links import RunLinks, Target
from nectar.core.runs.runner import activate_run
from nectar.core.workflows.engine import ASYNC_LIMITS
from nectar.shared.config import Role
from nectar.shared.database import db
from tests.core.conftest import drain_jobs
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow


def start(browser, definition, run_input=None, token=None) -> tuple[str, str]:
    """A new organization (unless `token` is given) and a queued run of `definition`: (token, run id)."""
    if token is None:
        browser.sign_up()
        browser.create_org()
        token = _new_key(browser)
    workflow_id = _workflow(browser, token, {"trigger": {"type": "manual"}, **definition})
    started = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": run_input or {}}
    )
    assert started.status_code == 202, started.json
    return token, started.json["id"]


def get_run(browser, token, run_id) -> dict:
    return browser.api("GET", f"/api/v1/runs/{run_id}", token=token).json


def send(browser, token, run_id, name, payload=None, **kwargs):
    return browser.api("POST", f"/api/v1/runs/{run_id}/events/{name}", token=token, json=payload, **kwargs)


def activate_at(app, database, run_id, when: datetime):
    """The worker's activation of the run, with its clock at `when` (no real waiting)."""
    with database.connect(Role.ADMIN) as conn:
        org_id = conn.execute("SELECT org_id FROM workflow_runs WHERE id = %s", (run_id,)).fetchone()[0]
    with app.app_context():
        try:
            outcome = activate_run(
                db.session, org_id, uuid.UUID(run_id), limits=ASYNC_LIMITS, now=lambda: when
            )
            db.session.commit()
            return outcome
        finally:
            db.session.remove()


def resume_path(url: str) -> str:
    return url[url.index("/resume/") :]


def events_of(database, run_id) -> list[tuple]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT name, payload, taken_by, source FROM workflow_run_events WHERE run_id = %s ORDER BY received_at",
            (run_id,),
        ).fetchall()


WAITS_FOR_PAYMENT = {
    "steps": [
        {"id": "paid", "type": "wait_for_event", "event": "payment.done", "timeout_seconds": 3600},
        {"id": "thanks", "type": "set", "values": {"amount": "{{ steps.paid.amount }}"}},
    ]
}


def test_an_event_wakes_the_run_waiting_for_it_and_its_payload_is_the_steps_output(browser, database):
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "waiting"
    assert run["waiting_for"]["type"] == "event" and run["waiting_for"]["event"] == "payment.done"
    assert run["wake_at"] == run["waiting_for"]["until"]
    sent = send(browser, token, run_id, "payment.done", {"amount": 42, "currency": "EUR"})
    assert sent.status_code == 202, sent.json
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["steps"][0]["output"] == {"amount": 42, "currency": "EUR"}
    assert run["steps"][0]["input"]["event_id"] == sent.json["id"]
    assert run["output"]["output"] == {"amount": 42} and run["wake_at"] is None and run["waiting_for"] is None
    assert events_of(database, run_id) == [("payment.done", {"amount": 42, "currency": "EUR"}, "paid", "api")]


def test_events_to_a_finished_run_get_409_and_nothing_is_stored(browser, database):
    token, run_id = start(browser, {"steps": [{"id": "s", "type": "set", "values": {}}]})
    drain_jobs(browser.app)
    assert get_run(browser, token, run_id)["status"] == "succeeded"
    refused = send(browser, token, run_id, "late", {"x": 1})
    assert refused.status_code == 409 and "ended" in refused.json["detail"]
    assert events_of(database, run_id) == []


def test_an_event_that_arrives_before_its_step_is_reached_is_taken_when_the_run_gets_there(browser, database):
    token, run_id = start(
        browser,
        {
            "steps": [
                {"id": "signed", "type": "wait_for_event", "event": "contract.signed"},
                {"id": "paid", "type": "wait_for_event", "event": "payment.done"},
            ]
        },
    )
    drain_jobs(browser.app)
    assert send(browser, token, run_id, "payment.done", {"amount": 7}).status_code == 202  # early
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "waiting" and run["waiting_for"]["event"] == "contract.signed"  # not woken for it
    assert send(browser, token, run_id, "contract.signed", {"by": "Ada"}).status_code == 202
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert [s["output"] for s in run["steps"]] == [{"by": "Ada"}, {"amount": 7}]
    assert [taken for _, _, taken, _ in events_of(database, run_id)] == ["paid", "signed"]


def test_an_event_for_a_branch_wakes_the_run_while_another_branch_waits(browser, database):
    token, run_id = start(
        browser,
        {
            "steps": [
                {
                    "id": "both",
                    "type": "parallel",
                    "branches": [
                        [{"id": "go", "type": "wait_for_event", "event": "go"}],
                        [{"id": "ok", "type": "approval", "title": "Ship it?", "notify": False}],
                    ],
                }
            ]
        },
    )
    drain_jobs(browser.app)
    assert get_run(browser, token, run_id)["waiting_for"]["type"] == "parallel"
    assert send(browser, token, run_id, "go", {"n": 1}).status_code == 202
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "waiting" and run["waiting_for"]["type"] == "approval", run["waiting_for"]
    assert [(name, taken) for name, _, taken, _ in events_of(database, run_id)] == [("go", "go")]


def test_a_resume_url_resumes_without_credentials_and_forged_or_expired_ones_are_refused(
    browser, new_browser, database
):
    token, run_id = start(
        browser,
        {
            "steps": [
                {"id": "callback", "type": "set", "values": {"url": "{{ resume_urls.paid }}"}},
                {"id": "paid", "type": "wait_for_event", "event": "payment.done", "timeout_seconds": 600},
            ]
        },
    )
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    url = run["steps"][0]["output"]["url"]
    assert url.startswith("http") and run["waiting_for"]["resume_url"] == url
    outsider = new_browser().client  # no session, no key, no CSRF token

    forged = resume_path(url)[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert outsider.post(forged, json={"amount": 1}).status_code == 403
    other_run = Target(uuid.uuid4(), uuid.uuid4(), "paid", event="payment.done")
    foreign_key = RunLinks("another-secret-key-of-at-least-32-chars", "http://x").resume_url(
        other_run, datetime.now(UTC) + timedelta(days=1)
    )
    assert outsider.post(resume_path(foreign_key), json={}).status_code == 403
    links = RunLinks(browser.app.secret_key, "http://x")
    target = links.read_resume_token(resume_path(url)[len("/resume/") :])
    expired = links.resume_url(target, datetime.now(UTC) - timedelta(seconds=1))
    assert outsider.post(resume_path(expired), json={"amount": 1}).status_code == 410
    assert events_of(database, run_id) == []

    resumed = outsider.post(resume_path(url), json={"amount": 99})
    assert resumed.status_code == 202, resumed.json
    assert "Set-Cookie" not in resumed.headers
    again = outsider.post(resume_path(url), json={"amount": 100})
    assert again.status_code == 409  # one event per step through its URL
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded" and run["steps"][1]["output"] == {"amount": 99}
    assert outsider.post(resume_path(url), json={"amount": 1}).status_code == 409  # the run has ended
    assert events_of(database, run_id) == [("payment.done", {"amount": 99}, "paid", "resume_url")]


def test_the_timeout_branch_is_taken_at_the_timeout_and_the_resume_url_is_gone_after_it(
    browser, new_browser, database
):
    token, run_id = start(
        browser,
        {
            "steps": [
                {
                    "id": "paid",
                    "type": "wait_for_event",
                    "event": "payment.done",
                    "timeout_seconds": 3600,
                    "on_timeout": [{"id": "remind", "type": "set", "values": {"reminded": True}}],
                },
                {"id": "later", "type": "wait_for_event", "event": "anything"},
            ]
        },
    )
    now = datetime.now(UTC)
    assert activate_at(browser.app, database, run_id, now).status == "waiting"
    url = get_run(browser, token, run_id)["waiting_for"]["resume_url"]
    early = activate_at(browser.app, database, run_id, now + timedelta(minutes=59))
    assert early.status == "waiting" and early.waiting_for["step"] == "paid"
    after = activate_at(browser.app, database, run_id, now + timedelta(hours=1, seconds=1))
    assert after.status == "waiting" and after.waiting_for["step"] == "later"
    run = get_run(browser, token, run_id)
    assert [s["step_id"] for s in run["steps"]] == ["paid", "remind"]
    assert run["steps"][0]["input"]["timed_out"] is True and run["steps"][1]["output"] == {"reminded": True}
    gone = new_browser().client.post(resume_path(url), json={"amount": 1})
    assert gone.status_code == 410 and "time ran out" in gone.json["detail"]


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status"),
    [
        ("has space", b"{}", "application/json", 422),
        ("x" * 101, b"{}", "application/json", 422),
        ("paid%0A", b"{}", "application/json", 422),
        ("ok", b'{"a": NaN}', "application/json", 400),
        ("ok", b'{"a": "\\ud800"}', "application/json", 400),
        ("ok", b"[" * 150 + b"]" * 150, "application/json", 400),
        ("ok", b'{"a": "x\\u0000y"}', "application/json", 400),
        ("ok", b'{"a": "' + b"x" * 70_000 + b'"}', "application/json", 413),
        ("ok", b"hello", "text/plain", 415),
        ("ok", b"{not json", "application/json", 400),
    ],
)
def test_bad_events_are_refused_at_the_edge_and_nothing_is_stored(
    browser, database, name, body, content_type, status
):
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    refused = browser.api(
        "POST", f"/api/v1/runs/{run_id}/events/{name}", token=token, data=body, content_type=content_type
    )
    assert refused.status_code == status, refused.get_data(as_text=True)
    assert refused.mimetype == "application/problem+json"
    assert events_of(database, run_id) == []


def test_events_need_credentials_and_stay_in_their_organization(browser, new_browser, database):
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    assert new_browser().client.post(f"/api/v1/runs/{run_id}/events/x", json={}).status_code == 401
    other = new_browser()
    other_token, _ = start(other, {"steps": [{"id": "s", "type": "set", "values": {}}]})
    assert send(other, other_token, run_id, "payment.done", {}).status_code == 404
    # A signed-in browser needs the page's CSRF token, as for every unsafe API call.
    assert browser.client.post(f"/api/v1/runs/{run_id}/events/payment.done", json={}).status_code == 400
    assert events_of(database, run_id) == []


def test_a_run_takes_at_most_a_bounded_number_of_untaken_events(browser, database):
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "INSERT INTO workflow_run_events (org_id, run_id, name, source) "
            "SELECT org_id, id, 'noise', 'api' FROM workflow_runs, generate_series(1, 100) WHERE id = %s",
            (run_id,),
        )
    refused = send(browser, token, run_id, "payment.done", {"amount": 1})
    assert refused.status_code == 429 and "limit" in refused.json["detail"]


def test_a_wake_up_for_a_run_that_no_longer_waits_until_then_does_nothing(browser, database):
    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    drain_jobs(browser.app)
    assert get_run(browser, token, run_id)["status"] == "waiting"  # until its timeout, an hour away

    def jobs(task):
        with database.connect(Role.ADMIN) as conn:
            return conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND args ->> 'run_id' = %s",
                (task, run_id),
            ).fetchone()[0]

    with database.connect(Role.ADMIN) as conn:  # the timeout's wake-up comes early, as a stale one does
        conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE task_name = 'core.wake_run' "
            "AND args ->> 'run_id' = %s",
            (run_id,),
        )
    activations = jobs("core.run_workflow")
    drain_jobs(browser.app)
    assert jobs("core.run_workflow") == activations and jobs("core.wake_run") == 1
    assert get_run(browser, token, run_id)["status"] == "waiting"


def test_the_inbox_waits_for_the_session_its_parallel_branches_share(browser, database):
    from nectar.core.runs.inbox import RunInbox
    from nectar.core.runs.links import run_links
    from nectar.schema.models import WorkflowRun
    from nectar.shared.database import scope_session

    token, run_id = start(browser, WAITS_FOR_PAYMENT)
    session_lock, answers = threading.RLock(), []
    with browser.app.app_context():
        try:
            with database.connect(Role.ADMIN) as conn:
                org_id = conn.execute("SELECT org_id FROM workflow_runs WHERE id = %s", (run_id,)).fetchone()[
                    0
                ]
            scope_session(db.session, org_id=org_id)
            run = db.session.get(WorkflowRun, uuid.UUID(run_id))
            inbox = RunInbox(db.session(), run, run_links(), session_lock)  # the Session, not its proxy
            with session_lock:  # another branch is using the session
                asking = threading.Thread(  # in this app context, as a branch's thread is
                    target=contextvars.copy_context().run, args=(lambda: answers.append(inbox.cancelled()),)
                )
                asking.start()
                asking.join(0.5)
                assert asking.is_alive() and answers == []  # it waits its turn
            asking.join(10)
            assert answers == [False]
        finally:
            db.session.remove()
