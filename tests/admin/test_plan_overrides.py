"""Staff raise a plan's limit or grant a feature for one organization: audited (who, when, what,
why), shown on the organization's page, refused when it would not raise anything, and honoured by
core at once."""

from __future__ import annotations

import html
import re

from nectar.shared.config import Role
from tests.core.conftest import Browser as CoreBrowser

NOT_INCLUDED = "API keys are not included in the Free plan"


def _org_row(database, org):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT plan, plan_overrides FROM organizations WHERE id = %s", (org,)).fetchone()


def test_staff_grant_api_keys_and_core_honours_it_until_taken_back(
    staff_browser, core_app, audit_rows, database
):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    org = customer.create_org(api_keys=False)
    assert NOT_INCLUDED in customer.post("/org/api-keys", {"target": "CI", "scopes": "admin"}).get_data(
        as_text=True
    )

    staff = staff_browser("support")
    before = len(audit_rows())
    granted = staff.post(f"/orgs/{org}/overrides", {"name": "api_keys", "reason": "Pilot with their CTO"})
    assert granted.status_code == 302
    rows = audit_rows()[before:]
    assert [(r["action"], r["target"], r["actor"]) for r in rows] == [
        ("organization.plan_override_granted", f"organization:{org}", staff.email)
    ]
    assert rows[0]["before"] is None and rows[0]["created_at"] is not None
    after = rows[0]["after"]
    assert (after["override"], after["value"], after["reason"], after["granted_by"]) == (
        "api_keys",
        True,
        "Pilot with their CTO",
        staff.email,
    )
    assert _org_row(database, org)[0] == "free", "the plan stays; only the feature is granted"

    page = staff.get(f"/orgs/{org}").get_data(as_text=True)
    assert "Pilot with their CTO" in page and f"by {staff.email}" in page

    created = customer.post("/org/api-keys", {"target": "CI", "scopes": "admin"}).get_data(as_text=True)
    token = re.search(r'id="new-token">(nsk_[^<]+)<', created).group(1)
    assert customer.api("GET", "/api/v1/organization", token=token).status_code == 200

    assert staff.post(f"/orgs/{org}/overrides/api_keys/remove").status_code == 302
    assert audit_rows()[-1]["action"] == "organization.plan_override_removed"
    assert (
        audit_rows()[-1]["before"]["reason"] == "Pilot with their CTO" and audit_rows()[-1]["after"] is None
    )
    assert customer.api("GET", "/api/v1/organization", token=token).status_code == 403
    assert _org_row(database, org)[1] == {}


def test_a_raised_limit_is_shown_and_an_override_that_raises_nothing_is_refused(
    staff_browser, core_app, audit_rows, database
):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    org = customer.create_org(api_keys=False)
    staff = staff_browser("support")
    before = len(audit_rows())
    for form, message in (
        ({"name": "calls_per_minute", "value": "30", "reason": "x"}, "above the Free plan's 60"),
        ({"name": "calls_per_minute", "value": "lots", "reason": "x"}, "a whole number"),
        ({"name": "calls_per_minute", "value": "600", "reason": " "}, "Say why"),
        ({"name": "platinum", "value": "1", "reason": "x"}, "Not a valid choice"),
    ):
        refused = staff.post(f"/orgs/{org}/overrides", form)
        assert refused.status_code == 422 and message in html.unescape(refused.get_data(as_text=True)), form
    assert len(audit_rows()) == before and _org_row(database, org)[1] == {}

    assert (
        staff.post(
            f"/orgs/{org}/overrides", {"name": "calls_per_minute", "value": "1,200", "reason": "Launch week"}
        ).status_code
        == 302
    )
    assert _org_row(database, org)[1]["calls_per_minute"]["value"] == 1200
    page = staff.get(f"/orgs/{org}").get_data(as_text=True)
    assert "1,200" in page and "Launch week" in page
    assert audit_rows()[-1]["after"]["value"] == 1200


def test_read_only_staff_cannot_grant_overrides(staff_browser, core_app, database):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    org = customer.create_org(api_keys=False)
    staff = staff_browser("read_only")
    assert "Grant an override" not in staff.get(f"/orgs/{org}").get_data(as_text=True)
    refused = staff.post(f"/orgs/{org}/overrides", {"name": "api_keys", "reason": "please"})
    assert refused.status_code == 403 and _org_row(database, org)[1] == {}
