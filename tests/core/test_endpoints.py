"""Tenant endpoints end to end: define a workflow and an endpoint through the API, call it, and
inspect the recorded runs. Plus the guard on outbound HTTP."""

from __future__ import annotations

import io
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nectar.core.app import create_app
from nectar.core.endpoints import service as endpoint_service
from nectar.core.runs.writer import run_writer
from nectar.shared.config import Role, Service
from nectar.shared.database import RoundTrips, db
from tests.core.conftest import SERVICE_TOKEN, Browser, drain_jobs, run_and_wait
from tests.core.test_api import _new_key
from tests.core.upstream import serving

PRICE_CHECK = {
    "trigger": {"type": "http"},
    "steps": [
        {"id": "total", "type": "transform", "expression": "sum(trigger.body.items[].price)"},
        {
            "id": "check",
            "type": "condition",
            "if": "steps.total > `100`",
            "then": [
                {
                    "id": "big",
                    "type": "respond",
                    "status": 200,
                    "body": {"order": "{{ trigger.params.id }}", "total": "{{ steps.total }}", "tier": "big"},
                }
            ],
            "else": [
                {
                    "id": "small",
                    "type": "respond",
                    "status": 200,
                    "body": {
                        "order": "{{ trigger.params.id }}",
                        "total": "{{ steps.total }}",
                        "tier": "small",
                    },
                }
            ],
        },
    ],
}
ITEMS_SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}},
        }
    },
}


@pytest.fixture
def owner(browser):
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    return browser, org, token


def _workflow(browser, token, definition=PRICE_CHECK, name=None):
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": name or f"wf-{uuid.uuid4().hex[:6]}", "definition": definition},
    )
    assert created.status_code == 201, created.json
    return created.json["id"]


def _endpoint(browser, token, workflow_id, **fields):
    body = {
        "method": "POST",
        "path": "/orders/{id}/total",
        "workflow_id": workflow_id,
        "auth": "public",
        **fields,
    }
    created = browser.api("POST", "/api/v1/endpoints", token=token, json=body)
    assert created.status_code == 201, created.json
    return created.json


def test_a_public_endpoint_runs_its_workflow_and_records_the_run(owner):
    browser, org, token = owner
    endpoint = _endpoint(browser, token, _workflow(browser, token), request_schema=ITEMS_SCHEMA)
    answer = browser.client.post(
        endpoint["url"].replace("{id}", "A-17"), json={"items": [{"price": 90}, {"price": 20}]}
    )
    assert answer.status_code == 200
    assert answer.json == {"order": "A-17", "total": 110, "tier": "big"}
    run_id = answer.headers["X-Nectar-Run-Id"]
    run = browser.api("GET", f"/api/v1/runs/{run_id}", token=token).json
    assert run["status"] == "succeeded" and run["trigger"] == "http"
    assert [s["step_id"] for s in run["steps"]] == ["total", "check", "big"]
    assert run["steps"][0]["output"] == 110
    listed = browser.api("GET", "/api/v1/runs?status=succeeded", token=token).json["items"]
    assert run_id in {r["id"] for r in listed}


def test_bad_bodies_get_the_exact_path_of_each_problem(owner):
    browser, _org, token = owner
    endpoint = _endpoint(browser, token, _workflow(browser, token), request_schema=ITEMS_SCHEMA)
    url = endpoint["url"].replace("{id}", "1")
    wrong = browser.client.post(url, json={"items": [{"price": "ten"}]})
    assert wrong.status_code == 422 and wrong.mimetype == "application/problem+json"
    assert wrong.json["errors"][0]["path"] == "/items/0/price"
    assert browser.client.post(url, data="{not json", content_type="application/json").status_code == 400
    huge = browser.client.post(url, data="x" * (300 * 1024), content_type="text/plain")
    assert huge.status_code == 413
    # Sent without a length (chunked), a huge body is refused after the limit, not read whole.
    stream = io.BytesIO(b"x" * (300 * 1024))
    unannounced = browser.client.post(
        url,
        input_stream=stream,
        content_type="text/plain",
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert unannounced.status_code == 413 and stream.tell() <= 256 * 1024 + 1


def test_api_key_endpoints_need_a_key_of_their_own_organization(owner, new_browser):
    browser, _org, token = owner
    endpoint = _endpoint(
        browser, token, _workflow(browser, token), auth="api_key", method="GET", path="/ping"
    )
    assert browser.client.get(endpoint["url"]).status_code == 401
    other = new_browser()
    other.sign_up()
    other.create_org()
    foreign = _new_key(other)
    assert (
        browser.client.get(endpoint["url"], headers={"Authorization": f"Bearer {foreign}"}).status_code == 401
    )
    assert browser.client.get(endpoint["url"], headers={"Authorization": f"Bearer {token}"}).status_code in (
        200,
        500,
    )


def test_the_plan_rate_limit_answers_429(owner, monkeypatch):
    browser, _org, token = owner
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 3)
    endpoint = _endpoint(browser, token, _workflow(browser, token), method="POST")
    url = endpoint["url"].replace("{id}", "9")
    codes = [browser.client.post(url, json={"items": []}).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def _changed_elsewhere(database, statement: str, org, then) -> None:
    """Runs `statement` on a connection of its own (another process, as far as routes are
    concerned) and polls until `then()` holds: the change reaches this process by NOTIFY."""
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(statement, (org,))
    deadline = time.monotonic() + 10
    while not then():
        assert time.monotonic() < deadline, f"{statement!r} never took effect"
        time.sleep(0.05)


def test_changes_take_effect_for_the_next_call(owner, database):
    """Routes are kept in memory per process: every kind of change must still reach the next call,
    whether made through this process (at once) or by another one (through NOTIFY)."""
    browser, org, token = owner
    workflow_id = _workflow(browser, token)
    endpoint = _endpoint(browser, token, workflow_id, auth="api_key")
    url, body = endpoint["url"].replace("{id}", "7"), {"items": [{"price": 150}]}
    key = {"Authorization": f"Bearer {token}"}
    assert browser.client.post(url, json=body, headers=key).json["tier"] == "big"
    # A new version through the API (this process): the very next call runs it.
    changed = json.loads(json.dumps(PRICE_CHECK).replace('"big"', '"large"'))
    saved = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/versions", token=token, json={"definition": changed}
    )
    assert saved.status_code == 201, saved.json
    assert browser.client.post(url, json=body, headers=key).json["tier"] == "large"

    # Changes made by another process (here a raw connection): a revoked key, a disabled
    # endpoint, a suspended organization, each refused once PostgreSQL has told this process.
    def answers(status: int, headers=None):
        return lambda: browser.client.post(url, json=body, headers=headers).status_code == status

    _changed_elsewhere(
        database, "UPDATE api_keys SET revoked_at = now() WHERE org_id = %s", org, answers(401, key)
    )
    _changed_elsewhere(database, "UPDATE endpoints SET auth = 'public' WHERE org_id = %s", org, answers(200))
    _changed_elsewhere(
        database, "UPDATE endpoints SET is_enabled = false WHERE org_id = %s", org, answers(404)
    )
    _changed_elsewhere(
        database, "UPDATE endpoints SET is_enabled = true WHERE org_id = %s", org, answers(200)
    )
    _changed_elsewhere(
        database, "UPDATE organizations SET status = 'suspended' WHERE id = %s", org, answers(404)
    )


def test_every_answered_call_is_recorded_once(owner, core_app, database, monkeypatch):
    """Runs are written after the answer, many per transaction: 200 calls from 8 threads, each
    answered, each recorded exactly once with its steps."""
    browser, org, token = owner
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 1000)
    # One organization is all of this test's load: it may hold every thread (fairness is tested apart).
    monkeypatch.setattr(core_app.wsgi_app.app.shares, "most", 8)  # inside the observing middleware
    endpoint = _endpoint(browser, token, _workflow(browser, token))
    url = endpoint["url"].replace("{id}", "9")
    counted_before = _runs_counted(core_app, "http", "succeeded")

    def call(n):
        answer = core_app.test_client().post(url, json={"items": [{"price": n}]})
        assert answer.status_code == 200
        return answer.headers["X-Nectar-Run-Id"]

    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(call, range(200)))
    with core_app.app_context():
        run_writer(db.engine).flush()
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT id::text, jsonb_array_length(steps), output -> 'response' -> 'body' ->> 'total' "
            "FROM workflow_runs WHERE org_id = %s AND trigger = 'http'",
            (org,),
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(run_ids)
    assert {r[1] for r in rows} == {3}
    assert sorted(int(r[2]) for r in rows) == list(range(200))
    assert _runs_counted(core_app, "http", "succeeded") - counted_before == 200  # the metrics agree


def _runs_counted(app, trigger: str, status: str) -> float:
    """nectar_workflow_runs_total for `trigger` and `status`, as a scrape of /metrics reads it."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nectar_workflow_runs_total" and sample.labels == {
                "trigger": trigger,
                "status": status,
            }:
                return sample.value
    return 0.0


def test_the_same_idempotency_key_runs_once(owner, database):
    browser, org, token = owner
    workflow_id = _workflow(browser, token)
    endpoint = _endpoint(browser, token, workflow_id)
    url = endpoint["url"].replace("{id}", "5")
    headers = {"Idempotency-Key": "delivery-123"}
    first = browser.client.post(url, json={"items": [{"price": 1}]}, headers=headers)
    second = browser.client.post(url, json={"items": [{"price": 1}]}, headers=headers)
    assert first.json == second.json and second.headers["Idempotent-Replayed"] == "true"
    assert first.headers["X-Nectar-Run-Id"] == second.headers["X-Nectar-Run-Id"]
    retried = browser.client.post(  # a retry may carry other headers (a new timestamp, a trace id)
        url, json={"items": [{"price": 1}]}, headers={**headers, "X-Request-Id": "retry-2"}
    )
    assert retried.headers["X-Nectar-Run-Id"] == first.headers["X-Nectar-Run-Id"]
    for other in (
        {"json": {"items": [{"price": 2}]}},
        {"json": {"items": [{"price": 1}]}, "query_string": "a=1"},
    ):
        reused = browser.client.post(url, headers=headers, **other)
        assert reused.status_code == 422, reused.json  # a key names one request; this one never ran
        assert (
            reused.json["errors"][0]["field"] == "Idempotency-Key"
            and "different request" in reused.json["detail"]
        )
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM workflow_runs WHERE workflow_id = %s", (workflow_id,)
            ).fetchone()[0]
            == 1
        )


def test_keys_of_the_platforms_own_runs_are_refused_and_a_key_names_one_request(owner, database):
    browser, org, token = owner
    workflow_id = _workflow(browser, token)
    url = _endpoint(browser, token, workflow_id)["url"].replace("{id}", "5")
    body = {"items": [{"price": 1}]}

    def run_with(key: str):
        return browser.api(
            "POST",
            f"/api/v1/workflows/{workflow_id}/runs",
            token=token,
            json={"input": body},
            headers={"Idempotency-Key": key},
        )

    for key in ("schedule:2027-01-04T09:00:00+00:00", "call:6f1c0e52-0000-5000-8000-000000000000", "alert:x"):
        refused = browser.client.post(url, json=body, headers={"Idempotency-Key": key})
        assert refused.status_code == 400 and "platform" in refused.json["detail"], refused.json
        started = run_with(key)
        assert started.status_code == 400 and "platform" in started.json["detail"], started.json
    queued = run_with("shared-1")
    assert queued.status_code == 202, queued.json
    again = run_with("shared-1")
    assert (
        again.status_code == 200
        and again.json["id"] == queued.json["id"]
        and again.json["status"] == "queued"
    )
    # The same key for a call of the workflow's endpoint is another request: refused, not replayed.
    answer = browser.client.post(url, json=body, headers={"Idempotency-Key": "shared-1"})
    assert answer.status_code == 422 and answer.json["errors"][0]["field"] == "Idempotency-Key", answer.json
    with database.connect(Role.ADMIN) as conn:
        count = conn.execute("SELECT count(*) FROM workflow_runs WHERE workflow_id = %s", (workflow_id,))
        assert count.fetchone()[0] == 1


def test_a_failing_workflow_answers_500_with_its_run_and_never_a_traceback(owner):
    browser, _org, token = owner
    failing = {
        "trigger": {"type": "http"},
        "steps": [{"id": "boom", "type": "transform", "expression": "abs(trigger.body)"}],
    }
    endpoint = _endpoint(browser, token, _workflow(browser, token, failing), method="POST", path="/boom")
    answer = browser.client.post(endpoint["url"], json="text")
    assert answer.status_code == 500 and answer.mimetype == "application/problem+json"
    assert "step 'boom' (transform) failed" in answer.json["detail"] and "Traceback" not in answer.get_data(
        as_text=True
    )
    run = browser.api("GET", f"/api/v1/runs/{answer.json['run_id']}", token=token).json
    assert run["status"] == "failed" and run["steps"][0]["status"] == "failed"


def test_versions_rollback_and_reruns(owner):
    browser, _org, token = owner
    workflow_id = _workflow(browser, token)
    v2 = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "version two"}]}
    assert (
        browser.api(
            "POST", f"/api/v1/workflows/{workflow_id}/versions", token=token, json={"definition": v2}
        ).json["version"]
        == 2
    )
    invalid = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/versions", token=token, json={"definition": {"steps": "no"}}
    )
    assert invalid.status_code == 422 and {e["path"] for e in invalid.json["errors"]} >= {"/", "/steps"}
    run = run_and_wait(browser, token, workflow_id, {"body": {"items": []}})
    assert run["status"] == "succeeded" and run["steps"][0]["output"] == "version two"
    assert (
        browser.api(
            "POST", f"/api/v1/workflows/{workflow_id}/rollback", token=token, json={"version": 1}
        ).json["version"]
        == 3
    )
    again_id = browser.api("POST", f"/api/v1/runs/{run['id']}/rerun", token=token, json={}).json["id"]
    current_id = browser.api(
        "POST", f"/api/v1/runs/{run['id']}/rerun", token=token, json={"version": "current"}
    ).json["id"]
    drain_jobs(browser.app)
    again = browser.api("GET", f"/api/v1/runs/{again_id}", token=token).json
    assert (
        again["rerun_of"] == run["id"] and again["steps"][0]["output"] == "version two"
    )  # the original version
    current = browser.api("GET", f"/api/v1/runs/{current_id}", token=token).json
    assert [s["step_id"] for s in current["steps"]] == ["total", "check", "small"]  # version 3 = version 1


def test_the_organization_openapi_lists_its_endpoints(owner):
    browser, _org, token = owner
    _endpoint(browser, token, _workflow(browser, token), request_schema=ITEMS_SCHEMA)
    document = browser.api("GET", "/api/v1/endpoints/openapi.json", token=token).json
    operation = document["paths"]["/orders/{id}/total"]["post"]
    assert operation["parameters"][0]["name"] == "id"
    assert operation["requestBody"]["content"]["application/json"]["schema"] == ITEMS_SCHEMA


def test_an_endpoint_call_costs_at_most_five_database_round_trips(owner, core_app):
    browser, _org, token = owner
    endpoint = _endpoint(browser, token, _workflow(browser, token))
    url = endpoint["url"].replace("{id}", "1")
    caller = core_app.test_client()  # an API caller: no session cookie
    caller.post(url, json={"items": []})  # warm
    with core_app.app_context():
        writer = run_writer(db.engine)
    writer.flush()  # the warm-up call's run is not this call's
    with RoundTrips() as trips:
        assert caller.post(url, json={"items": [{"price": 3}]}).status_code == 200
        writer.flush()  # the run is written just after the answer: count that too
    assert 1 <= trips.count <= 5, trips.count
    with RoundTrips() as keyed:
        assert (
            caller.post(url, json={"items": [{"price": 3}]}, headers={"Idempotency-Key": "k-1"}).status_code
            == 200
        )
    assert keyed.count > trips.count, "the counter must see the extra lookups an idempotency key costs"


# --- outbound HTTP guard ----------------------------------------------------------------------------


def _upstream_answer(path: str, headers: dict):
    if path == "/redirect":
        return 302, {"Location": "http://169.254.169.254/latest/meta-data/"}, None
    return 200, {}, {"hello": "from upstream", "path": path}


@pytest.fixture(scope="module")
def upstream():
    with serving(_upstream_answer) as url:
        yield url


def _fetching(url):
    return {
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "get", "type": "http_request", "url": url},
            {"id": "r", "type": "respond", "body": "{{ steps.get.body }}"},
        ],
    }


@pytest.mark.parametrize(
    "target",
    [
        "{upstream}/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "file:///etc/passwd",
        # IPv6 forms that carry an IPv4 address: 6to4, NAT64 (well-known and local-use), Teredo
        # (its client is stored inverted), IPv4-compatible
        "http://[2002:7f00:1::]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1:a00:1::]/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
        "http://[::a00:1]/",
    ],
)
def test_workflows_cannot_reach_internal_addresses(owner, upstream, target):
    browser, _org, token = owner
    workflow_id = _workflow(browser, token, _fetching(target.format(upstream=upstream)))
    run = run_and_wait(browser, token, workflow_id)
    assert run["status"] == "failed"
    assert "refused" in run["error"] or "only http and https" in run["error"]


def test_an_allowlisted_address_is_reachable_and_redirects_are_not_followed(settings_for, upstream, database):
    app = create_app(
        settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32")
    )
    browser = Browser(app)
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    ok = run_and_wait(browser, token, _workflow(browser, token, _fetching(upstream + "/hello")))
    assert ok["status"] == "succeeded" and ok["steps"][1]["output"] == {
        "hello": "from upstream",
        "path": "/hello",
    }
    redirected = run_and_wait(browser, token, _workflow(browser, token, _fetching(upstream + "/redirect")))
    assert (
        redirected["status"] == "succeeded"
    )  # the 302 itself is the answer; nobody went to the metadata address
    assert redirected["steps"][0]["output"]["status"] == 302
    with app.app_context():
        db.engine.dispose()


def test_an_outbound_call_ignores_the_workers_proxy_and_netrc(upstream, monkeypatch, tmp_path):
    """requests honours HTTP(S)_PROXY and ~/.netrc by default: a proxy would resolve the tenant's
    host itself (past the check and the pinned address) and a netrc entry would log the platform
    in to whatever host a tenant names. Neither may reach a workflow's call."""
    import ipaddress

    from nectar.core.workflows import outbound

    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login platform password platform-netrc-password\n")
    netrc.chmod(0o600)

    def echo(path, headers):
        return 200, {}, {"from": "target", "authorization": headers.get("Authorization")}

    with serving(echo) as target, serving(lambda path, headers: (200, {}, {"from": "proxy"})) as proxy:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.setenv("NETRC", str(netrc))
        policy = outbound.OutboundPolicy(allowlist=(ipaddress.ip_network("127.0.0.1/32"),))
        result = outbound.send("GET", f"{target}/x", policy=policy)
    assert result.body == {"from": "target", "authorization": None}


def test_an_answer_nested_past_the_parsers_depth_fails_the_step_not_the_call(owner, settings_for):
    """A target answering JSON nested thousands deep: its step fails (on_error applies), the call
    answers as its workflow says and its run is recorded, never a 500 from the parser's recursion."""
    from tests.serving import served

    deep = b"[" * 5000 + b"]" * 5000

    def nested(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(deep)))])
        return [deep]

    app = create_app(
        settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32")
    )
    browser = Browser(app)
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    with served(nested) as url:
        definition = {
            "trigger": {"type": "http"},
            "steps": [
                {"id": "get", "type": "http_request", "url": url + "/deep"},
                {"id": "r", "type": "respond", "status": 200, "body": {"kind": "{{ type(steps.get.body) }}"}},
            ],
        }
        workflow_id = _workflow(browser, token, definition)
        _endpoint(browser, token, workflow_id, method="GET", path="/deep")
        answer = browser.client.get(f"/e/{org}/deep")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json == {"kind": "string"}  # not JSON the run can hold: the text, as for any body
    with app.app_context():
        db.engine.dispose()


# --- what a tenant endpoint may not do to the platform's origin or its callers ------------------


def test_endpoints_never_see_cookies_and_cannot_script_the_origin(owner, database):
    browser, org, token = owner
    echo = {
        "trigger": {"type": "http"},
        "steps": [
            {
                "id": "r",
                "type": "respond",
                "headers": {
                    "Content-Type": "text/html",
                    "Set-Cookie": "stolen=1",
                    "Content-Security-Policy": "script-src *",
                },
                "body": "{{ trigger.headers }}",
            }
        ],
    }
    endpoint = _endpoint(browser, token, _workflow(browser, token, echo), method="GET", path="/echo")
    answer = browser.client.get(
        endpoint["url"], headers={"Cookie": "nectar_core_session=secret-session", "X-Trace": "t1"}
    )
    assert answer.status_code == 200
    assert "secret-session" not in answer.get_data(as_text=True) and "t1" in answer.get_data(as_text=True)
    assert "Set-Cookie" not in answer.headers
    assert answer.headers["Content-Security-Policy"].startswith("sandbox")
    with database.connect(Role.ADMIN) as conn:
        stored = conn.execute("SELECT input::text FROM workflow_runs WHERE org_id = %s", (org,)).fetchall()
    assert all("secret-session" not in row[0] for row in stored)


def test_calls_outside_flasks_request_handling_still_answer_every_case_as_a_problem(
    owner, monkeypatch, caplog
):
    browser, org, token = owner
    url = _endpoint(browser, token, _workflow(browser, token))["url"].replace("{id}", "9")
    for method in ("HEAD", "OPTIONS", "TRACE"):
        refused = browser.client.open(url, method=method)
        assert refused.status_code == 405, method
        assert refused.headers["Allow"] == "GET, POST, PUT, PATCH, DELETE"
    missing = browser.client.post(f"/e/{org}/nothing/here", json={})
    assert missing.status_code == 404 and missing.json["detail"] == "No endpoint POST /nothing/here here."
    for answer in (missing, refused):
        assert answer.headers["Content-Security-Policy"].startswith("sandbox")
        assert answer.headers["X-Frame-Options"] == "DENY"
    assert browser.client.post(f"/e/{org}", json={}).status_code == 404  # not a call: Flask's 404
    empty_segment = browser.client.post(url.replace("/orders/", "/orders//"), json={})
    assert empty_segment.status_code == 404  # no endpoint path has an empty segment

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr("nectar.core.endpoints.serve.execute", broken)
    failed = browser.client.post(url, json={"items": []})
    assert failed.status_code == 500 and failed.mimetype == "application/problem+json"
    assert "bug in the engine" not in failed.get_data(as_text=True)
    assert failed.headers["Content-Security-Policy"].startswith("sandbox")
    assert any("bug in the engine" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_unsafe_endpoint_definitions_are_refused(owner):
    browser, _org, token = owner
    workflow_id = _workflow(browser, token)
    remote = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={
            "method": "POST",
            "path": "/x",
            "workflow_id": workflow_id,
            "request_schema": {"$ref": "http://169.254.169.254/"},
        },
    )
    assert remote.status_code == 422 and "Only local references" in json.dumps(remote.json)
    twice = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "GET", "path": "/{a}/{a}", "workflow_id": workflow_id},
    )
    assert twice.status_code == 422


def test_a_pin_to_a_version_the_workflow_lacks_is_refused_when_saved(owner):
    """Routing joins on the pinned version: a pin to a version that does not exist saved fine and
    the endpoint then answered 404 to every call, with nothing said."""
    browser, _org, token = owner
    three = _workflow(browser, token, name="three versions")
    for body in ("two", "three"):
        changed = {
            "trigger": {"type": "http"},
            "steps": [{"id": "r", "type": "respond", "body": {"v": body}}],
        }
        saved = browser.api(
            "POST", f"/api/v1/workflows/{three}/versions", token=token, json={"definition": changed}
        )
        assert saved.status_code == 201, saved.json
    one = _workflow(browser, token, name="one version")
    fields = {"method": "POST", "path": "/pinned", "workflow_id": three, "auth": "public"}

    def refused(answer, workflow_name, version, last):
        assert answer.status_code == 422, answer.json
        assert answer.json["errors"] == [
            {
                "path": "/pinned_version",
                "message": f"workflow {workflow_name!r} has no version {version}; its versions are 1-{last}",
            }
        ]

    refused(
        browser.api("POST", "/api/v1/endpoints", token=token, json={**fields, "pinned_version": 4}),
        "three versions",
        4,
        3,
    )
    endpoint = _endpoint(browser, token, three, path="/pinned", pinned_version=2)
    assert endpoint["pinned_version"] == 2
    assert browser.client.post(endpoint["url"], json={}).get_json() == {"v": "two"}
    # Moved to a workflow with fewer versions in the same request: the pin is checked against it.
    moved = browser.api(
        "PUT",
        f"/api/v1/endpoints/{endpoint['id']}",
        token=token,
        json={**fields, "workflow_id": one, "pinned_version": 2},
    )
    refused(moved, "one version", 2, 1)
    kept = browser.api("GET", "/api/v1/endpoints", token=token).json["items"]
    assert [(e["workflow_id"], e["pinned_version"]) for e in kept] == [(three, 2)]
    unpinned = browser.api(
        "PUT", f"/api/v1/endpoints/{endpoint['id']}", token=token, json={**fields, "workflow_id": one}
    )
    assert unpinned.status_code == 200 and unpinned.json["pinned_version"] is None


def test_input_text_cannot_hold_is_refused_before_the_workflow_runs(owner, database):
    browser, _org, token = owner
    endpoint = _endpoint(
        browser,
        token,
        _workflow(
            browser,
            token,
            {
                "trigger": {"type": "http"},
                "steps": [{"id": "r", "type": "respond", "body": "{{ trigger.query }}"}],
            },
        ),
        method="POST",
        path="/odd",
    )
    assert (
        browser.client.post(endpoint["url"], data='{"a": NaN}', content_type="application/json").status_code
        == 400
    )
    nul = browser.client.post(endpoint["url"] + "?q=a%00b", json={})
    assert nul.status_code == 400 and nul.json["errors"][0]["field"] == "q"
    lone = browser.client.post(endpoint["url"], data='{"s": ["a\\ud800b"]}', content_type="application/json")
    assert lone.status_code == 400 and lone.json["errors"][0]["path"] == "/s/0"
    text = browser.client.post(endpoint["url"], data=b"a\x00b", content_type="text/plain")
    assert text.status_code == 400 and "NUL" in text.json["detail"]
    deep = browser.client.post(endpoint["url"], data="[" * 300 + "]" * 300, content_type="application/json")
    assert deep.status_code == 400 and "deeper than 100 levels" in deep.json["detail"]
    for charset in ("base64", "hex", "rot13"):
        encoded = browser.client.post(
            endpoint["url"], data=b"e30=", content_type=f"text/plain; charset={charset}"
        )
        assert encoded.status_code == 415, charset
    with database.connect(Role.ADMIN) as conn:
        runs = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE workflow_id = %s", (endpoint["workflow_id"],)
        )
        assert runs.fetchone() == (0,)


def test_response_headers_a_server_cannot_send_are_left_out_under_gunicorn(owner, database):
    """A workflow's response headers come from its caller's input: a value with a control character
    or one past Latin-1, or a name that is no HTTP token, is left out (as one with a line break is),
    not a failed answer from gunicorn, which refuses to write them."""
    import requests

    from tests.serving import service_process

    browser, _org, token = owner
    answer_with_header = {
        "trigger": {"type": "http"},
        "steps": [
            {
                "id": "r",
                "type": "respond",
                "headers": {"X-Ref": "{{ trigger.body.ref }}", "Bad Name": "x", "X-Kept": "yes"},
                "body": {"ok": True},
            }
        ],
    }
    path = _endpoint(browser, token, _workflow(browser, token, answer_with_header), path="/ref")["url"]
    with service_process("nectar.core.main", database.environ(WEB_CONCURRENCY="1")) as url:
        for ref in ("a\x01b", "snow \u2603", "tab\tand é"):
            answer = requests.post(url + path, json={"ref": ref}, timeout=30)
            assert answer.status_code == 200 and answer.json() == {"ok": True}, (ref, answer.text)
            assert answer.headers["X-Kept"] == "yes" and "Bad Name" not in answer.headers
            kept = answer.headers.get("X-Ref")
            assert kept == (ref if ref.startswith("tab") else None), ref  # Latin-1 text is sent as it is


def test_bodies_in_any_encoding_are_read_and_every_run_is_recorded(owner):
    """UTF-16 JSON (as json.loads reads it), a charset Python does not know (read as UTF-8), and
    bytes that are not UTF-8 (replaced): each call is answered and its run recorded."""
    browser, _org, token = owner
    echo = {
        "trigger": {"type": "http"},
        "steps": [{"id": "r", "type": "respond", "body": "{{ trigger.body }}"}],
    }
    url = _endpoint(browser, token, _workflow(browser, token, echo), path="/echo")["url"]
    utf16 = browser.client.post(url, data='{"a": "é"}'.encode("utf-16"), content_type="application/json")
    assert utf16.status_code == 200 and utf16.json == {"a": "é"}
    unknown = browser.client.post(url, data="café".encode(), content_type="text/plain; charset=no-such")
    assert unknown.status_code == 200 and unknown.get_data(as_text=True) == "café"
    latin = browser.client.post(url, data=b"caf\xe9", content_type="text/plain")
    assert latin.status_code == 200
    run = browser.api("GET", f"/api/v1/runs/{latin.headers['X-Nectar-Run-Id']}", token=token)
    assert run.status_code == 200 and run.json["input"]["body"] == "caf\ufffd"


def test_an_answer_without_content_sends_no_body(owner):
    """A 204 with a body would be read as the start of the next answer on a kept-alive connection."""
    browser, _org, token = owner
    no_content = {
        "trigger": {"type": "http"},
        "steps": [{"id": "r", "type": "respond", "status": 204, "body": {"ignored": True}}],
    }
    url = _endpoint(browser, token, _workflow(browser, token, no_content), path="/gone")["url"]
    answer = browser.client.post(url, json={})
    assert answer.status_code == 204 and answer.get_data() == b"" and "Content-Length" not in answer.headers
    informational = {**no_content, "steps": [{**no_content["steps"][0], "status": 101}]}
    refused = browser.api(
        "POST", "/api/v1/workflows", token=token, json={"name": "x", "definition": informational}
    )
    assert refused.status_code == 422 and any("status" in e["path"] for e in refused.json["errors"])


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254\\\\@example.com/", "http://user:pw@example.com/", "http://example.com /x"],
)
def test_ambiguous_urls_are_refused_before_any_connection(url):
    from nectar.core.workflows.outbound import OutboundPolicy, OutboundRefused, check_url

    with pytest.raises(OutboundRefused):
        check_url(url, OutboundPolicy())


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:a00:1:1::5", "10.0.0.1"),
        ("2002:a9fe:a9fe::", "169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b::7f00:1", "127.0.0.1"),
        # local-use NAT64: where the IPv4 address sits depends on the operator's prefix length
        ("64:ff9b:1:a00:1::", ""),
        ("64:ff9b:1::808:808", ""),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo client, stored inverted
        ("2001:0:a00:1:8000:63bf:3fe3:c3f6", "10.0.0.1"),  # Teredo server
        ("::7f00:1", "127.0.0.1"),
        ("::a9fe:a9fe", "169.254.169.254"),
    ],
)
def test_ipv6_addresses_that_carry_a_refused_ipv4_address_are_refused(address, embedded):
    import ipaddress

    from nectar.core.workflows.outbound import OutboundPolicy, OutboundRefused, check_url

    with pytest.raises(OutboundRefused, match=f"private or internal address.*{embedded}") as refused:
        check_url(f"http://[{address}]/", OutboundPolicy())
    assert "refused" in str(refused.value)
    # an allowlisted network still wins, as for any other address
    allowed = check_url(f"http://[{address}]/", OutboundPolicy.from_setting(f"{address}/128"))
    assert ipaddress.ip_address(allowed) == ipaddress.ip_address(address)


def test_ipv6_addresses_that_carry_a_public_ipv4_address_pass():
    from nectar.core.workflows.outbound import OutboundPolicy, check_url

    assert check_url("http://[2002:808:808::1]/", OutboundPolicy()) == "2002:808:808::1"


def test_a_dns_answer_that_changes_after_the_check_cannot_redirect_the_connection(monkeypatch):
    """DNS rebinding: the name first resolves to an allowed address, then (when the HTTP library
    would look it up again) to a forbidden one. The connection must go to the address checked."""
    import socket

    from nectar.core.workflows import outbound

    policy = outbound.OutboundPolicy.from_setting("127.0.0.1/32")
    answers = iter(["127.0.0.1", "10.255.255.1"])
    lookups = []

    def rebinding_resolver(host, port, *args, **kwargs):
        if host.replace(".", "").isdigit():  # an address literal resolves to itself, as in libc
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        address = next(answers, "10.255.255.1")
        lookups.append((host, address))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    with serving(_upstream_answer) as url:
        port = url.rsplit(":", 1)[1]
        monkeypatch.setattr(socket, "getaddrinfo", rebinding_resolver)
        result = outbound.send("GET", f"http://rebinding.example:{port}/pinned", policy=policy, timeout=5)
    assert result.status == 200
    assert result.body == {"hello": "from upstream", "path": "/pinned"}
    assert lookups == [("rebinding.example", "127.0.0.1")], "the name must be resolved once, by the check"


def test_two_deliveries_of_one_key_at_once_run_the_workflow_once(settings_for):
    """The second delivery waits for the first and replays its answer: the upstream is called once."""
    import threading
    import time

    calls = []

    def slow_upstream(path, headers):
        calls.append(path)
        time.sleep(0.5)  # long enough for the second delivery to arrive while the first runs
        return 200, {}, {"charged": len(calls)}

    app = create_app(
        settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32")
    )
    browser = Browser(app)
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    with serving(slow_upstream) as upstream:
        charge = {
            "trigger": {"type": "http"},
            "steps": [
                {"id": "charge", "type": "http_request", "url": upstream + "/charge"},
                {"id": "r", "type": "respond", "body": "{{ steps.charge.body }}"},
            ],
        }
        endpoint = _endpoint(browser, token, _workflow(browser, token, charge), method="POST", path="/charge")
        answers = []

        def deliver():
            answer = app.test_client().post(endpoint["url"], json={}, headers={"Idempotency-Key": "pay-1"})
            answers.append((answer.status_code, answer.get_json()))

        threads = [threading.Thread(target=deliver) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert calls == ["/charge"]
    assert answers == [(200, {"charged": 1})] * 2
    with app.app_context():
        db.engine.dispose()


def test_a_server_that_drips_its_answer_is_cut_off_at_the_time_limit():
    """Each byte arrives well within the per-read timeout; the whole answer never would."""
    import socket
    import threading
    import time

    from nectar.core.workflows import outbound

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        while not stop.is_set():
            try:
                conn.sendall(b"x")
            except OSError:
                break
            time.sleep(0.1)
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(outbound.OutboundRefused, match="no complete answer .* within 1 s"):
            outbound.send(
                "GET",
                f"http://127.0.0.1:{port}/",
                policy=outbound.OutboundPolicy.from_setting("127.0.0.1/32"),
                timeout=1,
            )
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 5
