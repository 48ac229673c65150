"""Tenant-defined work is bounded: regular expressions in request schemas run on RE2 or
are refused when saved, checking a body counts against the call's time limit, and the rate limit
is charged before any of it runs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nectar.core.endpoints import service as endpoint_service
from nectar.core.runs.rate_window import rate_keys
from nectar.core.runs.writer import run_writer
from nectar.core.workflows.engine import Limits
from nectar.shared.config import Role
from nectar.shared.database import db
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.serving import service_process

CATASTROPHIC = "^(a+)+$"  # Python's re: 6.6 s at 27 characters, doubling with each one more
ECHO = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "{{ trigger.body }}"}]}
TIME_LIMIT = Limits().time_limit_seconds


def _organization(new_browser):
    browser = new_browser()
    browser.sign_up()
    org = browser.create_org()
    return browser, org, _new_key(browser)


def _echo_endpoint(owner, path="/echo", **fields) -> str:
    browser, _org, token = owner
    return _endpoint(browser, token, _workflow(browser, token, ECHO), method="POST", path=path, **fields)[
        "url"
    ]


def test_a_catastrophic_pattern_answers_in_time_and_other_organizations_are_served(new_browser, database):
    """A real gunicorn process (one worker, four threads): hostile bodies against `^(a+)+$` keep
    arriving while another organization's calls and /healthz must answer all along."""
    hostile_owner, other_owner = _organization(new_browser), _organization(new_browser)
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": CATASTROPHIC}}}
    hostile_path = _echo_endpoint(hostile_owner, "/names", request_schema=schema)
    other_path = _echo_endpoint(other_owner)
    with database.connect(
        Role.ADMIN, autocommit=True
    ) as conn:  # a plan whose rate limit never stops the attack
        conn.execute("UPDATE organizations SET plan = 'enterprise' WHERE id = %s", (hostile_owner[1],))
    bodies = [{"name": "a" * n + "!"} for n in (27, 30, 40, 64)] + [{"name": "a" * 200_000 + "!"}]
    environ = database.environ(WEB_CONCURRENCY="1", WEB_THREADS="4")
    with service_process("nectar.core.main", environ) as url:
        hostile_answers, stop = [], threading.Event()

        def attack():
            while not stop.is_set():
                for body in bodies:
                    started = time.monotonic()
                    answer = requests.post(url + hostile_path, json=body, timeout=TIME_LIMIT + 20)
                    hostile_answers.append((answer.status_code, time.monotonic() - started, answer.json()))

        with ThreadPoolExecutor(2) as attackers:  # the hostile organization's share of the threads
            attacks = [attackers.submit(attack) for _ in range(2)]
            try:
                while len(hostile_answers) < 4:  # the attack is under way
                    assert not any(a.done() for a in attacks), [a.exception() for a in attacks]
                    time.sleep(0.05)
                for n in range(20):
                    answer = requests.post(url + other_path, json={"n": n}, timeout=TIME_LIMIT)
                    assert (answer.status_code, answer.json()) == (200, {"n": n})
                    assert requests.get(url + "/healthz", timeout=TIME_LIMIT).status_code == 200
            finally:
                stop.set()
            for attack_ in attacks:
                attack_.result()
    assert len(hostile_answers) >= len(bodies)
    for status, seconds, problem in hostile_answers:
        assert status == 422, problem
        assert problem["errors"][0]["path"] == "/name" and "does not match" in problem["errors"][0]["message"]
        assert seconds < TIME_LIMIT + 5  # within the call's time limit, with slack for a busy machine


def test_a_pattern_the_engine_cannot_run_is_refused_when_saved(owner):
    browser, _org, token = owner
    workflow_id = _workflow(browser, token, ECHO)
    schema = {
        "type": "object",
        "properties": {"twice": {"type": "string", "pattern": "^(ab)\\1$"}},
        "patternProperties": {"^(?!internal)": {"type": "string"}, "a/b~": {}},
    }
    refused = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "POST", "path": "/refs", "workflow_id": workflow_id, "request_schema": schema},
    )
    assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    paths = {error["path"]: error["message"] for error in refused.json["errors"]}
    assert set(paths) == {
        "/request_schema/properties/twice/pattern",
        "/request_schema/patternProperties/^(?!internal)",
    }
    assert (
        "backreferences and lookaround are not supported" in paths["/request_schema/properties/twice/pattern"]
    )
    listed = browser.api("GET", "/api/v1/endpoints", token=token).json["items"]
    assert not any(e["path"] == "/refs" for e in listed)


def test_patterns_keep_their_json_schema_meaning(owner):
    """Unanchored, as ECMA-262 patterns are; \\uXXXX escapes; keys matched by patternProperties
    (and so not additional), hostile ones included, answered at once."""
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "[0-9]{3}"},
            "word": {"pattern": "^caf\\u00e9$"},
            "name": {"pattern": "^[\\p{L} .'-]{1,200}$"},
        },
        "patternProperties": {"^x-(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    url = _echo_endpoint(owner, "/meaning", request_schema=schema)
    client = owner[0].client
    fine = {"code": "order 123 of 9", "word": "café", "name": "Zoë O'Neil", "x-aaaa": 1}
    assert client.post(url, json=fine).json == fine
    wrong = {"code": "12", "word": "cafe", "name": "R2-D2", "x-aaa": "one", "x-" + "a" * 50 + "!": 1}
    refused = client.post(url, json=wrong)
    assert refused.status_code == 422
    assert {e["path"] for e in refused.json["errors"]} == {"/", "/code", "/word", "/name", "/x-aaa"}
    unique = _echo_endpoint(owner, "/unique", request_schema={"uniqueItems": True})
    many = [{"n": n} for n in range(15_000)]  # compared pairwise (as jsonschema does objects): minutes
    assert client.post(unique, json=many).status_code == 200
    assert client.post(unique, json=[{"a": 1, "b": 2}, {"b": 2, "a": 1}]).status_code == 422
    assert client.post(unique, json=[1, True]).status_code == 200


def test_the_rate_limit_is_charged_before_the_body_is_checked(owner, core_app, database, monkeypatch):
    """Calls past the limit are refused (429) before any schema work, and refused bodies count
    against the limit in the database too, where other processes see them."""
    browser, org, token = owner
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 3)
    url = _echo_endpoint(owner, "/limited", request_schema={"type": "object", "required": ["items"]})
    codes = [browser.client.post(url, json={"no": "items"}).status_code for _ in range(5)]
    assert codes == [422, 422, 422, 429, 429]
    limited = browser.client.post(url, json={"items": []})
    # The limit, and when it resets: the next UTC minute, which Retry-After counts down to.
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json["limit"] == 3 and limited.json["resets_at"].endswith(":00Z")
    with core_app.app_context():
        run_writer(db.engine).flush()
    with database.connect(Role.ADMIN) as conn:
        counted = conn.execute(
            "SELECT COALESCE(sum(count), 0) FROM rate_limit_buckets WHERE key = ANY(%s)", (rate_keys(org),)
        ).fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM workflow_runs WHERE org_id = %s", (org,)).fetchone()[0]
    assert (counted, runs) == (3, 0)


def test_checking_a_body_counts_against_the_calls_time_limit(owner, monkeypatch):
    """Each level of this schema doubles the work of checking a body that fails it (2^40 in all):
    the check stops at the call's time limit (here 1 s) with a 504, as an over-long run does."""
    monkeypatch.setattr("nectar.core.endpoints.serve.SYNC_LIMITS", Limits(time_limit_seconds=1.0))
    levels = {
        f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}, {"$ref": f"#/$defs/l{i + 1}"}]} for i in range(40)
    }
    schema = {"$defs": {**levels, "l40": {"type": "string"}}, "$ref": "#/$defs/l0"}
    url = _echo_endpoint(owner, "/doubling", request_schema=schema)
    client = owner[0].client
    assert client.post(url, json="fine").status_code == 200
    started = time.monotonic()
    slow = client.post(url, json=1)
    assert slow.status_code == 504 and "time limit of 1 s" in slow.json["detail"], slow.json
    assert time.monotonic() - started < 1 + 5
    endless = _echo_endpoint(owner, "/endless", request_schema={"$ref": "#"})
    refused = client.post(endless, json={})
    assert refused.status_code == 422 and "refers to itself" in refused.json["errors"][0]["message"]


@pytest.fixture
def owner(browser):
    browser.sign_up()
    org = browser.create_org()
    return browser, org, _new_key(browser)
