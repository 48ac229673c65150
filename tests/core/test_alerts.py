"""Failure alerts end to end: rules made through the API and the page, runs that fail (queued runs
on core's worker, endpoint calls on the hot path), and alerts arriving by email in the outbox, at a
local Slack webhook over HTTPS, at a signed webhook, or as an error workflow's run."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nectar.admin.main import main as admin_main
from nectar.core.alerts import jobs as alert_jobs
from nectar.core.app import create_app
from nectar.core.runs import jobs
from nectar.core.runs.writer import run_writer
from nectar.core.usage import MonthlyRuns
from nectar.core.workflows.outbound import OutboundPolicy
from nectar.shared.config import Role, Service
from nectar.shared.database import db, one_per_database
from nectar.shared.encryption import parse_keys
from tests.core.conftest import Browser, drain_jobs, run_and_wait
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.core.test_orgs import _join
from tests.core.test_usage_metering import _used_this_month
from tests.serving import dead_url, served

KEY_A = "a" * 43 + "="
KEY_B = "b" * 43 + "="


@pytest.fixture(scope="module")
def alerts_app(settings_for):
    """Core with loopback reachable (the local webhook and Slack servers), and two encryption keys."""
    app = create_app(
        settings_for(
            Service.CORE, NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32", NECTAR_ENCRYPTION_KEYS=f"a:{KEY_A}"
        )
    )
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def owner(alerts_app, database):
    """A signed-in owner of a new organization on the enterprise plan (room for the mail), and a key."""
    browser = Browser(alerts_app)
    browser.sign_up()
    org = browser.create_org()
    with database.connect(Role.ADMIN) as conn:
        conn.execute("UPDATE organizations SET plan = 'enterprise' WHERE id = %s", (org,))
    return browser, org, _new_key(browser)


def _failing(trigger: str = "manual") -> dict:
    """A workflow whose one step calls a port where nothing listens: every run fails."""
    return {
        "trigger": {"type": trigger},
        "steps": [{"id": "call", "type": "http_request", "method": "GET", "url": f"{dead_url()}/down"}],
    }


def _rule(browser, token, **fields) -> dict:
    created = browser.api(
        "POST", "/api/v1/alert-rules", token=token, json={"name": f"r-{uuid.uuid4().hex[:6]}", **fields}
    )
    assert created.status_code == 201, created.json
    return created.json


def _alert_mail(database, address: str) -> list[tuple[str, str]]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT subject, body_text FROM email_outbox WHERE to_address = %s AND category = 'alert' "
            "ORDER BY created_at",
            (address,),
        ).fetchall()


def _stored_rule(database, rule_id) -> dict:
    with database.connect(Role.ADMIN) as conn:
        row = conn.execute(
            "SELECT last_fired_at, last_delivered_at, last_error, key_id, secret_ciphertext FROM alert_rules "
            "WHERE id = %s",
            (rule_id,),
        ).fetchone()
    return dict(
        zip(
            ("last_fired_at", "last_delivered_at", "last_error", "key_id", "secret_ciphertext"),
            row,
            strict=False,
        )
    )


def _check_jobs(database, org) -> list[tuple[str, object]]:
    """The alert checks queued for the organization and not yet done: (queueing lock, due time)."""
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT queueing_lock, scheduled_at FROM procrastinate_jobs WHERE task_name = 'core.check_alerts' "
            "AND status = 'todo' AND args->>'org_id' = %s ORDER BY id",
            (str(org),),
        ).fetchall()


def _call_failing_endpoint(browser, token, times: int = 1) -> str:
    """Calls an endpoint whose workflow fails, `times` times, and waits for the runs to be written."""
    workflow_id = _workflow(browser, token, _failing("http"))
    endpoint = _endpoint(browser, token, workflow_id, path=f"/fail-{uuid.uuid4().hex[:6]}")
    for _ in range(times):
        answer = browser.client.post(endpoint["url"], json={})
        assert answer.status_code == 500 and "The workflow failed" in answer.json["detail"]
    with browser.app.app_context():
        run_writer(db.engine).flush()
    return workflow_id


def test_a_failed_queued_run_fires_an_email_rule_once(owner, database):
    browser, org, token = owner
    workflow_id = _workflow(browser, token, _failing())
    rule = _rule(browser, token, workflow_id=workflow_id, channel="email", target="OnCall@Example.com")
    assert rule["target"] == "OnCall@example.com" and rule["threshold"] == 1 and rule["window_minutes"] == 60

    failed = run_and_wait(browser, token, workflow_id)
    assert failed["status"] == "failed"
    [(subject, body)] = _alert_mail(database, "OnCall@example.com")
    assert "Alert: A run of “" in subject and "failed" in subject
    assert f"/org/runs/{failed['id']}" in body and "could not reach" in body
    stored = _stored_rule(database, rule["id"])
    assert stored["last_fired_at"] and stored["last_delivered_at"] and stored["last_error"] is None

    again = run_and_wait(browser, token, workflow_id)  # within the window: no second alert
    assert again["status"] == "failed"
    assert len(_alert_mail(database, "OnCall@example.com")) == 1


def test_a_failed_endpoint_call_fires_an_email_rule_once(owner, database):
    browser, org, token = owner
    _rule(browser, token, channel="email", target="endpoints@example.com")
    _call_failing_endpoint(browser, token, times=3)
    assert [lock for lock, _ in _check_jobs(database, org)] == [f"alerts:{org}"]  # one check, not three
    drain_jobs(browser.app)
    [(subject, _body)] = _alert_mail(database, "endpoints@example.com")
    assert "runs failed within 60 minutes" in subject and subject.startswith("[Nectar Studio · “")


def test_runs_of_an_organization_without_rules_queue_no_check(owner, database):
    browser, org, token = owner
    _call_failing_endpoint(browser, token, times=2)
    assert _check_jobs(database, org) == []


def test_n_failures_within_m_minutes_fire_once_and_a_storm_once_per_window(owner, database):
    browser, org, token = owner
    workflow_id = _workflow(browser, token, _failing("http"))
    endpoint = _endpoint(browser, token, workflow_id, path="/storm")
    rule = _rule(
        browser,
        token,
        workflow_id=workflow_id,
        threshold=3,
        window_minutes=10,
        channel="email",
        target="storm@example.com",
    )

    def fail(times: int) -> None:
        for _ in range(times):
            assert browser.client.post(endpoint["url"], json={}).status_code == 500
        with browser.app.app_context():
            run_writer(db.engine).flush()
        drain_jobs(browser.app)

    fail(2)
    assert _alert_mail(database, "storm@example.com") == []  # two of three
    fail(1)
    [(subject, _body)] = _alert_mail(database, "storm@example.com")
    assert "3 runs of “" in subject and "within 10 minutes" in subject

    fail(50)  # the storm: held back by the window, and looked at again when it ends
    assert len(_alert_mail(database, "storm@example.com")) == 1
    fired_at = _stored_rule(database, rule["id"])["last_fired_at"]
    [(lock, due)] = _check_jobs(database, org)
    assert lock == f"alerts:{org}:{rule['id']}" and abs((due - fired_at).total_seconds() - 600) < 1

    with database.connect(Role.ADMIN) as conn:  # the window ends: ten minutes pass
        conn.execute(
            "UPDATE alert_rules SET last_fired_at = last_fired_at - interval '10 minutes' WHERE id = %s",
            (rule["id"],),
        )
        conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE queueing_lock = %s", (lock,))
    drain_jobs(browser.app)
    second = _alert_mail(database, "storm@example.com")
    assert len(second) == 2 and "53 runs of “" in second[1][0]  # the storm, told once


def test_concurrent_checks_decide_once(owner, database):
    browser, org, token = owner
    rule = _rule(browser, token, channel="email", target="race@example.com")
    _call_failing_endpoint(browser, token)
    jobs.bind(browser.app)
    start = threading.Barrier(8)  # eight workers run the check at once

    def check() -> None:
        start.wait(10)
        alert_jobs.check_alerts(str(org))

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with database.connect(Role.ADMIN) as conn:
        deliveries = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'core.deliver_alert' AND args->>'rule_id' = %s",
            (rule["id"],),
        ).fetchone()[0]
    assert deliveries == 1


class Receiver:
    """A local HTTP(S) server that records each request's headers and body and answers with the
    next of `statuses` (the last one from then on)."""

    def __init__(self, statuses: list[int]):
        self.statuses, self.requests = list(statuses), []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        self.requests.append((environ["PATH_INFO"], headers, body))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b"ok"]


@contextmanager
def receiving(statuses: list[int], tls: Path | None = None) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver(statuses)
    with served(receiver, tls=tls) as url:
        yield receiver, url


def _drain_until(app, done, timeout: float = 60) -> None:
    """Runs the worker until `done()`; retries are due a few seconds after a failure."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.5)
        drain_jobs(app)


def test_a_signed_webhook_arrives_verifiable_and_is_retried_after_a_500(owner, database):
    browser, org, token = owner
    workflow_id = _workflow(browser, token, _failing())
    with receiving([500, 204]) as (receiver, url):
        rule = _rule(browser, token, channel="webhook", target=f"{url}/hooks/nectar")
        secret = rule.pop("secret")
        assert secret.startswith("whsec_") and rule["has_secret"]
        listed = browser.api("GET", "/api/v1/alert-rules", token=token).json["items"]
        assert secret not in json.dumps(listed), "the secret is shown once"
        assert secret.encode() not in bytes(_stored_rule(database, rule["id"])["secret_ciphertext"])

        failed = run_and_wait(browser, token, workflow_id)
        assert len(receiver.requests) == 1  # answered 500
        assert "the webhook answered 500" in _stored_rule(database, rule["id"])["last_error"]
        _drain_until(browser.app, lambda: len(receiver.requests) == 2)

    for path, headers, body in receiver.requests:
        assert path == "/hooks/nectar" and headers["Content-Type"] == "application/json", headers
        match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", headers["X-Nectar-Signature"])
        assert match and abs(int(match[1]) - time.time()) < 300
        expected = hmac.new(secret.encode(), match[1].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(match[2], expected)
        forged = hmac.new(b"another secret", match[1].encode() + b"." + body, hashlib.sha256).hexdigest()
        assert match[2] != forged
    first, second = (json.loads(body) for _path, _headers, body in receiver.requests)
    assert first == second and first["failed_run"]["id"] == failed["id"] and first["failures"] == 1
    assert first["rule"]["id"] == rule["id"] and first["organization_id"] == str(org)
    assert len({headers["Idempotency-Key"] for _p, headers, _b in receiver.requests}) == 1  # one alert
    stored = _stored_rule(database, rule["id"])
    assert stored["last_error"] is None and stored["last_delivered_at"]


def test_a_slack_rule_posts_through_a_slack_connection(
    owner, alerts_app, settings_for, tmp_path, monkeypatch
):
    browser, org, token = owner
    workflow_id = _workflow(browser, token, _failing(), name="Nightly import")
    with receiving([200], tls=tmp_path) as (receiver, url):
        # Trust the local HTTPS server's CA, named as an operator would (REQUESTS_CA_BUNDLE).
        trusting = settings_for(
            Service.CORE,
            NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32",
            REQUESTS_CA_BUNDLE=str(tmp_path / "ca.pem"),
        )
        policy = OutboundPolicy.from_setting(trusting.outbound_allowlist, trusting.outbound_ca_bundle)
        monkeypatch.setitem(alerts_app.config, "NECTAR_OUTBOUND_POLICY", policy)
        connection = browser.api(
            "POST",
            "/api/v1/connections",
            token=token,
            json={
                "service_key": "slack",
                "name": "team-slack",
                "config": {},
                "credentials": {"webhook_url": f"{url}/services/T0/B0/secret"},
            },
        )
        assert connection.status_code == 201, connection.json
        _rule(browser, token, channel="slack", target="team-slack", workflow_id=workflow_id)
        run_and_wait(browser, token, workflow_id)
    [(path, headers, body)] = receiver.requests
    assert path == "/services/T0/B0/secret"
    text = json.loads(body)["text"]
    assert "A run of “Nightly import” failed" in text and "/org/runs/" in text


def test_an_error_workflow_gets_the_failed_run_and_its_own_failure_fires_nothing(owner, database):
    browser, org, token = owner
    handler = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "seen", "type": "set", "values": {"run": "{{ trigger.failed_run.id }}"}},
                {"id": "page", "type": "http_request", "method": "POST", "url": f"{dead_url()}/pager"},
            ],
        },
    )
    watched = _workflow(browser, token, _failing())
    _rule(browser, token, channel="workflow", target=handler)  # any workflow: the handler's too
    handler_rule = _rule(browser, token, channel="email", target="handler@example.com", workflow_id=handler)

    failed = run_and_wait(browser, token, watched)
    runs = browser.api("GET", f"/api/v1/runs?workflow_id={handler}", token=token).json["items"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("alert", "failed")]  # it ran, and failed
    run = browser.api("GET", f"/api/v1/runs/{runs[0]['id']}", token=token).json
    assert run["input"]["failed_run"]["id"] == failed["id"]
    assert (
        run["input"]["failed_run"]["workflow_id"] == watched
        and "could not reach" in run["input"]["failed_run"]["error"]
    )
    assert run["input"]["rule"]["threshold"] == 1
    assert _stored_rule(database, handler_rule["id"])["last_fired_at"] is None
    assert _alert_mail(database, "handler@example.com") == []
    with database.connect(Role.ADMIN) as conn:  # the watched run's check only, none for the handler's
        checks = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'core.check_alerts' AND args->>'org_id' = %s",
            (str(org),),
        ).fetchone()[0]
    assert checks == 1


def test_rules_of_another_organization_never_fire(owner, alerts_app, database):
    browser, org, token = owner
    other = Browser(alerts_app)
    other.sign_up()
    other.create_org()
    other_token = _new_key(other)
    theirs = _rule(other, other_token, channel="email", target="them@example.com")
    ours = _rule(browser, token, channel="email", target="us@example.com")

    run_and_wait(browser, token, _workflow(browser, token, _failing()))
    assert len(_alert_mail(database, "us@example.com")) == 1
    assert _alert_mail(database, "them@example.com") == []
    assert _stored_rule(database, theirs["id"])["last_fired_at"] is None
    for method in ("PATCH", "DELETE"):
        assert (
            other.api(method, f"/api/v1/alert-rules/{ours['id']}", token=other_token, json={}).status_code
            == 404
        )
    assert [r["id"] for r in other.api("GET", "/api/v1/alert-rules", token=other_token).json["items"]] == [
        theirs["id"]
    ]
    foreign_workflow = _workflow(browser, token, _failing())
    wrong = other.api(
        "POST",
        "/api/v1/alert-rules",
        token=other_token,
        json={
            "name": "x",
            "channel": "workflow",
            "target": foreign_workflow,
            "workflow_id": foreign_workflow,
        },
    )
    assert wrong.status_code == 422
    assert {p["path"] for p in wrong.json["errors"]} == {"/workflow_id", "/target"}


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"threshold": 0}, "/threshold"),
        ({"threshold": True}, "/threshold"),
        ({"window_minutes": 10081}, "/window_minutes"),
        ({"window_minutes": "soon"}, "/window_minutes"),
        ({"channel": "sms"}, "/channel"),
        ({"name": ""}, "/name"),
        ({"name": "x" * 101}, "/name"),
        ({"name": ["list"]}, "/name"),
        ({"target": "not an address"}, "/target"),
        ({"target": "a@example.com, b@example.com"}, "/target"),
        ({"channel": "webhook", "target": "http://169.254.169.254/latest/meta-data/"}, "/target"),
        ({"channel": "webhook", "target": "http://10.0.0.1/alert"}, "/target"),
        ({"channel": "webhook", "target": "http://user:pw@example.com/alert"}, "/target"),
        ({"workflow_id": "not-a-uuid"}, "/workflow_id"),
        ({"workflow_id": str(uuid.uuid4())}, "/workflow_id"),
        ({"enabled": "yes"}, "/enabled"),
        ({"colour": "red"}, "/colour"),
        ({"channel": None}, "/channel"),
    ],
)
def test_bad_rule_input_is_a_422_naming_the_field(owner, fields, path):
    browser, _org, token = owner
    body = {"name": "ops", "channel": "email", "target": "ops@example.com", **fields}
    answer = browser.api("POST", "/api/v1/alert-rules", token=token, json=body)
    assert answer.status_code == 422, answer.json
    assert path in {p["path"] for p in answer.json["errors"]}, answer.json


def test_text_no_rule_can_store_is_refused_at_the_edge_and_nothing_is_stored(owner):
    browser, _org, token = owner
    body = {"name": "a\u0000b", "channel": "email", "target": "ops@example.com"}
    answer = browser.api("POST", "/api/v1/alert-rules", token=token, json=body)
    assert answer.status_code == 400, answer.json
    assert [e["path"] for e in answer.json["errors"]] == ["/name"]
    assert browser.api("GET", "/api/v1/alert-rules", token=token).json["items"] == []


@pytest.mark.parametrize(
    ("channel", "target"),
    [
        ("webhook", "ftp://example.com/x"),
        ("webhook", "https://user:pass@example.com/x"),
        ("webhook", "https://"),
        ("slack", "no-such-connection"),
        ("workflow", str(uuid.uuid4())),
    ],
)
def test_a_target_that_does_not_fit_its_channel_is_refused(owner, channel, target):
    browser, _org, token = owner
    answer = browser.api(
        "POST", "/api/v1/alert-rules", token=token, json={"name": "t", "channel": channel, "target": target}
    )
    assert answer.status_code == 422 and [p["path"] for p in answer.json["errors"]] == [
        "/target"
    ], answer.json


def test_rules_change_through_the_api_within_their_bounds(owner):
    browser, _org, token = owner
    rule = _rule(browser, token, channel="email", target="ops@example.com", name="ops")
    url = f"/api/v1/alert-rules/{rule['id']}"
    changed = browser.api("PATCH", url, token=token, json={"enabled": False, "threshold": 5})
    assert changed.status_code == 200 and changed.json["enabled"] is False and changed.json["threshold"] == 5
    moved = browser.api("PATCH", url, token=token, json={"channel": "slack"})
    assert moved.status_code == 422 and moved.json["errors"][0]["path"] == "/channel"
    twin = browser.api(
        "POST",
        "/api/v1/alert-rules",
        token=token,
        json={"name": "ops", "channel": "email", "target": "x@example.com"},
    )
    assert twin.status_code == 422 and twin.json["errors"][0]["path"] == "/name"
    assert browser.api("PATCH", url, token=token, json=["not", "an", "object"]).status_code == 400
    assert browser.api("DELETE", url, token=token).status_code == 204
    assert browser.api("DELETE", url, token=token).status_code == 404


def test_an_organization_has_a_bounded_number_of_rules(owner, database):
    browser, org, token = owner
    with database.connect(Role.ADMIN) as conn:
        for number in range(50):
            conn.execute(
                "INSERT INTO alert_rules (org_id, name, channel, target) VALUES (%s, %s, 'email', 'a@example.com')",
                (org, f"rule {number}"),
            )
    answer = browser.api(
        "POST",
        "/api/v1/alert-rules",
        token=token,
        json={"name": "one more", "channel": "email", "target": "a@example.com"},
    )
    assert answer.status_code == 422 and answer.json["errors"][0]["path"] == "/"


def test_members_see_rules_and_only_admins_change_them(browser, new_browser, outbox):
    browser.sign_up()  # sign-up confirms the address, so the owner may invite
    browser.create_org()
    token = _new_key(browser)
    rule = _rule(browser, token, channel="email", target="ops@example.com")
    _email, member = _join(browser, new_browser, outbox, "member")
    listed = member.api("GET", "/api/v1/alert-rules")
    assert listed.status_code == 200 and [r["id"] for r in listed.json["items"]] == [rule["id"]]
    csrf = {"X-CSRFToken": member.csrf_token()}
    new = {"name": "n", "channel": "email", "target": "a@example.com"}
    assert member.api("POST", "/api/v1/alert-rules", json=new, headers=csrf).status_code == 403
    url = f"/api/v1/alert-rules/{rule['id']}"
    assert member.api("PATCH", url, json={"enabled": False}, headers=csrf).status_code == 403
    assert member.api("DELETE", url, headers=csrf).status_code == 403
    page = member.get("/org/alerts")
    assert page.status_code == 200 and "New alert rule" not in page.get_data(as_text=True)
    assert member.post("/org/alerts", new).status_code == 403
    assert member.post(f"/org/alerts/{rule['id']}/delete").status_code == 403


def test_the_page_creates_shows_a_webhook_secret_once_and_turns_rules_off(owner, database):
    browser, _org, token = owner
    bad = browser.post(
        "/org/alerts",
        {
            "name": "pager",
            "threshold": "0",
            "window_minutes": "60",
            "channel": "webhook",
            "target": "https://hooks.example.com/x",
        },
    )
    assert bad.status_code == 422 and "A whole number from 1 to 1000." in bad.get_data(as_text=True)
    page = browser.post(
        "/org/alerts",
        {
            "name": "pager",
            "threshold": "2",
            "window_minutes": "15",
            "channel": "webhook",
            "target": "https://hooks.example.com/x",
        },
    )
    assert page.status_code == 200
    secret = re.search(
        r'<pre class="token" id="new-secret">(whsec_[^<]+)</pre>', page.get_data(as_text=True)
    )[1]
    listing = browser.get("/org/alerts").get_data(as_text=True)
    assert (
        "pager" in listing
        and "2 failed runs of any workflow within 15 min" in listing
        and secret not in listing
    )
    [rule] = browser.api("GET", "/api/v1/alert-rules", token=token).json["items"]
    assert browser.post(f"/org/alerts/{rule['id']}/enabled", {"target": "false"}).status_code == 302
    assert browser.api("GET", "/api/v1/alert-rules", token=token).json["items"][0]["enabled"] is False
    assert browser.post(f"/org/alerts/{rule['id']}/delete").status_code == 302
    assert browser.api("GET", "/api/v1/alert-rules", token=token).json["items"] == []


def test_the_openapi_document_describes_alert_rules(owner):
    browser, _org, _token = owner
    paths = browser.get("/api/v1/openapi.json").json["paths"]
    assert set(paths["/alert-rules"]) == {"get", "post"}
    assert set(paths["/alert-rules/{rule_id}"]) == {"patch", "delete"}


def test_webhook_secrets_rotate_with_the_encryption_keys(owner, database, monkeypatch, capsys):
    browser, _org, token = owner
    rule = _rule(browser, token, channel="webhook", target="https://hooks.example.com/x")
    for name, value in database.environ(NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B},a:{KEY_A}").items():
        monkeypatch.setenv(name, value)
    assert admin_main(["rotate-credentials"]) == 0
    assert "with key b" in capsys.readouterr().out
    stored = _stored_rule(database, rule["id"])
    assert stored["key_id"] == "b"
    assert parse_keys(f"b:{KEY_B}").decrypt(bytes(stored["secret_ciphertext"])).decode() == rule["secret"]


def test_an_error_workflow_refused_by_the_free_quota_says_so_on_its_rule(owner, database):
    browser, org, token = owner
    with database.connect(Role.ADMIN) as conn:
        conn.execute("UPDATE organizations SET plan = 'free' WHERE id = %s", (org,))
    handler = _workflow(browser, token, {"trigger": {"type": "manual"}, "steps": [_failing()["steps"][0]]})
    rule = _rule(browser, token, channel="workflow", target=handler)
    _call_failing_endpoint(browser, token)
    _used_this_month(database, org, 1_000)  # the quota is used up before the alert is delivered
    with browser.app.app_context():
        one_per_database(db.engine, MonthlyRuns)._read.clear()
    drain_jobs(browser.app)
    assert "1,000 runs a month" in (_stored_rule(database, rule["id"])["last_error"] or "")
    runs = browser.api("GET", f"/api/v1/runs?workflow_id={handler}", token=token).json["items"]
    assert runs == []
