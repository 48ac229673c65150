"""call_workflow, parallel and waiting endpoints on the real database and queue: a caller gets its
called run's output after that run waited, calls nest only so deep and never in a cycle, branches
of a run overlap on a slow server, and an endpoint whose workflow waits answers 202 with a URL
that later shows the finished run."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from nectar.core.runs.queue import MAX_QUEUED_RUNS, MAX_UNFINISHED_RUNS
from nectar.shared.config import Role
from tests.core.conftest import Browser, drain_jobs
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.core.upstream import serving

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def flow_app(local_outbound_app):
    return local_outbound_app


@pytest.fixture
def owner(flow_app):
    browser = Browser(flow_app)
    browser.sign_up()
    org = browser.create_org()
    return browser, org, _new_key(browser)


def manual(*steps) -> dict:
    return {"trigger": {"type": "manual"}, "steps": list(steps)}


def call(step_id: str, workflow: str, **fields) -> dict:
    return {"id": step_id, "type": "call_workflow", "workflow": workflow, **fields}


def start(browser, token, workflow_id, run_input=None) -> str:
    started = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": run_input or {}}
    )
    assert started.status_code == 202, started.json
    return started.json["id"]


def run_of(browser, token, run_id) -> dict:
    return browser.api("GET", f"/api/v1/runs/{run_id}", token=token).json


def finished(browser, token, run_id, timeout: float = 60) -> dict:
    """Runs the worker until the run has ended (waits become due meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drain_jobs(browser.app)
        run = run_of(browser, token, run_id)
        if run["status"] in FINAL:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not end: {run_of(browser, token, run_id)}")


def runs_of(browser, token, workflow_id) -> list[dict]:
    return browser.api("GET", f"/api/v1/runs?workflow_id={workflow_id}", token=token).json["items"]


# --- call_workflow ------------------------------------------------------------------------------


def test_a_caller_gets_the_output_of_a_called_run_that_waited(owner):
    browser, _, token = owner
    pricing = f"pricing-{uuid.uuid4().hex[:6]}"
    child_id = _workflow(
        browser,
        token,
        manual(
            {"id": "think", "type": "wait", "seconds": 1},
            {"id": "price", "type": "set", "values": {"total": "{{ trigger.qty }}", "currency": "EUR"}},
        ),
        name=pricing,
    )
    parent_id = _workflow(
        browser,
        token,
        manual(
            call("quote", pricing, input={"qty": "{{ trigger.qty }}"}),
            {"id": "total", "type": "transform", "expression": "steps.quote.total"},
        ),
    )
    run_id = start(browser, token, parent_id, {"qty": 3})
    drain_jobs(browser.app)
    [child] = runs_of(browser, token, child_id)
    assert run_of(browser, token, run_id)["status"] == "waiting"  # for its called run, which waits
    assert child["status"] == "waiting" and child["trigger"] == "call" and child["parent_run_id"] == run_id

    done = finished(browser, token, run_id)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["output"] == 3
    assert done["steps"][0]["output"] == {"total": 3, "currency": "EUR"}
    assert done["steps"][0]["input"]["run_id"] == child["id"]
    assert [r["id"] for r in runs_of(browser, token, child_id)] == [child["id"]]  # started once
    assert run_of(browser, token, child["id"])["status"] == "succeeded"


def test_cancelling_a_caller_cancels_the_runs_it_called_that_have_not_ended(owner):
    browser, _, token = owner
    inner = f"inner-{uuid.uuid4().hex[:6]}"
    middle = f"middle-{uuid.uuid4().hex[:6]}"
    inner_id = _workflow(
        browser, token, manual({"id": "go", "type": "wait_for_event", "event": "go"}), name=inner
    )
    middle_id = _workflow(browser, token, manual(call("deeper", inner)), name=middle)
    parent_id = _workflow(browser, token, manual(call("work", middle)))
    run_id = start(browser, token, parent_id)
    for _ in range(3):  # each level starts the next
        drain_jobs(browser.app)
    [child] = runs_of(browser, token, middle_id)
    [grandchild] = runs_of(browser, token, inner_id)
    assert child["status"] == "waiting" and grandchild["status"] == "waiting", (child, grandchild)

    cancelled = browser.api("POST", f"/api/v1/runs/{run_id}/cancel", token=token)
    assert cancelled.status_code == 200, cancelled.json
    drain_jobs(browser.app)
    assert [run_of(browser, token, r)["status"] for r in (run_id, child["id"], grandchild["id"])] == [
        "cancelled"
    ] * 3
    assert run_id in run_of(browser, token, child["id"])["error"]


def test_calls_nest_at_most_five_deep(owner):
    browser, _, token = owner
    names = [f"level{i}-{uuid.uuid4().hex[:6]}" for i in range(7)]
    ids = {
        names[6]: _workflow(
            browser, token, manual({"id": "bottom", "type": "set", "values": {"x": 1}}), name=names[6]
        )
    }
    for level in range(5, -1, -1):  # each level calls the next, created first
        ids[names[level]] = _workflow(
            browser, token, manual(call("down", names[level + 1])), name=names[level]
        )
    top = finished(browser, token, start(browser, token, ids[names[0]]))
    assert top["status"] == "failed" and "workflow calls nest at most 5 deep" in top["error"]
    deepest = runs_of(browser, token, ids[names[5]])
    assert len(deepest) == 1 and deepest[0]["status"] == "failed"
    assert runs_of(browser, token, ids[names[6]]) == []  # never started


def test_a_cycle_of_calls_or_a_missing_workflow_is_refused_when_saved(owner):
    browser, _, token = owner
    tag = uuid.uuid4().hex[:6]
    a = _workflow(browser, token, manual({"id": "a", "type": "set", "values": {"x": 1}}), name=f"a-{tag}")
    b = _workflow(browser, token, manual(call("to_a", a)), name=f"b-{tag}")  # by id
    _workflow(browser, token, manual(call("to_b", f"b-{tag}")), name=f"c-{tag}")  # by name

    closing = manual(
        {"id": "first", "type": "set", "values": {"x": 1}},
        {
            "id": "both",
            "type": "parallel",
            "branches": [
                [{"id": "noop", "type": "transform", "expression": "`1`"}],
                [call("to_c", f"c-{tag}")],
            ],
        },
    )
    refused = browser.api(
        "POST", f"/api/v1/workflows/{a}/versions", token=token, json={"definition": closing}
    )
    assert refused.status_code == 422, refused.json
    [problem] = refused.json["errors"]
    assert problem["path"] == "/steps/1/branches/1/0/workflow"
    assert f"a-{tag} -> c-{tag} -> b-{tag} -> a-{tag}" in problem["message"]

    itself = browser.api(
        "POST", f"/api/v1/workflows/{b}/versions", token=token, json={"definition": manual(call("again", b))}
    )
    assert itself.status_code == 422 and itself.json["errors"][0]["path"] == "/steps/0/workflow"
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": f"d-{tag}", "definition": manual(call("me", f"d-{tag}"))},
    )
    assert created.status_code == 422 and created.json["errors"][0]["path"] == "/steps/0/workflow"

    missing = browser.api(
        "POST",
        f"/api/v1/workflows/{a}/versions",
        token=token,
        json={"definition": manual(call("nowhere", "no-such-workflow"))},
    )
    assert missing.status_code == 422
    assert missing.json["errors"] == [
        {"path": "/steps/0/workflow", "message": "no workflow 'no-such-workflow' in this organization"}
    ]
    versions = browser.api("GET", f"/api/v1/workflows/{a}/versions", token=token).json["items"]
    assert len(versions) == 1  # nothing refused was kept


def test_another_organizations_workflow_cannot_be_called(owner, flow_app):
    browser, _, token = owner
    secret = _workflow(browser, token, manual({"id": "s", "type": "set", "values": {"x": 1}}))
    other = Browser(flow_app)
    other.sign_up()
    other.create_org()
    other_token = _new_key(other)
    refused = other.api(
        "POST",
        "/api/v1/workflows",
        token=other_token,
        json={"name": "thief", "definition": manual(call("steal", secret))},
    )
    assert refused.status_code == 422 and refused.json["errors"][0]["path"] == "/steps/0/workflow"


# --- parallel -----------------------------------------------------------------------------------


def test_branches_of_an_asynchronous_run_overlap_on_a_slow_server(owner):
    """Each answer waits until both requests are in flight, so branches run one after the other
    would fail; and the run takes about one slow answer, not two."""
    browser, _, token = owner
    both_in_flight = threading.Barrier(2, timeout=20)
    keys = []

    def slow(path, headers):
        keys.append(headers.get("Idempotency-Key"))
        both_in_flight.wait()
        time.sleep(2)
        return 200, {}, {"path": path}

    with serving(slow) as url:
        workflow_id = _workflow(
            browser,
            token,
            manual(
                {
                    "id": "both",
                    "type": "parallel",
                    "branches": [
                        [{"id": "left", "type": "http_request", "url": f"{url}/left"}],
                        [{"id": "right", "type": "http_request", "url": f"{url}/right"}],
                    ],
                },
                {"id": "paths", "type": "transform", "expression": "steps.both[].body.path"},
            ),
        )
        done = finished(browser, token, start(browser, token, workflow_id))
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["output"] == ["/left", "/right"]
    assert done["duration_ms"] < 3500  # one after the other: at least 4000
    assert len(set(keys)) == 2 and all(keys)  # each branch's request its own idempotency key


def test_branches_that_call_workflows_wait_for_both_and_join_their_outputs(owner):
    browser, _, token = owner
    tag = uuid.uuid4().hex[:6]
    for name, seconds in (("slow", 2), ("quick", 1)):
        _workflow(
            browser,
            token,
            manual(
                {"id": "nap", "type": "wait", "seconds": seconds},
                {"id": "said", "type": "set", "values": {"by": name, "n": "{{ trigger.n }}"}},
            ),
            name=f"{name}-{tag}",
        )
    workflow_id = _workflow(
        browser,
        token,
        manual(
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    [call("ask_slow", f"slow-{tag}", input={"n": 1})],
                    [call("ask_quick", f"quick-{tag}", input={"n": 2})],
                ],
            }
        ),
    )
    run_id = start(browser, token, workflow_id)
    drain_jobs(browser.app)
    waiting = run_of(browser, token, run_id)
    assert waiting["status"] == "waiting"
    done = finished(browser, token, run_id)
    assert done["status"] == "succeeded", done["error"]
    assert done["output"]["output"] == [{"by": "slow", "n": 1}, {"by": "quick", "n": 2}]
    called = browser.api("GET", "/api/v1/runs?trigger=call", token=token).json["items"]
    assert sorted(r["parent_run_id"] for r in called) == [run_id, run_id]  # one run each, ever


# --- endpoints whose workflows wait -------------------------------------------------------------


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_an_endpoint_whose_workflow_waits_answers_202_with_a_url_that_shows_the_finished_run(owner, database):
    browser, org, token = owner
    tag = uuid.uuid4().hex[:6]
    _workflow(
        browser,
        token,
        manual({"id": "label", "type": "set", "values": {"label": "{{ trigger.sku }}-ok"}}),
        name=f"label-{tag}",
    )
    workflow_id = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "http"},
            "steps": [
                call("label", f"label-{tag}", input={"sku": "{{ trigger.body.sku }}"}),
                {
                    "id": "answer",
                    "type": "respond",
                    "status": 201,
                    "body": {"label": "{{ steps.label.label }}"},
                },
            ],
        },
    )
    _endpoint(browser, token, workflow_id, path="/labels")

    accepted = browser.client.post(f"/e/{org}/labels", json={"sku": "A7"})
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    run_id, status_url = accepted.json["run_id"], accepted.json["status_url"]
    assert accepted.headers["Location"] == status_url and accepted.headers["X-Nectar-Run-Id"] == run_id
    assert status_url.startswith(f"http://127.0.0.1:3001/e/{org}/_runs/{run_id}?token=")
    queued = browser.client.get(_path_of(status_url))
    assert queued.status_code == 200 and queued.json == {"run_id": run_id, "status": "queued"}
    with database.connect(Role.ADMIN) as conn:
        counted = conn.execute(
            "SELECT sum(count) FROM rate_limit_buckets WHERE key LIKE %s", (f"core.endpoint:{org}:%",)
        ).fetchone()[0]
    assert counted == 1  # a queued call counts against the plan's rate limit like any call

    again = browser.client.post(f"/e/{org}/labels", json={"sku": "A7"}, headers={"Idempotency-Key": "k1"})
    replayed = browser.client.post(f"/e/{org}/labels", json={"sku": "A7"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == replayed.status_code == 202
    assert replayed.json["run_id"] == again.json["run_id"] != run_id
    assert replayed.headers["Idempotent-Replayed"] == "true"

    assert finished(browser, token, run_id)["status"] == "succeeded"
    shown = browser.client.get(_path_of(status_url)).json
    assert shown["status"] == "succeeded" and shown["error"] is None
    assert shown["response"] == {"status": 201, "headers": {}, "body": {"label": "A7-ok"}}

    forged = _path_of(status_url)[:-3] + "abc"
    assert browser.client.get(forged).status_code == 403
    other_run = _path_of(status_url).replace(run_id, again.json["run_id"])
    assert browser.client.get(other_run).status_code == 403  # a URL shows only its own run
    assert browser.client.get(f"/e/{org}/_runs/{run_id}").status_code == 403


def test_an_endpoint_call_may_start_a_run_without_waiting_for_it(owner):
    browser, org, token = owner
    tag = uuid.uuid4().hex[:6]
    audit_id = _workflow(
        browser,
        token,
        manual({"id": "note", "type": "set", "values": {"seen": "{{ trigger.what }}"}}),
        name=f"audit-{tag}",
    )
    workflow_id = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "http"},
            "steps": [
                call("kick", f"audit-{tag}", input={"what": "{{ trigger.body.what }}"}, wait=False),
                {"id": "answer", "type": "respond", "body": {"audit": "{{ steps.kick.run_id }}"}},
            ],
        },
    )
    _endpoint(browser, token, workflow_id, path="/audited")
    answered = browser.client.post(f"/e/{org}/audited", json={"what": "login"})
    assert answered.status_code == 200, answered.get_data(as_text=True)
    child = finished(browser, token, answered.json["audit"])
    assert child["status"] == "succeeded" and child["output"]["output"] == {"seen": "login"}
    assert child["parent_run_id"] == answered.headers["X-Nectar-Run-Id"]
    assert [r["id"] for r in runs_of(browser, token, audit_id)] == [child["id"]]


def test_endpoint_paths_of_the_platform_are_reserved(owner):
    browser, _, token = owner
    workflow_id = _workflow(browser, token)
    for path in ("/_runs/{id}", "/_hooks/x"):
        refused = browser.api(
            "POST",
            "/api/v1/endpoints",
            token=token,
            json={"method": "GET", "path": path, "workflow_id": workflow_id},
        )
        assert refused.status_code == 422 and refused.json["errors"][0]["path"] == "/path"


# --- an organization's queue --------------------------------------------------------------------


def test_an_organization_may_have_only_so_many_runs_waiting_to_start(owner, database):
    """A workflow that starts others in a loop cannot fill the queue (and the database) for
    everyone: past MAX_QUEUED_RUNS, new runs are refused however they are asked for, and nothing
    is written; once the queue drains, runs start again."""
    browser, org, token = owner
    tag = uuid.uuid4().hex[:6]
    target_id = _workflow(browser, token, manual({"id": "s", "type": "set", "values": {}}), name=f"t-{tag}")
    fan_out_id = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "http"},
            "steps": [
                call("kick", f"t-{tag}", wait=False),
                {"id": "answer", "type": "respond", "body": {"run": "{{ steps.kick.run_id }}"}},
            ],
        },
    )
    _endpoint(browser, token, fan_out_id, path="/fan-out")
    waits_id = _workflow(browser, token, {"trigger": {"type": "http"}, "steps": [call("w", f"t-{tag}")]})
    _endpoint(browser, token, waits_id, path="/waits")
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        org_id, version_id = conn.execute(
            "SELECT org_id, id FROM workflow_versions WHERE workflow_id = %s", (target_id,)
        ).fetchone()
        conn.execute(  # a queue already full, as a runaway loop would leave it
            "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, input) "
            "SELECT %s, %s, %s, 'manual', 'queued', '{}' FROM generate_series(1, %s)",
            (org_id, target_id, version_id, MAX_QUEUED_RUNS),
        )

    refused = browser.api("POST", f"/api/v1/workflows/{target_id}/runs", token=token, json={"input": {}})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert f"{MAX_QUEUED_RUNS:,} runs waiting to start" in refused.json["detail"]
    queued_call = browser.client.post(f"/e/{org}/waits", json={})
    assert queued_call.status_code == 429 and "waiting to start" in queued_call.json["detail"]
    fan_out = browser.client.post(f"/e/{org}/fan-out", json={})
    assert fan_out.status_code == 500  # the run failed at its call step
    [failed] = runs_of(browser, token, fan_out_id)
    assert failed["status"] == "failed" and "waiting to start" in failed["error"]
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute("SELECT count(*) FROM workflow_runs WHERE org_id = %s", (org_id,)).fetchone()[0]
            == MAX_QUEUED_RUNS + 1
        )  # the failed endpoint run only

    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM workflow_runs WHERE org_id = %s AND status = 'queued'", (org_id,))
        conn.execute(  # runs that started and wait (for thirty days, say) count against the other limit
            "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, input, wake_at) "
            "SELECT %s, %s, %s, 'manual', 'waiting', '{}', now() + interval '30 days' FROM generate_series(1, %s)",
            (org_id, target_id, version_id, MAX_UNFINISHED_RUNS),
        )
    refused = browser.api("POST", f"/api/v1/workflows/{target_id}/runs", token=token, json={"input": {}})
    assert (
        refused.status_code == 429
        and f"{MAX_UNFINISHED_RUNS:,} runs that have not ended" in refused.json["detail"]
    )

    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM workflow_runs WHERE org_id = %s AND status = 'waiting'", (org_id,))
    assert start(browser, token, target_id)
