"""A hostile free tenant against its monthly run quota, and odd periods for /api/v1/usage."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from nectar.core.runs import queue
from nectar.core.usage import MonthlyRuns
from nectar.shared.config import Role
from nectar.shared.database import db, one_per_database
from tests.core.conftest import drain_jobs
from tests.core.test_usage_metering import _endpoint, _next_month, _organization, _used_this_month, _workflow


@pytest.fixture(scope="module")
def app(local_outbound_app):
    return local_outbound_app


def test_a_burst_of_queued_runs_cannot_pass_the_free_quota(app, database):
    # 995 of 1,000 used: runs queued at once (none ended yet) take the last five, not 30.
    browser, token, org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    _used_this_month(database, org, 995)
    runs = f"/api/v1/workflows/{workflow_id}/runs"
    statuses = [browser.api("POST", runs, token=token, json={"input": {}}).status_code for _ in range(30)]
    assert statuses.count(202) == 5 and statuses.count(429) == 25, statuses
    drain_jobs(app)
    with app.app_context():
        one_per_database(db.engine, MonthlyRuns)._read.clear()
    refused = browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}})
    assert refused.status_code == 429


@pytest.mark.parametrize(
    "period",
    [
        {"from": "0001-01-01", "to": "0001-12-31"},
        {"from": "9999-01-01", "to": "9999-12-31"},
        {"from": "2026-W49-4"},
        {"from": "20261201", "to": "20261202"},
    ],
)
def test_odd_but_valid_periods_answer_200(app, period):
    browser, token, _org = _organization(app)
    answer = browser.api("GET", "/api/v1/usage", token=token, query_string=period)
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)[:500]


@pytest.mark.parametrize(
    "period",
    [
        {"from": "", "to": ""},
        {"to": "+2026-12-01"},
        {"from": "2026-02-30"},
    ],
)
def test_hostile_periods_are_400(app, period):
    browser, token, _org = _organization(app)
    answer = browser.api("GET", "/api/v1/usage", token=token, query_string=period)
    assert answer.status_code == 400, answer.get_data(as_text=True)[:500]


def test_a_workflow_cannot_answer_with_a_request_id_of_its_own(app):
    browser, token, _org = _organization(app)
    spoof = [{"id": "r", "type": "respond", "headers": {"X-Request-ID": "spoofed\x1b[2J"}, "body": 1}]
    workflow_id = _workflow(browser, token, spoof, trigger="http")
    endpoint = _endpoint(browser, token, workflow_id, "/spoof", method="GET")
    answer = app.test_client().get(endpoint["url"], headers={"X-Request-ID": "caller-1"})
    assert answer.status_code == 200
    assert answer.headers.getlist("X-Request-ID") == ["caller-1"]


def test_a_queued_endpoint_call_past_the_quota_says_the_limit_and_when_it_resets(app, database):
    # 999 used and one call queued, not ended: the next call is the 1,001st run of the month.
    browser, token, org = _organization(app)
    waits = [{"id": "later", "type": "wait", "seconds": 3600}]
    workflow_id = _workflow(browser, token, waits, trigger="http")
    endpoint = _endpoint(browser, token, workflow_id, "/later")
    _used_this_month(database, org, 999)
    assert app.test_client().post(endpoint["url"], json={}).status_code == 202
    refused = app.test_client().post(endpoint["url"], json={})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert refused.json["limit"] == 1_000 and refused.json["resets_at"] == _next_month()


def test_test_runs_are_bounded_per_hour_and_the_refusal_says_when_more_can_start(app, database, monkeypatch):
    # Testing a draft is not usage, so looping test runs would be free work without a bound of its own.
    monkeypatch.setattr(queue, "MAX_TEST_RUNS_PER_HOUR", 3)
    browser, token, org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    draft = browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).json["definition"]
    tests = f"/api/v1/workflows/{workflow_id}/test-runs"

    answers = [browser.api("POST", tests, token=token, json={"definition": draft}) for _ in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json" and refused.json["limit"] == 3
    resets_at = datetime.fromisoformat(refused.json["resets_at"])
    assert datetime.now(UTC) < resets_at <= datetime.now(UTC) + timedelta(hours=1, seconds=1)
    assert 1 <= int(refused.headers["Retry-After"]) <= 3601
    with database.connect(Role.APP) as conn:
        conn.execute("SELECT set_config('nectar.org_id', %s, true)", (str(org),))
        assert conn.execute("SELECT count(*) FROM workflow_runs WHERE trigger = 'test'").fetchone()[0] == 3
    # Runs that are not tests are not held back by it.
    assert (
        browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={}).status_code == 202
    )
    # The next hour, testing goes on.
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "UPDATE rate_limit_buckets SET window_start = window_start - 3600 WHERE key = %s",
            (f"core.test-runs:{org}",),
        )
    assert browser.api("POST", tests, token=token, json={"definition": draft}).status_code == 202


def test_the_bound_on_test_runs_holds_under_concurrent_requests(app, monkeypatch):
    monkeypatch.setattr(queue, "MAX_TEST_RUNS_PER_HOUR", 3)
    browser, token, _org = _organization(app)
    workflow_id = _workflow(browser, token, [{"id": "x", "type": "transform", "expression": "`1`"}])
    draft = browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).json["definition"]
    start = threading.Barrier(12)

    def test_run() -> int:
        client = app.test_client()
        start.wait(10)
        return client.post(
            f"/api/v1/workflows/{workflow_id}/test-runs",
            headers={"Authorization": f"Bearer {token}"},
            json={"definition": draft},
        ).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: test_run(), range(12)))
    assert sorted(statuses) == [202] * 3 + [429] * 9, statuses


def test_deleting_a_tested_workflow_does_not_give_its_test_runs_back(app, monkeypatch):
    # A deleted workflow's test runs go with it: counted only from the runs table, the bound was
    # handed back by each deletion (create, test to the limit, delete, again), free work without end.
    monkeypatch.setattr(queue, "MAX_TEST_RUNS_PER_HOUR", 3)
    browser, token, _org = _organization(app)
    steps = [{"id": "x", "type": "transform", "expression": "`1`"}]
    first = _workflow(browser, token, steps)
    draft = browser.api("GET", f"/api/v1/workflows/{first}", token=token).json["definition"]
    for _ in range(3):
        tested = browser.api(
            "POST", f"/api/v1/workflows/{first}/test-runs", token=token, json={"definition": draft}
        )
        assert tested.status_code == 202, tested.json
    drain_jobs(app)
    assert browser.api("DELETE", f"/api/v1/workflows/{first}", token=token).status_code == 204

    second = _workflow(browser, token, steps)
    refused = browser.api(
        "POST", f"/api/v1/workflows/{second}/test-runs", token=token, json={"definition": draft}
    )
    assert refused.status_code == 429, refused.json
    assert refused.json["limit"] == 3 and int(refused.headers["Retry-After"]) <= 3601
