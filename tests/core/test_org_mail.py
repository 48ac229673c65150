"""Mail sent for an organization is not a relay: the plan's quota (per hour and per day, for the
send_email step and invitations alike, holding under concurrency), invitations throttled, sent once
per pending address and only by a confirmed person, every message marked as the organization's
with a working one-click unsubscribe."""

from __future__ import annotations

import dataclasses
import html
import re
import threading
import uuid

import pytest

from nectar.core import plans
from nectar.core.app import create_app
from nectar.core.contract import PLANS
from nectar.core.orgs import service as orgs_service
from nectar.shared import throttle
from nectar.shared.config import Role, Service
from tests.core.conftest import confirm_email, link_in, run_and_wait, unique_email
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow


def _mail_to_each(trigger="http", subject="Your order", body="It ships today."):
    """A workflow that emails every address in the input's `to` list."""
    addresses = "trigger.body.to" if trigger == "http" else "trigger.to"
    return {
        "trigger": {"type": trigger},
        "steps": [
            {
                "id": "each",
                "type": "for_each",
                "items": addresses,
                "steps": [
                    {"id": "mail", "type": "send_email", "to": "{{ item }}", "subject": subject, "body": body}
                ],
            }
        ],
    }


@pytest.fixture
def owner(browser, outbox):
    """A confirmed owner of a new organization (free plan), with an API key."""
    browser.sign_up()
    org = browser.create_org()
    return browser, org, _new_key(browser)


def _quota(monkeypatch, per_hour=1000, per_day=1000):
    free = dataclasses.replace(plans.PLAN_LIMITS["free"], emails_per_hour=per_hour, emails_per_day=per_day)
    monkeypatch.setitem(plans.PLAN_LIMITS, "free", free)


def _mailing_endpoint(browser, token, **workflow):
    endpoint = _endpoint(
        browser,
        token,
        _workflow(browser, token, _mail_to_each(**workflow)),
        path=f"/notify-{uuid.uuid4().hex[:6]}",
    )
    return endpoint["url"]


def _outbox_rows(database, addresses) -> list[dict]:
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT to_address, subject, body_text, headers, category FROM email_outbox "
            "WHERE to_address = ANY(%s) ORDER BY created_at",
            (list(addresses),),
        ).fetchall()
    return [dict(zip(("to", "subject", "body", "headers", "category"), row, strict=True)) for row in rows]


def _day_count(database, org) -> int:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT COALESCE(sum(count), 0) FROM rate_limit_buckets WHERE key = %s",
            (f"core.mail:{org}:86400",),
        ).fetchone()[0]


def test_every_plan_has_mail_quotas():
    assert set(plans.PLAN_LIMITS) == set(PLANS)
    for limits in plans.PLAN_LIMITS.values():
        assert 0 < limits.emails_per_hour <= limits.emails_per_day


# --- the send_email step -----------------------------------------------------------------------------


def test_an_endpoint_call_past_the_daily_quota_fails_its_step_and_records_why(owner, monkeypatch, database):
    browser, org, token = owner
    _quota(monkeypatch, per_day=3)
    url = _mailing_endpoint(browser, token)
    people = [unique_email() for _ in range(5)]

    answer = browser.client.post(url, json={"to": people})
    assert answer.status_code == 500
    assert "this organization's plan allows 3 emails a day" in answer.json["detail"]
    run = browser.api("GET", f"/api/v1/runs/{answer.json['run_id']}", token=token).json
    assert run["status"] == "failed"
    assert run["error"] == (
        "step 'each' (for_each) failed: step 'mail' (send_email) failed: "
        "this organization's plan allows 3 emails a day"
    )
    mail_steps = [(s["status"], s["error"]) for s in run["steps"] if s["step_id"] == "mail"]
    assert mail_steps == [("succeeded", None)] * 3 + [
        ("failed", "this organization's plan allows 3 emails a day")
    ]
    assert [row["to"] for row in _outbox_rows(database, people)] == people[
        :3
    ], "the 3 sent, nothing past them"

    later = unique_email()
    assert browser.client.post(url, json={"to": [later]}).status_code == 500
    assert _outbox_rows(database, [later]) == []
    assert _day_count(database, org) == 3, "refused messages are not counted"


def test_a_background_run_stops_at_the_hourly_burst_limit(owner, monkeypatch, database):
    browser, _org, token = owner
    _quota(monkeypatch, per_hour=2, per_day=100)
    people = [unique_email() for _ in range(4)]
    workflow_id = _workflow(browser, token, _mail_to_each(trigger="manual"))
    run = run_and_wait(browser, token, workflow_id, {"to": people})
    assert run["status"] == "failed"
    assert run["error"].endswith("this organization's plan allows 2 emails an hour")
    assert len(_outbox_rows(database, people)) == 2


def test_concurrent_sends_never_exceed_the_quota(owner, monkeypatch, database, settings_for):
    browser, org, token = owner
    _quota(monkeypatch, per_day=10)
    url = _mailing_endpoint(browser, token)
    people = [[unique_email() for _ in range(3)] for _ in range(8)]  # 24 messages asked for
    statuses = []
    # All eight calls at once, past the organization's usual share of threads: the quota is the subject.
    wide = create_app(settings_for(Service.CORE, ORG_MAX_THREADS="8"))

    def call(addresses):
        statuses.append(wide.test_client().post(url, json={"to": addresses}).status_code)

    threads = [threading.Thread(target=call, args=(addresses,)) for addresses in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 8 and set(statuses) <= {200, 500} and 500 in statuses
    sent = _outbox_rows(database, [a for addresses in people for a in addresses])
    assert len(sent) == 10, "exactly the quota: never more, and no counted message lost"
    assert _day_count(database, org) == 10


def test_a_step_may_mail_one_address_only(owner, database):
    browser, _org, token = owner
    url = _mailing_endpoint(browser, token)
    first, second = unique_email(), unique_email()
    for to in (f"{first}, {second}", f"Someone <{first}>", f"{first}\r\nBcc: {second}"):
        answer = browser.client.post(url, json={"to": [to]})
        assert answer.status_code == 500
        assert "is not one email address" in answer.json["detail"]
    assert _outbox_rows(database, [first, second]) == []


def test_workflow_mail_says_which_organization_sent_it(browser, outbox, database):
    browser.sign_up()
    browser.create_org("Your Bank\r\nSecurity Team\u202e")  # a line break and a right-to-left override
    token = _new_key(browser)
    url = _mailing_endpoint(
        browser, token, subject="Action needed\r\nBcc: victim@example.com", body="Click here."
    )
    person = unique_email()
    assert browser.client.post(url, json={"to": [person]}).status_code == 200

    [message] = _outbox_rows(database, [person])
    assert message["category"] == "workflow"
    assert (
        message["subject"]
        == "[Nectar Studio · “Your Bank Security Team”] Action needed Bcc: victim@example.com"
    )
    body = message["body"]
    assert body.startswith(
        "This message comes from the organization “Your Bank Security Team”, sent by one of its workflows "
        "on Nectar Studio. Nectar Studio did not write it.\n\nClick here.\n\n--\n"
    )
    headers = message["headers"]
    assert headers["X-Nectar-Sender-Name"] == "Your Bank Security Team via Nectar Studio"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(r"<(https?://\S+/mail/unsubscribe/\S+)>", headers["List-Unsubscribe"]).group(1)
    assert unsubscribe in body, "the footer carries the same link"


def _unsubscribe_path(database, person) -> str:
    [message] = _outbox_rows(database, [person])
    return link_in(message["headers"]["List-Unsubscribe"].strip("<>"))


def test_one_click_unsubscribe_stops_that_organizations_mail(owner, new_browser, database):
    browser, org, token = owner
    url = _mailing_endpoint(browser, token)
    person, other = unique_email(), unique_email()
    assert browser.client.post(url, json={"to": [person]}).status_code == 200
    link = _unsubscribe_path(database, person)

    stranger = new_browser()  # the recipient: no account, no cookie
    page = stranger.get(link)
    assert page.status_code == 200 and person in page.get_data(as_text=True)
    # What a mail client sends (RFC 8058): no cookie, no CSRF token.
    done = stranger.client.post(link, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    assert (
        stranger.client.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    )  # again: fine

    answer = browser.client.post(url, json={"to": [person, other]})
    assert answer.status_code == 200
    assert answer.json["output"] == [
        {
            "queued": False,
            "to": person,
            "reason": "the recipient unsubscribed from this organization's email",
        },
        {"queued": True, "to": other},
    ]
    assert [row["to"] for row in _outbox_rows(database, [person, other])] == [person, other]
    assert _day_count(database, org) == 2, "mail not sent is not counted"
    refused = browser.api("POST", "/api/v1/invitations", token=token, json={"email": person})
    assert refused.status_code == 422 and "asked to get no email" in refused.json["detail"]

    # Another organization's mail to the same person is not affected.
    other_owner = new_browser()
    other_owner.sign_up()
    other_owner.create_org()
    other_token = _new_key(other_owner)
    assert other_owner.client.post(_mailing_endpoint(other_owner, other_token), json={"to": [person]}).json[
        "output"
    ] == [{"queued": True, "to": person}]


def test_a_forged_or_altered_unsubscribe_link_changes_nothing(owner, new_browser, database):
    browser, _org, token = owner
    url = _mailing_endpoint(browser, token)
    person = unique_email()
    browser.client.post(url, json={"to": [person]})
    link = _unsubscribe_path(database, person)
    stranger = new_browser()
    assert stranger.client.post(link[:-3] + "abc").status_code == 400
    assert stranger.client.post("/mail/unsubscribe/not-a-token").status_code == 400
    assert browser.client.post(url, json={"to": [person]}).json["output"] == [{"queued": True, "to": person}]


# --- invitations -------------------------------------------------------------------------------------


def _invitations(database, org, email) -> int:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT count(*) FROM invitations WHERE org_id = %s AND email = %s", (org, email)
        ).fetchone()[0]


def _flashes(browser, response) -> str:
    return html.unescape(browser.get(response.headers["Location"]).get_data(as_text=True))


def test_an_unconfirmed_inviter_is_refused_until_they_confirm(browser, outbox, database):
    owner_email = browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    person = unique_email()
    with database.connect(Role.ADMIN) as conn:  # as after staff changed the address
        conn.execute("UPDATE users SET email_verified_at = NULL WHERE email = %s", (owner_email,))

    page = browser.post("/org/invitations", {"email": person, "role": "member"})
    assert f"Confirm the email address {owner_email} first" in _flashes(browser, page)
    api = browser.api("POST", "/api/v1/invitations", token=token, json={"email": person})
    assert api.status_code == 403 and api.mimetype == "application/problem+json"
    assert f"Confirm the email address {owner_email} first" in api.json["detail"]
    assert _invitations(database, org, person) == 0 and _outbox_rows(database, [person]) == []

    confirm_email(browser, outbox, owner_email)
    assert browser.api("POST", "/api/v1/invitations", token=token, json={"email": person}).status_code == 201


def test_inviting_again_returns_the_pending_invitation_without_mailing_again(owner, database):
    browser, org, token = owner
    person = unique_email()
    first = browser.api("POST", "/api/v1/invitations", token=token, json={"email": person})
    assert first.status_code == 201
    again = browser.api(
        "POST", "/api/v1/invitations", token=token, json={"email": person.upper(), "role": "admin"}
    )
    assert again.status_code == 200 and again.json == first.json
    page = browser.post("/org/invitations", {"email": person, "role": "member"})
    assert f"{person} has a pending invitation already" in _flashes(browser, page)
    assert _invitations(database, org, person) == 1 and len(_outbox_rows(database, [person])) == 1

    # Withdrawn, it may be sent again: three times a day to one address, then 429.
    current = first.json["id"]
    for _ in range(2):
        assert browser.api("DELETE", f"/api/v1/invitations/{current}", token=token).status_code == 204
        renewed = browser.api("POST", "/api/v1/invitations", token=token, json={"email": person})
        assert renewed.status_code == 201
        current = renewed.json["id"]
    browser.api("DELETE", f"/api/v1/invitations/{current}", token=token)
    refused = browser.api("POST", "/api/v1/invitations", token=token, json={"email": person})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "3 invitations a day to one address" in refused.json["detail"]
    assert len(_outbox_rows(database, [person])) == 3


def test_concurrent_invitations_to_one_address_send_one(owner, database, core_app):
    browser, org, token = owner
    person = unique_email()
    statuses = []

    def invite():
        answer = core_app.test_client().post(
            "/api/v1/invitations", json={"email": person}, headers={"Authorization": f"Bearer {token}"}
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=invite) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert _invitations(database, org, person) == 1 and len(_outbox_rows(database, [person])) == 1


def test_invitations_are_throttled_per_organization(owner, monkeypatch, database):
    browser, _org, token = owner
    monkeypatch.setattr(orgs_service, "INVITATIONS_PER_ORG", throttle.Limit(events=2, window_seconds=3600))
    people = [unique_email() for _ in range(3)]
    for person in people[:2]:
        assert (
            browser.api("POST", "/api/v1/invitations", token=token, json={"email": person}).status_code == 201
        )
    refused = browser.api("POST", "/api/v1/invitations", token=token, json={"email": people[2]})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert refused.json["detail"] == "An organization may send 2 invitations an hour; try again later."
    page = browser.post("/org/invitations", {"email": people[2], "role": "member"})
    assert "An organization may send 2 invitations an hour" in _flashes(browser, page)
    assert len(_outbox_rows(database, people)) == 2


def test_invitations_count_against_the_plans_mail_quota(owner, monkeypatch, database):
    browser, _org, token = owner
    _quota(monkeypatch, per_day=2)
    assert (
        browser.client.post(_mailing_endpoint(browser, token), json={"to": [unique_email()]}).status_code
        == 200
    )
    invited, refused_person = unique_email(), unique_email()
    assert browser.api("POST", "/api/v1/invitations", token=token, json={"email": invited}).status_code == 201
    refused = browser.api("POST", "/api/v1/invitations", token=token, json={"email": refused_person})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json["detail"] == "this organization's plan allows 2 emails a day"
    page = browser.post("/org/invitations", {"email": refused_person, "role": "member"})
    assert "plan allows 2 emails a day" in _flashes(browser, page)
    assert _outbox_rows(database, [refused_person]) == []


def test_an_invitation_quotes_what_people_chose_and_says_we_did_not_write_it(browser, outbox, database):
    owner_email = browser.sign_up(name="Alice\nfrom IT Support")
    browser.create_org("Reset your password now")
    person = unique_email()
    browser.post("/org/invitations", {"email": person, "role": "member"})
    [message] = _outbox_rows(database, [person])
    assert message["subject"] == "Nectar Studio: an invitation to join “Reset your password now”"
    assert message["body"].startswith(
        f"“Alice from IT Support” ({owner_email}) invited you to join the organization "
        "“Reset your password now” on Nectar Studio, as member.\n"
        "The names in quotation marks were chosen by the people who use Nectar Studio; "
        "Nectar Studio did not write them.\n"
    )
    assert message["headers"]["X-Nectar-Sender-Name"] == "Reset your password now via Nectar Studio"
    assert "/mail/unsubscribe/" in message["headers"]["List-Unsubscribe"]
