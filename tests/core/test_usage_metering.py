"""Usage metering on the real database: what the database counts as runs end (usage_daily) agrees
exactly with the runs table after concurrent endpoint calls (the batched writer) and asynchronous
runs (the worker) at once; tests of drafts are not counted; a run counted when cancelled counts
once with the steps it went on to record; pruning runs keeps their usage; each organization reads
only its own; and a bad period is a 400."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from nectar.core.endpoints import service as endpoint_service
from nectar.core.runs.writer import run_writer
from nectar.shared.config import Role
from nectar.shared.database import db
from tests.core.conftest import Browser, drain_jobs
from tests.core.test_api import _new_key
from tests.core.upstream import serving

COUNTED = "status IN ('succeeded', 'failed', 'cancelled') AND trigger <> 'test'"


@pytest.fixture(scope="module")
def app(local_outbound_app):
    return local_outbound_app


@pytest.fixture
def upstream():
    with serving(lambda path, headers: (200, {}, {"path": path})) as url:
        yield url


def _organization(app) -> tuple[Browser, str, uuid.UUID]:
    browser = Browser(app)
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    org = uuid.UUID(browser.api("GET", "/api/v1/organization", token=token).json["id"])
    return browser, token, org


def _workflow(browser, token, steps: list[dict], trigger: str = "manual") -> str:
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={
            "name": f"wf-{uuid.uuid4().hex[:6]}",
            "definition": {"trigger": {"type": trigger}, "steps": steps},
        },
    )
    assert created.status_code == 201, created.json
    return created.json["id"]


def _endpoint(browser, token, workflow_id, path: str, method: str = "POST") -> dict:
    created = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": method, "path": path, "workflow_id": workflow_id, "auth": "public"},
    )
    assert created.status_code == 201, created.json
    return created.json


def _test_run(browser, token, workflow_id):
    """A test of a draft (not the saved version) of the workflow, through the API."""
    draft = {"trigger": {"type": "manual"}, "steps": [{"id": "y", "type": "transform", "expression": "`2`"}]}
    return browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/test-runs", token=token, json={"definition": draft}
    )


def _start(browser, token, workflow_id) -> str:
    started = browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}})
    assert started.status_code == 202, started.json
    return started.json["id"]


def _usage(browser, token, **period) -> dict:
    answer = browser.api("GET", "/api/v1/usage", token=token, query_string=period)
    assert answer.status_code == 200, answer.json
    return answer.json


def _from_runs(database, org) -> dict[str, dict]:
    """What the runs table says, per day: runs by trigger, steps, outbound HTTP steps, run time."""
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            f"""
            SELECT (finished_at AT TIME ZONE 'UTC')::date::text, trigger, count(*), sum(jsonb_array_length(steps)),
                   sum((SELECT count(*) FROM jsonb_array_elements(steps) s WHERE s ->> 'step_type' = 'http_request')),
                   sum(COALESCE(active_ms, duration_ms, 0))
            FROM workflow_runs WHERE org_id = %s AND {COUNTED} GROUP BY 1, 2
            """,  # noqa: S608 - a constant condition
            (org,),
        ).fetchall()
    days: dict[str, dict] = {}
    for day, trigger, runs, steps, http_calls, run_ms in rows:
        used = days.setdefault(day, {"runs_by_trigger": {}, "steps": 0, "http_calls": 0, "run_ms": 0})
        used["runs_by_trigger"][trigger] = runs
        used["steps"] += steps
        used["http_calls"] += http_calls
        used["run_ms"] += run_ms
    return days


def _as_reported(days: dict[str, dict]) -> dict[str, dict]:
    return {
        day: {
            "runs": sum(used["runs_by_trigger"].values()),
            "runs_by_trigger": dict(sorted(used["runs_by_trigger"].items())),
            "endpoint_calls": used["runs_by_trigger"].get("http", 0),
            "steps": used["steps"],
            "http_calls": used["http_calls"],
            "run_seconds": round(used["run_ms"] / 1000, 3),
        }
        for day, used in days.items()
    }


def test_usage_agrees_exactly_with_the_runs_after_concurrent_calls_and_runs(
    app, upstream, database, monkeypatch
):
    browser, token, org = _organization(app)
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 10_000)
    monkeypatch.setattr(app.wsgi_app.app.shares, "most", 8)  # this organization is the whole load
    answering = _workflow(
        browser,
        token,
        [
            {"id": "double", "type": "transform", "expression": "trigger.body.n"},
            {"id": "answer", "type": "respond", "status": 200, "body": {"n": "{{ steps.double }}"}},
        ],
        trigger="http",
    )
    endpoint = _endpoint(browser, token, answering, "/count")
    calling = _workflow(
        browser,
        token,
        [
            {"id": "fetch", "type": "http_request", "url": f"{upstream}/item"},
            {"id": "again", "type": "http_request", "url": f"{upstream}/other"},
            {"id": "keep", "type": "set", "values": {"done": True}},
        ],
    )
    queued = [_start(browser, token, calling) for _ in range(30)]

    def call(n: int) -> None:
        assert app.test_client().post(endpoint["url"], json={"n": n}).status_code == 200

    worker = threading.Thread(target=drain_jobs, args=(app,))
    worker.start()  # the asynchronous runs end while the calls' runs are written
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(400)))
    worker.join()
    drain_jobs(app)
    with app.app_context():
        run_writer(db.engine).flush()

    expected = _from_runs(database, org)
    today = datetime.now(UTC).date()
    reported = _usage(
        browser, token, **{"from": (today - timedelta(days=1)).isoformat(), "to": today.isoformat()}
    )
    assert {d["day"]: {k: v for k, v in d.items() if k != "day"} for d in reported["days"]} == _as_reported(
        expected
    )
    total = reported["total"]
    assert total["endpoint_calls"] == 400 and total["runs_by_trigger"] == {"http": 400, "manual": 30}
    assert total["http_calls"] == 60 and total["steps"] == 400 * 2 + 30 * 3
    with database.connect(Role.ADMIN) as conn:
        ended = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE id = ANY(%s) AND status = 'succeeded'", (queued,)
        ).fetchone()[0]
    assert ended == 30


def test_tests_of_drafts_are_not_counted_and_other_organizations_see_none_of_it(app):
    browser, token, _org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    _start(browser, token, workflow_id)
    tested = _test_run(browser, token, workflow_id)
    assert tested.status_code == 202, tested.json
    drain_jobs(app)
    assert _usage(browser, token)["total"]["runs_by_trigger"] == {"manual": 1}
    other, other_token, _ = _organization(app)
    assert _usage(other, other_token)["total"]["runs"] == 0


def test_a_run_cancelled_then_completed_counts_once_with_its_final_steps(app, upstream, database):
    browser, token, org = _organization(app)
    cancel_during: dict = {}

    def answer(path, headers):
        if "run" in cancel_during:  # the worker is inside the step: cancel the run now
            browser.api("POST", f"/api/v1/runs/{cancel_during.pop('run')}/cancel", token=token)
        return 200, {}, {"path": path}

    with serving(answer) as slow:
        workflow_id = _workflow(
            browser, token, [{"id": "slow", "type": "http_request", "url": f"{slow}/slow"}]
        )
        cancel_during["run"] = _start(browser, token, workflow_id)
        drain_jobs(app)
    reported = _usage(browser, token)["total"]
    assert (
        reported["runs_by_trigger"] == {"manual": 1}
        and reported["steps"] == 1
        and reported["http_calls"] == 1
    )
    assert _as_reported(_from_runs(database, org)) == {
        d["day"]: {k: v for k, v in d.items() if k != "day"} for d in _usage(browser, token)["days"]
    }


def test_the_dashboard_shows_this_months_usage_with_a_bar_per_day(app):
    browser, token, _org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    for _ in range(2):
        _start(browser, token, workflow_id)
    drain_jobs(app)
    page = browser.get("/dashboard").get_data(as_text=True)
    assert 'data-usage="runs">2<' in page and 'data-usage="steps">2<' in page
    assert 'data-included="runs">runs of 1,000 included<' in page  # the free plan's
    today = datetime.now(UTC).date()
    assert page.count("<rect ") == today.day  # the 1st to today
    assert f'data-day="{today.isoformat()}" data-runs="2"' in page
    assert f"<title>{today.isoformat()}: 2 runs</title>" in page


def test_pruning_runs_keeps_their_usage(app, database):
    browser, token, org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    for _ in range(3):
        _start(browser, token, workflow_id)
    drain_jobs(app)
    with database.connect(Role.ADMIN) as conn:
        conn.execute("DELETE FROM workflow_runs WHERE org_id = %s", (org,))
        conn.commit()
    assert _usage(browser, token)["total"]["runs"] == 3


@pytest.mark.parametrize(
    "period",
    [
        {"from": "yesterday"},
        {"to": "2026-13-01"},
        {"from": "2026-12-02", "to": "2026-12-01"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"from": "2026-12-01\x00"},
        {"from": "9" * 5000},
    ],
)
def test_a_bad_period_is_a_400_problem(app, period):
    browser, token, _org = _organization(app)
    answer = browser.api("GET", "/api/v1/usage", token=token, query_string=period)
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert any(name in answer.json["detail"] for name in ("from", "to", "period")), answer.json


def _used_this_month(database, org, runs: int) -> None:
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO usage_daily (org_id, day, trigger, shard, runs) VALUES (%s, %s, 'manual', 15, %s)",
            (org, datetime.now(UTC).date().replace(day=1), runs),
        )


def _next_month() -> str:
    first = datetime.now(UTC).date().replace(day=1)
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1).isoformat() + "T00:00:00Z"


def test_a_free_plans_runs_past_its_monthly_quota_are_refused_until_the_month_ends(app, database):
    browser, token, org = _organization(app)
    workflow_id = _workflow(
        browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}], trigger="http"
    )
    endpoint = _endpoint(browser, token, workflow_id, "/quota")
    _used_this_month(database, org, 1_000)  # the free plan's included runs, all used

    started = browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}})
    assert started.status_code == 429 and started.mimetype == "application/problem+json"
    assert started.json["limit"] == 1_000 and started.json["resets_at"] == _next_month()
    assert "1,000 runs a month" in started.json["detail"] and int(started.headers["Retry-After"]) > 0
    called = app.test_client().post(endpoint["url"], json={})
    assert called.status_code == 429 and called.json["limit"] == 1_000
    tested = _test_run(browser, token, workflow_id)
    assert tested.status_code == 202  # testing a draft is not usage
    with database.connect(Role.ADMIN) as conn:
        counted = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE org_id = %s AND trigger <> 'test'", (org,)
        ).fetchone()[0]
    assert counted == 0


def test_a_paid_plan_runs_on_past_its_included_runs(app, database):
    browser, token, org = _organization(app)
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("UPDATE organizations SET plan = 'starter' WHERE id = %s", (org,))
    _used_this_month(database, org, 50_000)  # five times starter's included runs: billed per run
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    assert (
        browser.api(
            "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}}
        ).status_code
        == 202
    )
