"""An organization's variables and secrets (issue 16, part 4): managed through the API and a page,
read by workflows as `vars.NAME` and `secrets.NAME` in endpoint calls and asynchronous runs,
checked when a workflow is saved, and never given back: a secret's value is in no answer, run
record, log line or span, and it survives a rotation of the encryption keys."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid

import pytest
from cryptography.fernet import Fernet
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nectar.admin.main import main as admin_main
from nectar.core.workflows.definition import ORGANIZATION_NAME_PATTERN
from nectar.schema.models.variables import NAME_PATTERN
from nectar.shared.config import Role
from nectar.shared.database import db
from nectar.shared.tracing import use_tracer_provider
from tests.core.conftest import Browser, drain_jobs
from tests.core.test_api import _new_key
from tests.core.test_integrations import _make_app
from tests.core.upstream import serving
from tests.forms import form_limit_problems

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SECRET = "sk-live-" + uuid.uuid4().hex  # what must never come back
spans = InMemorySpanExporter()


@pytest.fixture(scope="module")
def app(settings_for):
    provider = TracerProvider()  # as start_tracing does, once per process, before the app is made
    provider.add_span_processor(SimpleSpanProcessor(spans))
    use_tracer_provider(provider)
    app = _make_app(settings_for, f"a:{KEY_A},b:{KEY_B}")
    yield app
    with app.app_context():
        db.engine.dispose()


def _echo(path: str, headers: dict):
    """The Authorization header it got, and whether it held the real secret; 404 under /missing."""
    got = headers.get("Authorization")
    return (
        (404 if path.startswith("/missing") else 200),
        {},
        {"got": got, "authorized": got == f"Bearer {SECRET}"},
    )


@pytest.fixture(scope="module")
def upstream():
    with serving(_echo) as url:
        yield url


@pytest.fixture
def owner(app):
    browser = Browser(app)
    browser.sign_up()
    org_id = browser.create_org()
    return browser, org_id, _new_key(browser)


def _put(browser, token, kind, name, value, status=None):
    answer = browser.api("PUT", f"/api/v1/{kind}/{name}", token=token, json={"value": value})
    if status is not None:
        assert answer.status_code == status, answer.json
    return answer


def _workflow(browser, token, definition, status=201):
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": f"wf-{uuid.uuid4().hex[:6]}", "definition": definition},
    )
    assert created.status_code == status, created.json
    return created.json


def _endpoint_url(browser, token, workflow_id, path="/hello"):
    created = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "POST", "path": path, "workflow_id": workflow_id, "auth": "public"},
    )
    assert created.status_code == 201, created.json
    return created.json["url"]


def _using_both(upstream: str) -> dict:
    return {
        "trigger": {"type": "http"},
        "steps": [
            {"id": "local", "type": "set", "values": {"suffix": "!"}},
            {
                "id": "call",
                "type": "http_request",
                "method": "GET",
                "url": "{{ vars.API_URL }}/check?key={{ secrets.API_TOKEN }}",
                "headers": {"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
            },
            {"id": "shout", "type": "transform", "expression": "join('', [vars.GREETING, vars.suffix])"},
            {
                "id": "answer",
                "type": "respond",
                "body": {
                    "greeting": "{{ steps.shout }}",
                    "upstream_got": "{{ steps.call.body.got }}",
                    "echo": "{{ trigger.body.echo }}",
                },
            },
        ],
    }


def _org_values(browser, token, upstream):
    _put(browser, token, "variables", "API_URL", upstream, 201)
    _put(browser, token, "variables", "GREETING", "hello", 201)
    _put(browser, token, "secrets", "API_TOKEN", SECRET, 201)


def test_the_api_sets_lists_and_deletes_them_and_never_returns_a_secret(owner):
    browser, _org_id, token = owner
    assert _put(browser, token, "variables", "REGION", "eu", 201).json["value"] == "eu"
    assert _put(browser, token, "variables", "REGION", "us", 200).json["value"] == "us"
    created = _put(browser, token, "secrets", "API_TOKEN", SECRET, 201)
    replaced = _put(browser, token, "secrets", "API_TOKEN", SECRET + "2", 200)
    assert set(created.json) == set(replaced.json) == {"name", "created_at", "updated_at"}
    variables = browser.api("GET", "/api/v1/variables", token=token).json["items"]
    assert [(v["name"], v["value"]) for v in variables] == [("REGION", "us")]
    secrets = browser.api("GET", "/api/v1/secrets", token=token)
    assert [s["name"] for s in secrets.json["items"]] == ["API_TOKEN"]
    assert "value" not in secrets.json["items"][0]
    for answer in (created, replaced, secrets):
        assert SECRET not in answer.get_data(as_text=True)

    refused = _put(browser, token, "variables", "lower-case", "x", 422)
    assert refused.mimetype == "application/problem+json"
    assert (
        refused.json["errors"][0]["path"] == "/name"
        and "capital letters" in refused.json["errors"][0]["message"]
    )
    assert _put(browser, token, "variables", "BIG", "x" * 4097, 422).json["errors"][0]["path"] == "/value"
    assert _put(browser, token, "variables", "FITS", "x" * 4096, 201)
    assert _put(browser, token, "secrets", "SHORT", "abc", 422).json["errors"][0]["path"] == "/value"
    assert _put(browser, token, "secrets", "HUGE", "x" * 8193, 422).json["errors"][0]["path"] == "/value"
    not_text = _put(browser, token, "secrets", "NUMBER", 1234, 422).json["errors"][0]
    assert not_text["path"] == "/value" and "string" in not_text["message"], not_text
    assert _put(browser, token, "variables", "A" * 65, "x", 422).json["errors"][0]["path"] == "/name"

    assert browser.api("DELETE", "/api/v1/variables/REGION", token=token).status_code == 204
    assert browser.api("DELETE", "/api/v1/variables/REGION", token=token).status_code == 404
    assert browser.api("DELETE", "/api/v1/secrets/API_TOKEN", token=token).status_code == 204
    assert browser.api("GET", "/api/v1/secrets", token=token).json["items"] == []


def test_a_read_key_lists_names_and_cannot_change_them(owner):
    browser, _org_id, token = owner
    _put(browser, token, "secrets", "API_TOKEN", SECRET, 201)
    page = browser.post("/org/api-keys", {"target": "reader", "scopes": "read"}).get_data(as_text=True)
    reader = re.search(r'id="new-token">(nsk_[^<]+)<', page).group(1)
    assert [s["name"] for s in browser.api("GET", "/api/v1/secrets", token=reader).json["items"]] == [
        "API_TOKEN"
    ]
    for method in ("PUT", "DELETE"):
        answer = browser.api(method, "/api/v1/secrets/API_TOKEN", token=reader, json={"value": "changed!"})
        assert answer.status_code == 403 and answer.json["required_scope"] == "workflows:write"


def test_an_organization_has_at_most_a_hundred_of_each(owner):
    browser, _org_id, token = owner
    for n in range(100):
        _put(browser, token, "variables", f"V{n}", "x", 201)
    over = _put(browser, token, "variables", "ONE_MORE", "x", 422)
    assert "at most 100 variables" in over.json["errors"][0]["message"]
    _put(browser, token, "variables", "V7", "replacing one counts no more", 200)
    _put(browser, token, "secrets", "STILL_FINE", SECRET, 201)  # secrets are counted apart


def test_the_page_sets_replaces_and_deletes_with_clear_form_errors(owner):
    browser, _org_id, token = owner
    assert not form_limit_problems(browser, "/org/variables")
    refused = browser.post("/org/variables", {"name": "not ok", "value": "x"})
    assert refused.status_code == 422
    assert "capital letters, digits and underscores" in refused.get_data(as_text=True)
    assert browser.post("/org/variables", {"name": "REGION", "value": "eu-west"}).status_code == 302
    assert browser.post("/org/secrets", {"name": "API_TOKEN", "value": SECRET}).status_code == 302
    short = browser.post("/org/secrets", {"name": "PIN", "value": "12"})
    assert short.status_code == 422 and "4 to 8,192 characters" in short.get_data(as_text=True)
    page = browser.get("/org/variables").get_data(as_text=True)
    assert "REGION" in page and "eu-west" in page and "API_TOKEN" in page
    assert SECRET not in page
    editing = browser.get("/org/variables?edit=REGION").get_data(as_text=True)
    assert re.search(r'id="variable-name"[^>]*value="REGION"', editing)
    replacing = browser.get("/org/variables?replace=API_TOKEN").get_data(as_text=True)
    assert SECRET not in replacing and re.search(r'id="secret-name"[^>]*value="API_TOKEN"', replacing)
    assert browser.post("/org/secrets", {"name": "API_TOKEN", "value": SECRET + "x"}).status_code == 302
    secret_rows = browser.api("GET", "/api/v1/secrets", token=token).json["items"]
    assert [s["name"] for s in secret_rows] == ["API_TOKEN"]
    # Deleting takes the form's CSRF token: a bare POST from elsewhere is refused.
    assert browser.client.post("/org/variables/REGION/delete").status_code == 400
    assert browser.post("/org/variables/REGION/delete", {}).status_code == 302
    assert browser.post("/org/secrets/API_TOKEN/delete", {}).status_code == 302
    assert browser.api("GET", "/api/v1/variables", token=token).json["items"] == []
    assert browser.api("GET", "/api/v1/secrets", token=token).json["items"] == []


def test_an_endpoint_call_reads_them_and_records_only_masks(owner, upstream, database, caplog):
    browser, org_id, token = owner
    _org_values(browser, token, upstream)
    workflow = _workflow(browser, token, _using_both(upstream))
    url = _endpoint_url(browser, token, workflow["id"])
    spans.clear()
    with caplog.at_level(logging.DEBUG):
        answer = browser.client.post(url, json={"echo": f"I know {SECRET}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["greeting"] == "hello!"  # the organization's variable and the run's own
    # The upstream got the real secret (it echoes it back); the answer shows only the mask.
    assert answer.json["upstream_got"] == "Bearer ***"
    assert answer.json["echo"] == "I know ***"
    run = browser.api("GET", f"/api/v1/runs/{answer.headers['X-Nectar-Run-Id']}", token=token)
    call = next(step for step in run.json["steps"] if step["step_id"] == "call")
    assert call["input"]["url"] == f"{upstream}/check?key=***"
    assert call["output"]["body"] == {"got": "Bearer ***", "authorized": True}, "the real secret was sent"
    _assert_nowhere(run, org_id, database, caplog)


def test_an_asynchronous_run_reads_them_and_a_failure_shows_only_masks(owner, upstream, database, caplog):
    browser, org_id, token = owner
    _org_values(browser, token, upstream)
    definition = {
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "pause", "type": "delay", "seconds": 0},
            {"id": "shout", "type": "transform", "expression": "vars.GREETING"},
            {
                "id": "refused",
                "type": "http_request",
                "url": "{{ vars.API_URL }}/missing/{{ secrets.API_TOKEN }}",
                "headers": {"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
                "on_error": [
                    {"id": "why", "type": "transform", "expression": "error.message"},
                    {
                        "id": "fail",
                        "type": "code",
                        "source": "throw new Error('no: ' + ctx.secrets.API_TOKEN)",
                    },
                ],
            },
        ],
    }
    workflow = _workflow(browser, token, definition)
    spans.clear()
    with caplog.at_level(logging.DEBUG):
        # (A run's input is stored as it was given: its later activations read it again.)
        started = browser.api(
            "POST", f"/api/v1/workflows/{workflow['id']}/runs", token=token, json={"input": {"k": 1}}
        )
        assert started.status_code == 202, started.json
        drain_jobs(browser.app)
    run = browser.api("GET", f"/api/v1/runs/{started.json['id']}", token=token)
    assert run.json["status"] == "failed", run.json
    steps = {step["step_id"]: step for step in run.json["steps"]}
    assert steps["shout"]["output"] == "hello"
    assert "no: ***" in run.json["error"]
    _assert_nowhere(run, org_id, database, caplog)


# The secret spans character 1000 of a thrown message (where the sandbox cut it), then character
# 4000 of the step's error (where the engine cuts what it records).
@pytest.mark.parametrize("padding", [990, 3960])
def test_a_secret_that_spans_where_an_error_is_cut_leaves_no_part_of_itself(owner, database, padding):
    """Errors are cut to a length for the record: a secret that spanned the cut, cut before the
    run's secrets were masked, no longer matched its mask and its first part was recorded (a URL
    refused for its scheme was quoted cut at 100 characters, a thrown message at 1000)."""
    browser, org_id, token = owner
    spanning = uuid.uuid4().hex + uuid.uuid4().hex
    _put(browser, token, "secrets", "SPANNING", spanning, 201)
    _put(browser, token, "variables", "SCHEME", "ftp", 201)
    definition = {
        "trigger": {"type": "manual"},
        "steps": [
            {
                # refused (its URL was quoted cut at 100 characters, the secret's head with it)
                "id": "fetch",
                "type": "http_request",
                "url": "{{ vars.SCHEME }}://" + "x" * 84 + "{{ secrets.SPANNING }}/",
                "on_error": [
                    {
                        "id": "throw",
                        "type": "code",
                        "source": f"throw new Error('y'.repeat({padding}) + ctx.secrets.SPANNING + 'z'.repeat(200))",
                    }
                ],
            },
        ],
    }
    workflow = _workflow(browser, token, definition)
    started = browser.api("POST", f"/api/v1/workflows/{workflow['id']}/runs", token=token, json={"input": {}})
    assert started.status_code == 202, started.json
    drain_jobs(browser.app)
    run = browser.api("GET", f"/api/v1/runs/{started.json['id']}", token=token)
    assert run.json["status"] == "failed", run.json
    steps = {step["step_id"]: step for step in run.json["steps"]}
    assert "only http and https" in steps["fetch"]["error"]
    assert "Error: yyy" in steps["throw"]["error"] and "***" in steps["throw"]["error"]
    assert len(steps["throw"]["error"]) <= 4000 and len(run.json["error"]) <= 4000
    head = spanning[:8]
    assert head not in run.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        for table in ("workflow_runs", "workflow_run_checkpoints", "workflow_run_events"):
            rows = conn.execute(
                f"SELECT row_to_json(t)::text FROM {table} t WHERE org_id = %s", (org_id,)
            ).fetchall()
            assert not [row for (row,) in rows if head in row], table


def test_a_run_that_breaks_unexpectedly_records_the_error_masked(owner, database, monkeypatch):
    """Whatever breaks a run outside its steps' own failures (a fault of core's) ends it failed
    with the error's text, which may quote what the run rendered: it was never masked (and cut at
    2000 characters, so a secret spanning the cut left its head even had it been)."""
    from nectar.core.runs import runner

    browser, org_id, token = owner
    spanning = uuid.uuid4().hex + uuid.uuid4().hex
    _put(browser, token, "secrets", "SPANNING", spanning, 201)
    definition = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "get", "type": "http_request", "url": "https://example.com/{{ secrets.SPANNING }}"}],
    }
    workflow = _workflow(browser, token, definition)

    def broken(method, url, **kwargs):
        # "the run could not be completed: RuntimeError: " is 46 characters: the secret spans 2000
        raise RuntimeError("z" * 1924 + url)

    monkeypatch.setattr(runner.outbound, "send", broken)
    started = browser.api("POST", f"/api/v1/workflows/{workflow['id']}/runs", token=token, json={"input": {}})
    assert started.status_code == 202, started.json
    drain_jobs(browser.app)
    run = browser.api("GET", f"/api/v1/runs/{started.json['id']}", token=token)
    assert run.json["status"] == "failed" and "RuntimeError: zzz" in run.json["error"], run.json
    assert spanning[:8] not in run.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute("SELECT error FROM workflow_runs WHERE org_id = %s", (org_id,)).fetchall()
    assert rows and not [error for (error,) in rows if spanning[:8] in error]


def _assert_nowhere(run_answer, org_id, database, caplog) -> None:
    """The secret's value is in neither the run API's JSON, the stored run records, the log output
    nor any span (names, attributes, events)."""
    assert SECRET not in run_answer.get_data(as_text=True)
    assert "***" in run_answer.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        for table in ("workflow_runs", "workflow_run_checkpoints", "workflow_run_events"):
            rows = conn.execute(
                f"SELECT row_to_json(t)::text FROM {table} t WHERE org_id = %s", (org_id,)
            ).fetchall()
            assert not [row for (row,) in rows if SECRET in row], table
    # Core's own lines (the HTTP client's request line too); not the test upstream's access log,
    # which is the far side of the call, as a real API's own logs would be.
    ours = [record for record in caplog.records if record.name != "werkzeug"]
    assert ours and not [record for record in ours if SECRET in caplog.handler.format(record)]
    assert any("***" in record.getMessage() for record in ours), "the request line was logged, masked"
    recorded = [
        json.dumps([span.name, dict(span.attributes or {}), [dict(e.attributes or {}) for e in span.events]])
        for span in spans.get_finished_spans()
    ]
    assert recorded, "the calls were traced"
    assert not [span for span in recorded if SECRET in span]


def test_only_names_an_organizations_variable_may_have_are_its_own(owner):
    """`vars.lower_case` is the run's own, as before organizations had variables: null until a
    `set` step sets it, never refused, never read from the database."""
    assert ORGANIZATION_NAME_PATTERN == NAME_PATTERN  # the language's rule is the table's
    browser, _org_id, token = owner
    definition = {
        "trigger": {"type": "http"},
        "steps": [{"id": "r", "type": "respond", "body": {"unset": "{{ vars.not_set_anywhere }}"}}],
    }
    url = _endpoint_url(browser, token, _workflow(browser, token, definition)["id"])
    assert browser.client.post(url, json={}).json == {"unset": None}


def test_saving_refuses_a_name_the_organization_lacks_naming_the_step(owner, upstream):
    browser, _org_id, token = owner
    refused = _workflow(browser, token, _using_both(upstream), status=422)
    messages = {(e["path"], e["message"]) for e in refused["errors"]}
    assert (
        "/steps/1/url",
        "step 'call' reads vars.API_URL, but this organization has no variable named 'API_URL'",
    ) in messages
    assert any(
        path == "/steps/1/headers/Authorization" and "secret named 'API_TOKEN'" in m for path, m in messages
    )
    # `vars.suffix` is set by the workflow's own `set` step: not the organization's to have.
    assert not [m for _p, m in messages if "suffix" in m]
    _put(browser, token, "variables", "API_URL", upstream, 201)
    _put(browser, token, "variables", "GREETIN", "hi", 201)
    again = _workflow(browser, token, _using_both(upstream), status=422)
    assert {e["message"] for e in again["errors"]} == {
        "step 'call' reads secrets.API_TOKEN, but this organization has no secret named 'API_TOKEN'",
        "step 'shout' reads vars.GREETING, but this organization has no variable named 'GREETING' "
        "(did you mean vars.GREETIN?)",
    }
    checked = browser.api(
        "POST", "/api/v1/workflows/validate", token=token, json={"definition": _using_both(upstream)}
    ).json
    assert checked["valid"] is False and len(checked["errors"]) == 3
    code = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "js", "type": "code", "source": "return ctx.secrets.NOPE"}],
    }
    assert "secret named 'NOPE'" in _workflow(browser, token, code, status=422)["errors"][0]["message"]


def test_a_name_deleted_after_saving_fails_its_step_clearly(owner, upstream):
    browser, _org_id, token = owner
    _org_values(browser, token, upstream)
    workflow = _workflow(browser, token, _using_both(upstream))
    url = _endpoint_url(browser, token, workflow["id"])
    assert browser.client.post(url, json={}).status_code == 200
    assert browser.api("DELETE", "/api/v1/variables/GREETING", token=token).status_code == 204
    failed = browser.client.post(url, json={})
    assert failed.status_code == 500, failed.get_data(as_text=True)
    run = browser.api("GET", f"/api/v1/runs/{failed.headers['X-Nectar-Run-Id']}", token=token).json
    assert run["status"] == "failed"
    assert "step 'shout' (transform) failed: vars.GREETING does not exist" in run["error"]
    assert "deleted after the workflow was saved" in run["error"]
    # Put back, the same saved workflow runs again: the value is read at each call, never cached.
    _put(browser, token, "variables", "GREETING", "welcome back", 201)
    assert browser.client.post(url, json={}).json["greeting"] == "welcome back!"


def test_a_call_reads_them_once_and_again_only_after_a_change(owner, upstream, database):
    """With the variables table locked: a call whose workflow names none answers (it reads
    nothing), and so does one whose workflow names some once a call has read them (they are kept
    with the routes); after a change, the next call reads them again (it waits for the lock)."""
    browser, org_id, token = owner
    _org_values(browser, token, upstream)
    respond = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "hi"}]}
    plain = _endpoint_url(browser, token, _workflow(browser, token, respond)["id"], "/plain")
    reading = _endpoint_url(
        browser, token, _workflow(browser, token, _using_both(upstream))["id"], "/reading"
    )
    for url in (plain, reading):  # routes, and what the second reads, loaded and kept
        assert browser.client.post(url, json={}).status_code == 200
    with database.connect(Role.ADMIN) as locker:
        locker.execute("LOCK TABLE organization_variables IN ACCESS EXCLUSIVE MODE")
        for url in (plain, reading):
            call = _in_thread(lambda url=url: Browser(browser.app).client.post(url, json={}))
            call.join(timeout=30)
            assert not call.is_alive() and call.answer.status_code == 200, url
        locker.rollback()
        _put(browser, token, "variables", "GREETING", "changed", 200)
        locker.execute("LOCK TABLE organization_variables IN ACCESS EXCLUSIVE MODE")
        reading_call = _in_thread(lambda: Browser(browser.app).client.post(reading, json={}))
        reading_call.join(timeout=1)
        assert reading_call.is_alive(), "after a change it reads them again"
        locker.rollback()
    reading_call.join(timeout=30)
    assert not reading_call.is_alive() and reading_call.answer.json["greeting"] == "changed!"
    # A change made elsewhere (another process, or by hand) reaches this one as route changes do.
    with database.connect(Role.ADMIN) as conn:
        conn.execute(
            "UPDATE organization_variables SET value = 'from elsewhere' WHERE org_id = %s AND name = 'GREETING'",
            (org_id,),
        )
    deadline = time.monotonic() + 10
    while (greeting := browser.client.post(reading, json={}).json["greeting"]) != "from elsewhere!":
        assert time.monotonic() < deadline, greeting
        time.sleep(0.05)


class _Call(threading.Thread):
    def __init__(self, call):
        super().__init__(daemon=True)
        self.call, self.answer = call, None

    def run(self):
        self.answer = self.call()


def _in_thread(call) -> _Call:
    thread = _Call(call)
    thread.start()
    return thread


def test_another_organization_can_neither_read_nor_use_them(owner, app, upstream):
    browser, _org_id, token = owner
    _org_values(browser, token, upstream)
    other = Browser(app)
    other.sign_up()
    other.create_org()
    other_token = _new_key(other)
    assert other.api("GET", "/api/v1/variables", token=other_token).json["items"] == []
    assert other.api("GET", "/api/v1/secrets", token=other_token).json["items"] == []
    assert other.api("DELETE", "/api/v1/secrets/API_TOKEN", token=other_token).status_code == 404
    assert "no secret named 'API_TOKEN'" in json.dumps(
        _workflow(other, other_token, _using_both(upstream), 422)
    )
    # Its own value of the same name is its own; the first organization's is untouched.
    _put(other, other_token, "variables", "GREETING", "theirs", 201)
    mine = browser.api("GET", "/api/v1/variables", token=token).json["items"]
    assert {v["name"]: v["value"] for v in mine}["GREETING"] == "hello"
    # A workflow of the other organization may not even name them: it cannot be saved.
    refused = _workflow(
        other,
        other_token,
        {
            "trigger": {"type": "manual"},
            "steps": [{"id": "peek", "type": "transform", "expression": "secrets.API_TOKEN"}],
        },
        status=422,
    )
    assert refused["errors"][0]["path"] == "/steps/0/expression"


def test_keys_rotate_and_secrets_still_decrypt(owner, upstream, settings_for, database, monkeypatch, capsys):
    browser, _org_id, token = owner
    _org_values(browser, token, upstream)
    url = _endpoint_url(browser, token, _workflow(browser, token, _using_both(upstream))["id"])
    environ = database.environ(NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B},a:{KEY_A}")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert admin_main(["rotate-credentials"]) == 0
    printed = capsys.readouterr().out
    assert "with key b" in printed and "organization_secrets.value_ciphertext: " in printed
    with database.connect(Role.ADMIN) as conn:
        assert {row[0] for row in conn.execute("SELECT key_id FROM organization_secrets")} == {"b"}
    only_b = _make_app(settings_for, f"b:{KEY_B}")
    try:
        answer = Browser(only_b).client.post(url, json={})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        run = (
            Browser(only_b).api("GET", f"/api/v1/runs/{answer.headers['X-Nectar-Run-Id']}", token=token).json
        )
        call = next(step for step in run["steps"] if step["step_id"] == "call")
        assert call["output"]["body"]["authorized"] is True, "decrypted with the new key and sent"
    finally:
        with only_b.app_context():
            db.engine.dispose()
