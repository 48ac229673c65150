"""The integration hub: catalog, encrypted credentials that never come back, real connection
tests, authenticated calls from workflows, key rotation and signed incoming webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid

import pytest
from cryptography.fernet import Fernet

from nectar.admin.main import main as admin_main
from nectar.core.app import create_app
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from tests.core.conftest import SERVICE_TOKEN, Browser, run_and_wait
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow
from tests.core.upstream import serving

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()
TOKEN = "upstream-bearer-token-1234567890"


def _echo_authorization(path: str, headers: dict):
    authorized = headers.get("Authorization") == f"Bearer {TOKEN}"
    if path == "/whoami":  # an API that says which credential it was given
        return 200, {"X-Token": TOKEN}, {"token": TOKEN, "header": headers.get("Authorization")}
    return (200 if authorized else 401), {}, {"path": path, "authorized": authorized}


@pytest.fixture(scope="module")
def upstream():
    with serving(_echo_authorization) as url:
        yield url


def _make_app(settings_for, keys: str):
    return create_app(
        settings_for(
            Service.CORE,
            CORE_SERVICE_TOKEN=SERVICE_TOKEN,
            NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32",
            NECTAR_ENCRYPTION_KEYS=keys,
        )
    )


@pytest.fixture(scope="module")
def hub(settings_for):
    app = _make_app(settings_for, f"a:{KEY_A}")
    browser = Browser(app)
    browser.sign_up()
    org = browser.create_org()
    yield browser, org, _new_key(browser), app
    with app.app_context():
        db.engine.dispose()


def _rest(browser, token, upstream, name="upstream"):
    created = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "rest",
            "name": name,
            "config": {"base_url": upstream, "auth": "bearer"},
            "credentials": {"token": TOKEN},
        },
    )
    assert created.status_code == 201, created.json
    return created.json


def test_the_catalog_offers_the_five_connectors(hub):
    browser, _org, token, _app = hub
    keys = {c["key"] for c in browser.api("GET", "/api/v1/catalog", token=token).json["items"]}
    assert keys == {"rest", "webhook", "smtp", "slack", "openapi"}


def test_credentials_are_encrypted_and_never_returned(hub, upstream, database):
    browser, org, token, _app = hub
    connection = _rest(browser, token, upstream, "secretive")
    assert connection["has_credentials"] is True and "credentials" not in connection
    assert TOKEN not in json.dumps(browser.api("GET", "/api/v1/connections", token=token).json)
    with database.connect(Role.ADMIN) as conn:
        ciphertext, key_id = conn.execute(
            "SELECT credentials_ciphertext, key_id FROM integration_connections WHERE id = %s",
            (connection["id"],),
        ).fetchone()
    assert TOKEN.encode() not in bytes(ciphertext) and key_id == "a"


def test_bad_settings_are_refused_with_paths(hub):
    browser, _org, token, _app = hub
    bad = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "rest",
            "name": "x",
            "config": {"base_url": "ftp://x", "auth": "magic"},
            "credentials": {"token": 5},
        },
    )
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json["errors"]} >= {
        "/config/base_url",
        "/config/auth",
        "/credentials/token",
    }
    assert (
        browser.api(
            "POST", "/api/v1/connections", token=token, json={"service_key": "fax", "name": "x"}
        ).status_code
        == 422
    )


def test_testing_a_connection_reports_success_or_the_error(hub, upstream):
    browser, _org, token, _app = hub
    good = _rest(browser, token, upstream, "good")
    result = browser.api("POST", f"/api/v1/connections/{good['id']}/test", token=token).json
    assert result["ok"] is True and result["connection"]["last_test_ok"] is True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    broken = _rest(browser, token, f"http://127.0.0.1:{dead}", "broken")
    failed = browser.api("POST", f"/api/v1/connections/{broken['id']}/test", token=token).json
    assert failed["ok"] is False and "could not reach" in failed["message"]


def test_testing_a_slack_connection_with_a_broken_url_does_not_show_the_url(hub):
    """A Slack webhook's URL is its credential, never shown again; a refusal quoted it (its first
    100 characters), into the test's answer and the connection's last_test_error."""
    browser, _org, token, _app = hub
    token_part = uuid.uuid4().hex
    created = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "slack",
            "name": "team",
            "config": {},
            "credentials": {
                "webhook_url": f"https://hooks.slack.com:99999/services/T0000/B0000/{token_part}"
            },
        },
    )
    assert created.status_code == 201, created.json
    failed = browser.api("POST", f"/api/v1/connections/{created.json['id']}/test", token=token)
    assert failed.json["ok"] is False and "not a URL" in failed.json["message"], failed.json
    assert token_part[:8] not in failed.get_data(as_text=True)
    listed = browser.api("GET", "/api/v1/connections", token=token)
    assert token_part[:8] not in listed.get_data(as_text=True)


def test_a_workflow_calls_through_a_connection_with_its_credentials(hub, upstream):
    browser, _org, token, _app = hub
    _rest(browser, token, upstream, "api")
    definition = {
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "get", "type": "http_request", "connection": "api", "url": "/orders"},
            {"id": "r", "type": "respond", "body": "{{ steps.get.body }}"},
        ],
    }
    run = run_and_wait(browser, token, _workflow(browser, token, definition))
    assert run["status"] == "succeeded", run
    assert run["steps"][1]["output"] == {"path": "/orders", "authorized": True}
    outside = {
        **definition,
        "steps": [
            {"id": "get", "type": "http_request", "connection": "api", "url": "https://elsewhere.example/"}
        ],
    }
    leak = run_and_wait(browser, token, _workflow(browser, token, outside))
    assert leak["status"] == "failed" and "outside the connection's base URL" in leak["error"]


def test_a_connections_credentials_echoed_by_its_service_are_masked_in_the_run(hub, upstream):
    """Credentials are never shown: an answer that repeats them (an introspection call, an error that
    quotes the key) is recorded with them masked, as a secret's value is."""
    browser, _org, token, _app = hub
    _rest(browser, token, upstream, "echoing")
    definition = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "get", "type": "http_request", "connection": "echoing", "url": "/whoami"}],
    }
    run = run_and_wait(browser, token, _workflow(browser, token, definition))
    assert run["status"] == "succeeded", run
    assert TOKEN not in json.dumps(run), run["steps"][0]["output"]
    assert run["steps"][0]["output"]["body"]["token"] == "***"


def test_keys_rotate_without_losing_credentials(hub, upstream, settings_for, database, monkeypatch, capsys):
    browser, _org, token, _app = hub
    connection = _rest(browser, token, upstream, "rotating")
    environ = database.environ(NECTAR_ENCRYPTION_KEYS=f"b:{KEY_B},a:{KEY_A}")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert admin_main(["rotate-credentials"]) == 0
    assert "with key b" in capsys.readouterr().out
    only_b = _make_app(settings_for, f"b:{KEY_B}")
    other = Browser(only_b)
    result = other.api("POST", f"/api/v1/connections/{connection['id']}/test", token=token).json
    assert result["ok"] is True, result
    with only_b.app_context():
        db.engine.dispose()


def _hook(browser, token) -> tuple[dict, bytes, dict]:
    """An incoming-webhook connection, a body, and headers that sign it correctly."""
    workflow_id = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "http"},
            "steps": [{"id": "r", "type": "respond", "body": {"got": "{{ trigger.body.event }}"}}],
        },
    )
    hook = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "webhook",
            "name": f"hook-{workflow_id[:8]}",
            "config": {"workflow_id": workflow_id},
            "credentials": {"secret": "s" * 32},
        },
    ).json
    body = json.dumps({"event": "push"}).encode()
    signature = "sha256=" + hmac.new(b"s" * 32, body, hashlib.sha256).hexdigest()
    return hook, body, {"Content-Type": "application/json", "X-Nectar-Signature": signature}


def test_a_signed_incoming_webhook_starts_its_workflow(hub):
    browser, org, token, _app = hub
    hook, body, headers = _hook(browser, token)
    assert (
        browser.client.post(
            hook["webhook_url"], data=body, headers={**headers, "X-Nectar-Signature": "sha256=bad"}
        ).status_code
        == 401
    )
    ok = browser.client.post(hook["webhook_url"], data=body, headers=headers)
    assert ok.status_code == 200 and ok.json == {"got": "push"}


def test_incoming_webhooks_count_against_the_plan_and_stop_when_suspended(
    settings_for, database, monkeypatch
):
    from nectar.core.endpoints import service as endpoint_service

    app = _make_app(settings_for, f"a:{KEY_A}")
    browser = Browser(app)
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    hook, body, headers = _hook(browser, token)
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 2)
    codes = [
        browser.client.post(hook["webhook_url"], data=body, headers=headers).status_code for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 1000)
    with database.connect(Role.ADMIN) as conn:
        conn.execute("UPDATE organizations SET status = 'suspended' WHERE id = %s", (org,))
    suspended = browser.client.post(hook["webhook_url"], data=body, headers=headers)
    assert suspended.status_code == 404
    with database.connect(Role.ADMIN) as conn:
        runs = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE org_id = %s AND trigger = 'http'", (org,)
        ).fetchone()[0]
    assert runs == 2
    with app.app_context():
        db.engine.dispose()


def test_moving_a_connection_to_another_server_needs_its_credentials_again(hub, upstream):
    browser, _org, token, _app = hub
    connection = _rest(browser, token, upstream, name="moving")
    url = f"/api/v1/connections/{connection['id']}"
    elsewhere = {"base_url": "https://attacker.example", "auth": "bearer"}
    moved = browser.api("PUT", url, token=token, json={"name": "moving", "config": elsewhere})
    assert moved.status_code == 422
    assert [e["path"] for e in moved.json["errors"]] == ["/credentials"]
    renamed = browser.api(
        "PUT", url, token=token, json={"name": "renamed", "config": {"base_url": upstream, "auth": "bearer"}}
    )
    assert renamed.status_code == 200, renamed.json
    moved_with_secret = browser.api(
        "PUT",
        url,
        token=token,
        json={"name": "renamed", "config": elsewhere, "credentials": {"token": "new"}},
    )
    assert moved_with_secret.status_code == 200, moved_with_secret.json
