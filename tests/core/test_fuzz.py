"""Bad input on every route of core (tests/fuzz.py), signed in where a route needs it: no answer is a
5xx, nothing refused is stored, and no over-long value reaches the database."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from urllib.parse import urlsplit

import pytest
from werkzeug.routing import Map, Rule

from nectar.core.app import create_app
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from tests.core.conftest import PASSWORD, Browser, link_in, org_id_of
from tests.fuzz import Fuzz, Principal

ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789abc"
HOOK_SECRET = "s" * 32
# A tenant endpoint's calls, as a rule, so the fuzz sends them what it sends every route.
TENANT_CALLS = list(
    Map([Rule("/e/<uuid:org_id>/fuzz", endpoint="tenant call", methods=["GET", "POST"])]).iter_rules()
)
DEFINITION = {
    "trigger": {"type": "http"},
    "steps": [{"id": "reply", "type": "respond", "status": 200, "body": {"ok": True}}],
}


@pytest.fixture(scope="module")
def app(settings_for):
    # One trusted proxy hop: each fuzzed request brings its own address, so no throttle hides a view.
    app = create_app(settings_for(Service.CORE, CORE_ADMIN_TOKEN=ADMIN_TOKEN, TRUSTED_PROXY_HOPS="1"))
    yield app
    with app.app_context():
        db.engine.dispose()


def _api(client, method, url, token, **kwargs):
    response = client.open(url, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert response.status_code < 300, (url, response.get_data(as_text=True))
    return response.json


def _token_in(outbox, address: str, category: str) -> str:
    return urlsplit(link_in(outbox(address, category)["body"])).query.split("token=", 1)[1]


@pytest.fixture(scope="module")
def owner(app, database):
    """An owner with an organization and one of everything a route's address can name."""
    browser = Browser(app)
    email = browser.sign_up()
    org = browser.create_org()
    api = app.test_client()
    page = browser.post("/org/api-keys", {"target": "fuzz", "scopes": "admin"}).get_data(as_text=True)
    token = page.split('id="new-token">', 1)[1].split("<", 1)[0]
    spare_key = _api(api, "POST", "/api/v1/api-keys", token, json={"name": "spare"})
    workflow = _api(api, "POST", "/api/v1/workflows", token, json={"name": "fuzz", "definition": DEFINITION})
    run = _api(api, "POST", f"/api/v1/workflows/{workflow['id']}/runs", token, json={"input": {}})
    # Tenant endpoints are answered outside Flask's URL map (TENANT_CALLS fuzzes them): a public
    # GET, and a POST whose schema bounds the fields, so no call of the fuzz may run. The PUT one is
    # the endpoint the API's routes are fuzzed on (and may delete).
    bounded = {"type": "object", "additionalProperties": {"maxLength": 1000, "maximum": 1_000_000}}
    for method, schema in (("GET", None), ("POST", bounded), ("PUT", None)):
        endpoint = _api(
            api,
            "POST",
            "/api/v1/endpoints",
            token,
            json={
                "method": method,
                "path": "/fuzz",
                "workflow_id": workflow["id"],
                "auth": "public",
                "request_schema": schema,
            },
        )
    hook = _api(
        api,
        "POST",
        "/api/v1/connections",
        token,
        json={
            "service_key": "webhook",
            "name": "fuzz hook",
            "config": {"workflow_id": workflow["id"]},
            "credentials": {"secret": HOOK_SECRET},
        },
    )
    rule = _api(
        api,
        "POST",
        "/api/v1/alert-rules",
        token,
        json={"name": "fuzz", "channel": "email", "target": "ops@example.com"},
    )
    connector = _api(
        api,
        "POST",
        "/api/v1/connectors",
        token,
        json={
            "name": "fuzz-api",
            "document": {
                "openapi": "3.1.0",
                "info": {"title": "Fuzz"},
                "servers": [{"url": "https://api.example.com"}],
                "paths": {"/things": {"get": {"operationId": "listThings"}}},
            },
        },
    )
    invitee = f"invitee-{uuid.uuid4().hex[:8]}@example.com"
    _api(api, "POST", "/api/v1/invitations", token, json={"email": invitee})  # its link is fuzzed
    spare = {"email": f"spare-{uuid.uuid4().hex[:8]}@example.com"}
    invitation = _api(api, "POST", "/api/v1/invitations", token, json=spare)  # revoked by the fuzz
    # Someone else's account and organization, for the service API's suspensions and deactivations.
    other = _api(
        api,
        "POST",
        "/internal/v1/accounts",
        ADMIN_TOKEN,
        json={
            "request_id": str(uuid.uuid4()),
            "email": f"other-{uuid.uuid4().hex[:8]}@example.com",
            "organization_name": "Other Org",
        },
    )
    return {
        "browser": browser,
        "email": email,
        "org": org,
        "token": token,
        "workflow": workflow["id"],
        "variables": {
            "org_id": str(org),
            "user_id": None,  # filled in below: the owner's own id (a member cannot remove the last owner)
            "key_id": spare_key["id"],
            "workflow_id": workflow["id"],
            "run_id": run["id"],
            "endpoint_id": endpoint["id"],
            "connection_id": hook["id"],
            "connector_id": connector["id"],
            "invitation_id": invitation["id"],
            "rule_id": rule["id"],
            # Signed tokens (resume, approval and unsubscribe links) and names are fuzzed with values
            # that were never issued: they must be refused as such, whatever else the request holds.
            "token": "fuzz-token-never-issued",
            "name": "paid",
            "approval_id": str(uuid.uuid4()),
        },
        "other": {"org_id": other["organization_id"], "user_id": other["user_id"]},
        "invitee": invitee,
    }


def _signed(body: bytes) -> dict[str, str]:
    """The signature of an incoming webhook's body, as its sender computes it."""
    return {
        "X-Nectar-Signature": "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    }


def _json_fields(workflow_id: str) -> dict:
    """What core's JSON routes read, each with a valid value (made anew per request where it must be
    unique), so that the fuzzed field is the only thing wrong with a body."""
    return {
        "name": lambda: f"Fuzz {uuid.uuid4().hex[:8]}",
        "description": "Fuzzed",
        "note": "Fuzzed",
        "definition": DEFINITION,
        "input": {},
        "version": 1,
        "email": lambda: f"fuzz-{uuid.uuid4().hex[:12]}@example.com",
        "role": "member",
        "display_name": "Fuzz Person",
        "method": "POST",
        "path": lambda: f"/fuzz-{uuid.uuid4().hex[:8]}",
        "workflow_id": workflow_id,
        "auth": "public",
        "request_schema": {"type": "object"},
        "pinned_version": 1,
        "service_key": "webhook",
        "config": {"workflow_id": workflow_id},
        "credentials": {"secret": "s" * 32},
        "request_id": lambda: str(uuid.uuid4()),
        "organization_name": "Fuzz Org",
        "plan": "free",
        "reason": "Fuzzed",
    }


def test_bad_input_on_any_route_is_refused_without_a_5xx_and_nothing_is_stored(app, owner, database, outbox):
    browser, org = owner["browser"], owner["org"]
    anonymous = Browser(app)
    anonymous.post("/forgot-password", {"email": owner["email"]})
    with database.connect(Role.ADMIN) as conn:  # sign-up confirmed it: as after staff changed the address
        conn.execute("UPDATE users SET email_verified_at = NULL WHERE email = %s", (owner["email"],))
    assert browser.post("/verify-email/resend", {}).status_code == 302  # a verify link to fuzz with
    queries = {
        "accounts.reset_password": f"token={_token_in(outbox, owner['email'], 'account.reset')}",
        "accounts.verify_email": f"token={_token_in(outbox, owner['email'], 'account.verify')}",
        "orgs.accept_invitation": f"token={_token_in(outbox, owner['invitee'], 'org.invitation')}",
    }
    with app.app_context():
        from nectar.schema.models import User

        owner["variables"]["user_id"] = str(
            db.session.query(User.id).filter(User.email == owner["email"]).scalar()
        )

    def sign_in():
        browser.sign_in(owner["email"], PASSWORD)
        browser.post(f"/orgs/{org}/switch")

    signed_in = Principal(
        browser.client,
        token_page="/org/settings",
        still_in=lambda: browser.get("/org/settings").status_code == 200 and org_id_of(browser) == org,
        sign_in=sign_in,
    )
    api = Principal(app.test_client(), headers={"Authorization": f"Bearer {owner['token']}"})
    service = Principal(app.test_client(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    hooks = Principal(app.test_client(), sign=_signed)

    def principal_for(rule):
        if rule.rule.startswith("/api/"):
            return api
        if rule.rule.startswith("/internal/"):
            return service
        if rule.rule.startswith("/e/"):
            return hooks
        return signed_in

    def value_for(rule, name):
        if rule.rule.startswith("/internal/") and name in owner["other"]:
            return owner["other"][name]  # suspending or deactivating the fuzzing owner would stop the fuzz
        return owner["variables"][name]

    fuzz = Fuzz(
        app,
        extra_rules=TENANT_CALLS,
        value_for=value_for,
        principal_for=principal_for,
        json_routes=lambda rule: rule.rule.startswith(("/api/", "/internal/", "/e/")),
        json_fields=_json_fields(owner["workflow"]),
        queries=queries,
    )
    fuzz.check(database)
