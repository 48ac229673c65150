"""Scoped API keys: each /api/v1 operation needs a scope (shown in the OpenAPI document), a key
without it gets a 403 problem naming it, tenant endpoints that require a key need endpoints:call,
an expired key stops working, and keys made before scopes keep what they could do."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nectar.core.api.views import api, required_scope
from nectar.core.api_keys.service import Scope, key_hash
from nectar.shared.config import Role

ECHO = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "status": 200, "body": "pong"}]}


def _key(browser, *scopes: str, expires: str = "") -> str:
    page = browser.post(
        "/org/api-keys", {"target": f"k-{uuid.uuid4().hex[:6]}", "scopes": list(scopes), "expires": expires}
    ).get_data(as_text=True)
    match = re.search(r'id="new-token">(nsk_[^<]+)<', page)
    assert match, page
    return match.group(1)


@pytest.fixture
def org(browser):
    browser.sign_up()
    org_id = browser.create_org()
    return browser, org_id, _key(browser, "admin")


def _workflow(browser, token, status=201) -> str | None:
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": f"wf-{uuid.uuid4().hex[:6]}", "definition": ECHO},
    )
    assert created.status_code == status, created.json
    return created.json.get("id")


def test_a_read_key_reads_and_is_refused_writes_with_the_scope_named(org):
    browser, _org_id, admin = org
    reader = _key(browser, "read")
    assert browser.api("GET", "/api/v1/organization", token=reader).status_code == 200
    assert browser.api("GET", "/api/v1/workflows", token=reader).status_code == 200
    refused = browser.api(
        "POST", "/api/v1/workflows", token=reader, json={"name": "nope", "definition": ECHO}
    )
    assert refused.status_code == 403
    assert refused.json["required_scope"] == "workflows:write" and "workflows:write" in refused.json["detail"]
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert browser.api("GET", "/api/v1/workflows", token=admin).json["items"] == [], "nothing was created"
    # Members, invitations and keys are admin's, reading them too.
    assert browser.api("GET", "/api/v1/api-keys", token=reader).json["required_scope"] == "admin"
    assert browser.api("GET", "/api/v1/members", token=reader).status_code == 403


def test_a_workflows_key_writes_and_reads_but_cannot_make_keys_or_invite(org):
    browser, _org_id, _admin = org
    writer = _key(browser, "workflows:write")
    workflow = _workflow(browser, writer)
    assert browser.api("GET", f"/api/v1/workflows/{workflow}", token=writer).status_code == 200
    made = browser.api(
        "POST", "/api/v1/api-keys", token=writer, json={"name": "escalate", "scopes": ["admin"]}
    )
    assert made.status_code == 403 and made.json["required_scope"] == "admin"
    invited = browser.api("POST", "/api/v1/invitations", token=writer, json={"email": "x@example.com"})
    assert invited.status_code == 403


def test_endpoints_that_require_a_key_need_endpoints_call(org):
    browser, _org_id, admin = org
    workflow = _workflow(browser, admin)
    endpoint = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=admin,
        json={"method": "GET", "path": "/ping", "workflow_id": workflow, "auth": "api_key"},
    ).json
    caller, reader = _key(browser, "endpoints:call"), _key(browser, "read")

    def call(token):
        return browser.client.get(endpoint["url"], headers={"Authorization": f"Bearer {token}"})

    assert call(caller).status_code == 200 and "pong" in call(caller).get_data(as_text=True)
    assert call(admin).status_code == 200, "admin holds every scope"
    refused = call(reader)
    assert refused.status_code == 403 and refused.json["required_scope"] == "endpoints:call"
    # The caller's key calls endpoints and nothing else.
    assert browser.api("GET", "/api/v1/workflows", token=caller).status_code == 403


def test_an_expired_key_stops_working_in_the_api_and_at_endpoints(org, database):
    browser, org_id, admin = org
    workflow = _workflow(browser, admin)
    url = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=admin,
        json={"method": "GET", "path": "/ping", "workflow_id": workflow, "auth": "api_key"},
    ).json["url"]
    token = _key(browser, "admin", expires="30")
    headers = {"Authorization": f"Bearer {token}"}
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 200
    assert browser.client.get(url, headers=headers).status_code == 200  # its scopes are now kept in memory
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE org_id = %s AND expires_at IS NOT NULL",
            (org_id,),
        )
    expired = browser.api("GET", "/api/v1/organization", token=token)
    assert expired.status_code == 401 and "expired" in expired.json["detail"]
    assert browser.client.get(url, headers=headers).status_code == 401
    assert "expired" in browser.get("/org/api-keys").get_data(as_text=True)


def test_keys_made_before_scopes_keep_doing_everything(org, database):
    browser, org_id, _admin = org
    token = f"nsk_{org_id.hex}_{uuid.uuid4().hex}"
    with database.connect(Role.ADMIN, autocommit=True) as conn:  # a row as it was written before scopes
        conn.execute(
            "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, 'old', 'nsk_old', %s)",
            (org_id, key_hash(token)),
        )
    assert browser.api("GET", "/api/v1/api-keys", token=token).status_code == 200
    made = browser.api("POST", "/api/v1/api-keys", token=token, json={"name": "new", "scopes": ["admin"]})
    assert made.status_code == 201, made.json


def test_bad_scopes_or_expiry_are_refused_naming_the_field(org):
    browser, _org_id, admin = org
    cases = [
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["root"]}, "scopes"),
        ({"name": "k", "scopes": "admin"}, "scopes"),
        ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "k", "expires_at": "2020-01-01T00:00:00+00:00"}, "expires_at"),
        ({"name": "k", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no zone
        ({"name": "k", "expires_at": (datetime.now(UTC) + timedelta(days=3000)).isoformat()}, "expires_at"),
        ({"name": "", "scopes": ["read"]}, "name"),
    ]
    for body, field in cases:
        refused = browser.api("POST", "/api/v1/api-keys", token=admin, json=body)
        assert refused.status_code == 422 and refused.json["errors"][0]["path"].startswith(f"/{field}"), (
            body,
            refused.json,
        )
    made = browser.api(
        "POST",
        "/api/v1/api-keys",
        token=admin,
        json={"name": "ci", "scopes": ["endpoints:call", "read"], "expires_at": "2027-12-01T00:00:00Z"},
    )
    assert made.status_code == 201, made.json
    assert made.json["scopes"] == ["read", "endpoints:call"] and made.json["expires_at"].startswith(
        "2027-12-01"
    )
    default = browser.api("POST", "/api/v1/api-keys", token=admin, json={"name": "least"})
    assert default.json["scopes"] == ["read"], "a key made without scopes gets the least"
    page = browser.post("/org/api-keys", {"target": "none", "expires": ""}).get_data(as_text=True)
    assert "Choose at least one scope." in page


def test_every_operation_has_a_scope_and_the_document_shows_it(core_app, org):
    browser, _org_id, admin = org
    document = browser.api("GET", "/api/v1/openapi.json", token=admin).json
    known = {scope.value for scope in Scope}
    for rule in core_app.url_map.iter_rules():
        if not rule.rule.startswith(api.url_prefix):
            continue
        view = core_app.view_functions[rule.endpoint]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert required_scope(view, method) in known, rule.rule
    documented = [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]
    assert documented and all(op["x-required-scope"] in known for _p, _m, op in documented)
    scopes = {(path, method): op["x-required-scope"] for path, method, op in documented}
    assert scopes[("/api-keys", "post")] == "admin"
    assert scopes[("/organization", "get")] == "read"
    assert document["paths"]["/api-keys"]["post"]["security"][0] == {"apiKey": ["admin"]}
