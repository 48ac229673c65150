"""Every URL and API route that takes an id, tried by organization A with organization B's ids:
each answers 404, shows nothing of B, and changes nothing of B."""

import re
import uuid

import pytest

from nectar.shared.config import Role
from tests.core.conftest import unique_email


def _token(browser) -> str:
    page = browser.post("/org/api-keys", {"target": "k", "scopes": "admin"}).get_data(as_text=True)
    return re.search(r'id="new-token">(nsk_[^<]+)<', page).group(1)


@pytest.fixture(scope="module")
def two_orgs(core_app, database):
    from tests.core.conftest import Browser

    a, b = Browser(core_app), Browser(core_app)
    a.sign_up()
    org_a = a.create_org("Org A")
    b_email = b.sign_up()
    org_b = b.create_org("Org B")
    b_token = _token(b)
    b_workflow = b.api(
        "POST",
        "/api/v1/workflows",
        token=b_token,
        json={
            "name": "secret",
            "definition": {
                "trigger": {"type": "http"},
                "steps": [{"id": "r", "type": "respond", "body": "B"}],
            },
        },
    ).json["id"]
    b_endpoint = b.api(
        "POST",
        "/api/v1/endpoints",
        token=b_token,
        json={"method": "GET", "path": "/secret", "workflow_id": b_workflow, "auth": "api_key"},
    ).json["id"]
    b_run = b.api("POST", f"/api/v1/workflows/{b_workflow}/runs", token=b_token, json={}).json[
        "id"
    ]  # queued is enough
    invited = unique_email()
    b.post("/org/invitations", {"email": invited, "role": "member"})
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        b_user = conn.execute("SELECT id FROM users WHERE email = %s", (b_email,)).fetchone()[0]
        b_key = conn.execute("SELECT id FROM api_keys WHERE org_id = %s", (org_b,)).fetchone()[0]
        b_invitation = conn.execute("SELECT id FROM invitations WHERE org_id = %s", (org_b,)).fetchone()[0]
        # A second member in B, so "remove" has something to remove.
        b_member = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (unique_email(),)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'member')", (org_b, b_member)
        )
        b_approval = conn.execute(
            "INSERT INTO workflow_approvals (org_id, run_id, step_key, step_id, title, approver_role, expires_at) "
            "VALUES (%s, %s, 'ok', 'ok', 'secret', 'member', now() + interval '1 day') RETURNING id",
            (org_b, b_run),
        ).fetchone()[0]
    return {
        "a": a,
        "a_token": _token(a),
        "org_a": org_a,
        "org_b": org_b,
        "b_token": b_token,
        "b_user": b_user,
        "b_member": b_member,
        "b_key": b_key,
        "b_invitation": b_invitation,
        "b_workflow": b_workflow,
        "b_endpoint": b_endpoint,
        "b_run": b_run,
        "b_approval": b_approval,
    }


def _b_state(database, ids) -> tuple:
    with database.connect(Role.ADMIN) as conn:
        return (
            conn.execute(
                "SELECT id, current_version FROM workflows WHERE org_id = %s", (ids["org_b"],)
            ).fetchall(),
            conn.execute("SELECT count(*) FROM workflow_runs WHERE org_id = %s", (ids["org_b"],)).fetchall(),
            conn.execute("SELECT id, path FROM endpoints WHERE org_id = %s", (ids["org_b"],)).fetchall(),
            conn.execute(
                "SELECT user_id, role FROM memberships WHERE org_id = %s ORDER BY user_id", (ids["org_b"],)
            ).fetchall(),
            conn.execute("SELECT id, revoked_at FROM api_keys WHERE org_id = %s", (ids["org_b"],)).fetchall(),
            conn.execute(
                "SELECT id, revoked_at FROM invitations WHERE org_id = %s", (ids["org_b"],)
            ).fetchall(),
            conn.execute(
                "SELECT id, status FROM workflow_runs WHERE org_id = %s ORDER BY id", (ids["org_b"],)
            ).fetchall(),
            conn.execute(
                "SELECT id, decision FROM workflow_approvals WHERE org_id = %s", (ids["org_b"],)
            ).fetchall(),
            conn.execute(
                "SELECT count(*) FROM workflow_run_events WHERE org_id = %s", (ids["org_b"],)
            ).fetchall(),
        )


PAGE_ATTEMPTS = [
    ("post", "/orgs/{org_b}/switch", {}),
    ("post", "/org/members/{b_member}/role", {"role": "admin"}),
    ("post", "/org/members/{b_member}/remove", {}),
    ("post", "/org/members/{b_user}/remove", {}),
    ("post", "/org/transfer/{b_member}", {}),
    ("post", "/org/invitations/{b_invitation}/revoke", {}),
    ("post", "/org/api-keys/{b_key}/revoke", {}),
    ("post", "/org/approvals/{b_approval}", {"decision": "approved"}),
    ("post", "/org/workflows/{b_workflow}/delete", {"confirm": "yes"}),
]

API_ATTEMPTS = [
    ("GET", "/api/v1/workflows/{b_workflow}"),
    ("DELETE", "/api/v1/workflows/{b_workflow}"),
    ("PATCH", "/api/v1/workflows/{b_workflow}"),
    ("GET", "/api/v1/workflows/{b_workflow}/versions"),
    ("POST", "/api/v1/workflows/{b_workflow}/versions"),
    ("POST", "/api/v1/workflows/{b_workflow}/rollback"),
    ("POST", "/api/v1/workflows/{b_workflow}/runs"),
    ("GET", "/api/v1/runs/{b_run}"),
    ("POST", "/api/v1/runs/{b_run}/rerun"),
    ("POST", "/api/v1/runs/{b_run}/events/paid"),
    ("POST", "/api/v1/runs/{b_run}/retry"),
    ("POST", "/api/v1/runs/{b_run}/cancel"),
    ("PUT", "/api/v1/endpoints/{b_endpoint}"),
    ("DELETE", "/api/v1/endpoints/{b_endpoint}"),
    ("DELETE", "/api/v1/api-keys/{b_key}"),
    ("DELETE", "/api/v1/members/{b_member}"),
    ("DELETE", "/api/v1/invitations/{b_invitation}"),
]


@pytest.mark.parametrize(("method", "template", "data"), PAGE_ATTEMPTS)
def test_pages_answer_404_for_another_organizations_ids(two_orgs, database, method, template, data):
    before = _b_state(database, two_orgs)
    response = two_orgs["a"].post(template.format(**two_orgs), data)
    assert response.status_code == 404, response.get_data(as_text=True)[:500]
    assert "Org B" not in response.get_data(as_text=True)
    assert _b_state(database, two_orgs) == before


@pytest.mark.parametrize(("method", "template"), API_ATTEMPTS)
def test_api_routes_answer_404_for_another_organizations_ids(two_orgs, database, method, template):
    before = _b_state(database, two_orgs)
    # A body each operation takes (unknown fields are refused before anything is looked up).
    bodies = {
        "/api/v1/workflows/{b_workflow}/versions": {
            "definition": {"trigger": {"type": "http"}, "steps": [{"id": "x", "type": "respond"}]}
        },
        "/api/v1/workflows/{b_workflow}/rollback": {"version": 1},
        "/api/v1/workflows/{b_workflow}": {"name": "stolen", "description": "stolen"},
        "/api/v1/endpoints/{b_endpoint}": {
            "method": "GET",
            "path": "/stolen",
            "workflow_id": str(two_orgs["b_workflow"]),
        },
    }
    body = bodies.get(template, {})
    response = two_orgs["a"].api(method, template.format(**two_orgs), token=two_orgs["a_token"], json=body)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert _b_state(database, two_orgs) == before


def test_lists_and_counts_show_only_the_callers_organization(two_orgs):
    a, token = two_orgs["a"], two_orgs["a_token"]
    members = a.api("GET", "/api/v1/members", token=token).json["items"]
    assert {m["user_id"] for m in members}.isdisjoint({str(two_orgs["b_user"]), str(two_orgs["b_member"])})
    keys = a.api("GET", "/api/v1/api-keys", token=token).json["items"]
    assert str(two_orgs["b_key"]) not in {k["id"] for k in keys}
    assert a.api("GET", "/api/v1/invitations", token=token).json["items"] == []
    assert a.api("GET", "/api/v1/organization", token=token).json["id"] == str(two_orgs["org_a"])


def test_a_key_row_of_another_organization_is_invisible_to_the_lookup(two_orgs, database):
    """A token naming org A whose hash sits in a row of org B: the lookup runs under A's scope, so
    B's row is invisible and the token is refused (the hash alone must not authenticate)."""
    import hashlib

    token = "nsk_" + two_orgs["org_a"].hex + "_planted-in-b"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, 'planted', 'x', %s)",
            (two_orgs["org_b"], hashlib.sha256(token.encode()).hexdigest()),
        )
    assert two_orgs["a"].api("GET", "/api/v1/organization", token=token).status_code == 401


def test_a_session_cannot_choose_another_organization_by_editing_its_cookie(two_orgs):
    a = two_orgs["a"]
    with a.client.session_transaction() as session:
        session["org_id"] = str(two_orgs["org_b"])
    response = a.get("/dashboard")
    assert response.status_code == 302  # not a member: the choice is dropped
    with a.client.session_transaction() as session:
        assert "org_id" not in session
        session["org_id"] = str(two_orgs["org_a"])


@pytest.mark.parametrize(
    "template", ["/org/workflows/{b_workflow}", "/org/runs/{b_run}", "/org/endpoints/{b_endpoint}"]
)
def test_workflow_pages_answer_404_for_another_organizations_ids(two_orgs, template):
    response = two_orgs["a"].get(template.format(**two_orgs))
    assert response.status_code == 404 and "secret" not in response.get_data(as_text=True)


def test_another_organizations_endpoint_refuses_our_key(two_orgs):
    a = two_orgs["a"]
    url = f"/e/{two_orgs['org_b']}/secret"
    assert a.client.get(url, headers={"Authorization": f"Bearer {two_orgs['a_token']}"}).status_code == 401
    assert a.client.get(url, headers={"Authorization": f"Bearer {two_orgs['b_token']}"}).status_code == 200


def test_unknown_ids_are_404_too(two_orgs):
    assert two_orgs["a"].post(f"/org/api-keys/{uuid.uuid4()}/revoke").status_code == 404
