"""Organizations in admin: an exact list across tenants, the detail with members and subscription,
and suspension through core's contract: core then refuses the organization's pages, API and
endpoints until staff reactivate it. Each write leaves one audit row."""

from __future__ import annotations

import re
import uuid

import pytest

from nectar.admin.app import create_app
from nectar.shared.config import Role, Service
from tests.admin.conftest import ADMIN_TOKEN, StaffBrowser
from tests.core.conftest import Browser as CoreBrowser
from tests.serving import dead_url

ROW_LINK = re.compile(r'<td><a href="/orgs/([0-9a-f-]{36})">([^<]+)</a></td>')
RESPOND_OK = {
    "trigger": {"type": "http"},
    "steps": [{"id": "answer", "type": "respond", "status": 200, "body": {"ok": True}}],
}


@pytest.fixture(scope="module")
def seeded(database):
    marker = f"o{uuid.uuid4().hex[:8]}"
    facts = [
        ("active", "free"),
        ("active", "pro"),
        ("active", "pro"),
        ("suspended", "starter"),
        ("active", "free"),
    ]
    orgs = []
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for i, (status, plan) in enumerate(facts):
            org_id = uuid.uuid4()
            conn.execute(
                "INSERT INTO organizations (id, name, slug, status, plan) VALUES (%s, %s, %s, %s, %s)",
                (org_id, f"Org {marker} {i}", f"{marker}-{i}", status, plan),
            )
            orgs.append({"id": org_id, "status": status, "plan": plan, "name": f"Org {marker} {i}"})
    return marker, orgs


def _names(page) -> set[str]:
    assert page.status_code == 200
    return {name for _id, name in ROW_LINK.findall(page.get_data(as_text=True))}


def test_the_list_searches_and_filters_exactly(staff_browser, seeded):
    marker, orgs = seeded
    staff = staff_browser("read_only")
    everything = staff.get(f"/orgs?q={marker}")
    assert _names(everything) == {o["name"] for o in orgs} and "of 5" in everything.get_data(as_text=True)
    assert _names(staff.get(f"/orgs?q={marker}&status=suspended")) == {
        o["name"] for o in orgs if o["status"] == "suspended"
    }
    assert _names(staff.get(f"/orgs?q={marker}&plan=pro")) == {o["name"] for o in orgs if o["plan"] == "pro"}
    assert _names(staff.get(f"/orgs?q={marker}-3")) == {orgs[3]["name"]}, "slugs are searched"
    assert _names(staff.get(f"/orgs?q={marker}&plan=platinum")) == {
        o["name"] for o in orgs
    }, "unknown filter ignored"


def test_the_detail_shows_members_plan_and_subscription(staff_browser, core_app, database):
    owner = CoreBrowser(core_app)
    email = owner.sign_up()
    org = owner.create_org(name="Subscribed Co")
    stripe_id = f"sub_{uuid.uuid4().hex[:14]}"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, organization_id, plan, status, "
            "unit_amount, currency, interval) VALUES (%s, 'cus_T1', %s, 'pro', 'active', 9900, 'usd', 'month')",
            (stripe_id, org),
        )
    page = staff_browser("read_only").get(f"/orgs/{org}").get_data(as_text=True)
    assert "Subscribed Co" in page and email in page and ">owner<" in page
    assert stripe_id in page and "cus_T1" in page and "99.00 USD × 1 / month" in page


def _endpoint_url(customer: CoreBrowser, token: str) -> str:
    workflow = customer.api(
        "POST", "/api/v1/workflows", token=token, json={"name": "ok", "definition": RESPOND_OK}
    ).json["id"]
    created = customer.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "POST", "path": "/ping", "workflow_id": workflow, "auth": "public"},
    )
    assert created.status_code == 201, created.json
    return created.json["url"]


def _new_key(customer: CoreBrowser) -> str:
    page = customer.post("/org/api-keys", {"target": "admin-test", "scopes": "admin"}).get_data(as_text=True)
    return re.search(r'id="new-token">(nsk_[^<]+)<', page).group(1)


def test_suspending_makes_core_refuse_the_organization_until_reactivated(
    staff_browser, core_app, audit_rows, database
):
    customer = CoreBrowser(core_app)
    email = customer.sign_up()
    org = customer.create_org()
    token = _new_key(customer)
    endpoint = _endpoint_url(customer, token)
    calls = core_app.test_client()
    assert calls.post(endpoint, json={}).status_code == 200
    assert customer.api("GET", "/api/v1/organization", token=token).status_code == 200

    staff = staff_browser("support")
    before = len(audit_rows())
    suspended = staff.post(f"/orgs/{org}/suspend", {"reason": "Chargeback under review"})
    assert suspended.status_code == 302
    rows = audit_rows()[before:]
    assert [(r["action"], r["target"]) for r in rows] == [("organization.suspended", f"organization:{org}")]
    assert rows[0]["before"]["status"] == "active"
    assert rows[0]["after"] == {
        "status": "suspended",
        "suspended_reason": "Chargeback under review",
        "plan": "free",
    }

    # Core refuses the organization everywhere: its pages (also after a fresh sign-in), API, endpoints.
    page = customer.get("/dashboard")
    assert page.status_code == 403 and "Chargeback under review" in page.get_data(as_text=True)
    again = CoreBrowser(core_app)
    again.sign_in(email)
    again.post(f"/orgs/{org}/switch")
    assert again.get("/dashboard").status_code == 403
    assert customer.api("GET", "/api/v1/organization", token=token).status_code == 401
    assert calls.post(endpoint, json={}).status_code == 404
    assert "suspended: Chargeback under review" in staff.get(f"/orgs/{org}").get_data(as_text=True)

    assert staff.post(f"/orgs/{org}/reactivate").status_code == 302
    assert customer.get("/dashboard").status_code == 200
    assert customer.api("GET", "/api/v1/organization", token=token).status_code == 200
    assert calls.post(endpoint, json={}).status_code == 200
    assert [r["action"] for r in audit_rows()[before:]] == [
        "organization.suspended",
        "organization.reactivated",
    ]


def test_a_suspension_needs_a_reason(staff_browser, core_app, audit_rows, database):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    org = customer.create_org()
    staff = staff_browser("support")
    before = len(audit_rows())
    refused = staff.post(f"/orgs/{org}/suspend", {"reason": "   "})
    assert refused.status_code == 422 and "Give a reason" in refused.get_data(as_text=True)
    assert len(audit_rows()) == before
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute("SELECT status FROM organizations WHERE id = %s", (org,)).fetchone()[0] == "active"
        )


def test_when_core_is_down_a_suspension_is_not_recorded_and_the_reason_is_kept(
    settings_for, staff_member, core_app, audit_rows, database
):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    org = customer.create_org()
    app = create_app(settings_for(Service.ADMIN, CORE_ADMIN_TOKEN=ADMIN_TOKEN, CORE_API_URL=dead_url()))
    try:
        email, password, _ = staff_member("support")
        staff = StaffBrowser(app)
        staff.sign_in(email, password)
        before = len(audit_rows())
        answer = staff.post(f"/orgs/{org}/suspend", {"reason": "Typed with care"})
        assert answer.status_code == 503
        assert "Core did not answer" in answer.get_data(as_text=True)
        assert "Typed with care</textarea>" in answer.get_data(as_text=True)
        assert len(audit_rows()) == before
        with database.connect(Role.ADMIN) as conn:
            assert (
                conn.execute("SELECT status FROM organizations WHERE id = %s", (org,)).fetchone()[0]
                == "active"
            )
    finally:
        from nectar.shared.database import db

        with app.app_context():
            db.engine.dispose()
