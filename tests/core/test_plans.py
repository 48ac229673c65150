"""Plans as core enforces them (nectar.core.contract.plans, the definition the pricing page shows):
API keys only where the plan includes them, a downgraded organization's keys stop until it upgrades,
limits answer 429 with the limit and when it resets, and staff's overrides raise both."""

from __future__ import annotations

import dataclasses

import pytest

from nectar.core import plans
from nectar.core.contract.plans import PLANS, Feature
from nectar.core.endpoints import service as endpoint_service
from nectar.shared.config import Role
from tests.core.conftest import set_plan_overrides, unique_email
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow

RESPOND_OK = {
    "trigger": {"type": "http"},
    "steps": [{"id": "answer", "type": "respond", "status": 200, "body": {"ok": True}}],
}
NOT_INCLUDED = "API keys are not included in the Free plan: they come with Starter and above."


def _keys(database, org) -> list[tuple[str, object]]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT name, revoked_at FROM api_keys WHERE org_id = %s", (org,)).fetchall()


def test_a_free_organization_is_told_which_plan_includes_api_keys_and_gets_none(browser, database):
    browser.sign_up()
    org = browser.create_org(api_keys=False)
    page = browser.get("/org/api-keys").get_data(as_text=True)
    assert NOT_INCLUDED in page and "Create a key" not in page
    refused = browser.post("/org/api-keys", {"target": "CI", "scopes": "admin"})
    assert refused.status_code == 422 and NOT_INCLUDED in refused.get_data(as_text=True)
    assert 'id="new-token"' not in refused.get_data(as_text=True)
    assert _keys(database, org) == []


@pytest.mark.parametrize("plan", list(PLANS.values()), ids=list(PLANS))
def test_every_plan_gets_api_keys_exactly_when_its_definition_says(browser, core_app, database, plan):
    browser.sign_up()
    org = browser.create_org(api_keys=False)
    set_plan_overrides(core_app, org, {}, plan=plan.key)
    created = browser.post("/org/api-keys", {"target": "CI", "scopes": "admin"})
    assert ('id="new-token"' in created.get_data(as_text=True)) == plan.offers(Feature.API_KEYS)
    assert len(_keys(database, org)) == (1 if plan.offers(Feature.API_KEYS) else 0)
    # ...and the rate limit core applies is the one the definition (and the pricing page) gives.
    assert endpoint_service.rate_limit(plan.key) == plan.limits.calls_per_minute
    assert plans.limits_of(plan.key) == plan.limits


def test_a_downgraded_organizations_keys_stop_working_until_it_upgrades(browser, core_app, database):
    browser.sign_up()
    org = browser.create_org(api_keys=False)
    set_plan_overrides(core_app, org, {}, plan="starter")
    token = _new_key(browser)
    workflow = _workflow(browser, token, RESPOND_OK)
    url = _endpoint(browser, token, workflow, path="/keyed", auth="api_key")["url"]
    keyed = {"Authorization": f"Bearer {token}"}
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 200
    assert browser.client.post(url, json={}, headers=keyed).status_code == 200

    set_plan_overrides(core_app, org, {}, plan="free")  # what marketing's plan sync does on a lapse
    api = browser.api("GET", "/api/v1/organization", token=token)
    assert api.status_code == 403 and api.mimetype == "application/problem+json"
    assert api.json["detail"].startswith(NOT_INCLUDED) and "works again" in api.json["detail"]
    assert (api.json["feature"], api.json["plan"], api.json["included_in"]) == ("api_keys", "Free", "Starter")
    call = browser.client.post(url, json={}, headers=keyed)
    assert call.status_code == 403 and NOT_INCLUDED in call.json["detail"]
    assert call.json["included_in"] == "Starter"
    # The keys are kept, not revoked: the page lists them and says why they do not work.
    assert [(name, revoked) for name, revoked in _keys(database, org)] == [("CI", None)]
    page = browser.get("/org/api-keys").get_data(as_text=True)
    assert NOT_INCLUDED in page and "Keys listed below do not work meanwhile." in page and ">CI<" in page

    set_plan_overrides(core_app, org, {}, plan="pro")
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 200
    assert browser.client.post(url, json={}, headers=keyed).status_code == 200


def _until_refused(browser, url, most=6):
    """Calls until refused (a minute may end between calls, which restarts the count)."""
    for _ in range(most):
        answer = browser.client.post(url, json={})
        if answer.status_code == 429:
            return answer
        assert answer.status_code == 200, answer.json
    raise AssertionError(f"{most} calls and none refused")


def test_a_staff_override_grants_api_keys_and_raises_the_rate_limit(browser, core_app, monkeypatch):
    monkeypatch.setitem(endpoint_service.PLAN_RATE_LIMITS, "free", 2)
    browser.sign_up()
    org = browser.create_org(api_keys=False)
    granted = {"value": True, "reason": "pilot", "granted_by": "staff@example.com"}
    set_plan_overrides(
        core_app, org, {"api_keys": granted, "calls_per_minute": {"value": 4, "reason": "pilot"}}
    )
    token = _new_key(browser)  # granted on the free plan
    url = _endpoint(browser, token, _workflow(browser, token, RESPOND_OK), path="/raised")["url"]
    assert [browser.client.post(url, json={}).status_code for _ in range(3)] == [
        200
    ] * 3, "above the plan's 2"
    refused = _until_refused(browser, url)
    assert refused.json["limit"] == 4
    assert "allows 4 calls a minute" in refused.json["detail"]
    assert refused.json["resets_at"].endswith(":00Z") and 1 <= int(refused.headers["Retry-After"]) <= 60

    # A lower or malformed override never lowers the plan's limit.
    set_plan_overrides(core_app, org, {"api_keys": granted, "calls_per_minute": {"value": 1}})
    assert _until_refused(browser, url).json["limit"] == 2
    set_plan_overrides(core_app, org, {"api_keys": granted, "calls_per_minute": {"value": "999"}})
    assert _until_refused(browser, url).json["limit"] == 2
    # Taken back, keys stop too.
    set_plan_overrides(core_app, org, {})
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 403


def test_the_mail_limit_says_the_limit_and_when_it_resets_and_an_override_raises_it(
    browser, core_app, monkeypatch
):
    free = dataclasses.replace(plans.PLAN_LIMITS["free"], emails_per_hour=1, emails_per_day=100)
    monkeypatch.setitem(plans.PLAN_LIMITS, "free", free)
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)

    def invite():
        return browser.api("POST", "/api/v1/invitations", token=token, json={"email": unique_email()})

    assert invite().status_code == 201
    refused = invite()
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert refused.json["limit"] == 1 and "allows 1 emails an hour" in refused.json["detail"]
    assert refused.json["resets_at"].endswith("Z") and 0 < int(refused.headers["Retry-After"]) <= 3600

    keys = {"value": True, "reason": "tests use keys"}
    set_plan_overrides(core_app, org, {"api_keys": keys, "emails_per_hour": {"value": 3, "reason": "launch"}})
    assert [invite().status_code for _ in range(3)] == [201, 201, 429]
    assert invite().json["limit"] == 3
