"""Approval steps on the real database: the people with the role are emailed signed links that lead
to a confirm page (GET never decides), the decision is made once by a member with the role (403
without it, 409 the second time), who, when and why are in the step's output, a rejection fails the
step, and inside a loop each iteration asks anew."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from nectar.core import plans
from nectar.core.runs.links import RunLinks, Target
from nectar.shared.config import Role
from tests.core.conftest import drain_jobs, link_in, unique_email
from tests.core.test_api import _new_key
from tests.core.test_orgs import _join
from tests.core.test_run_signals import get_run, start


def approval_document(role="admin", **step):
    return {
        "steps": [
            {
                "id": "ok",
                "type": "approval",
                "title": "Refund {{ trigger.amount }} EUR to {{ trigger.customer }}?",
                "details": "Order {{ trigger.order }}",
                "approver_role": role,
                **step,
            },
            {"id": "refund", "type": "set", "values": {"refunded": "{{ trigger.amount }}"}},
        ]
    }


def approvals_of(database, run_id) -> list[tuple]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT id, step_key, decision, decided_by_email, comment FROM workflow_approvals "
            "WHERE run_id = %s ORDER BY requested_at, step_key",
            (run_id,),
        ).fetchall()


def approval_emails(database, run_id, key="ok") -> dict[str, str]:
    """The approval emails of a run's step, by recipient (their dedupe key names run and step)."""
    prefix = f"approval:{uuid.uuid5(uuid.UUID(run_id), key)}:"
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT to_address, body_text FROM email_outbox WHERE category = 'workflow.approval' "
            "AND starts_with(dedupe_key, %s)",
            (prefix,),
        ).fetchall()
    return dict(rows)


def team(browser, new_browser, outbox):
    """An owner (browser) with an admin and a plain member: (owner email, admin browser, admin email,
    member browser)."""
    owner = browser.sign_up()
    browser.create_org()
    admin_email, admin = _join(browser, new_browser, outbox, "admin")
    _, member = _join(browser, new_browser, outbox, "member")
    return owner, admin, admin_email, member


def decide_on_page(person, approval_id, decision, comment=""):
    return person.post(
        f"/org/approvals/{approval_id}", {"decision": decision, "comment": comment}, follow_redirects=False
    )


def test_the_people_with_the_role_are_emailed_and_an_admin_approves_through_the_link(
    browser, new_browser, outbox, database
):
    owner, admin, admin_email, member = team(browser, new_browser, outbox)
    token, run_id = start(
        browser,
        approval_document(),
        {"amount": 30, "customer": "Ada", "order": "A-1"},
        token=_new_key(browser),
    )
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "waiting", run["error"]
    assert run["waiting_for"]["type"] == "approval"
    assert (
        run["waiting_for"]["title"] == "Refund 30 EUR to Ada?"
        and run["waiting_for"]["approver_role"] == "admin"
    )
    emails = approval_emails(database, run_id)
    assert set(emails) == {owner, admin_email}  # the owner and the admin; not the plain member
    link = link_in(emails[admin_email])
    assert "?decision=approved" in link

    page = admin.get(link)  # GET shows the page and decides nothing
    assert page.status_code == 200 and "Refund 30 EUR to Ada?" in page.get_data(as_text=True)
    assert "Order A-1" in page.get_data(as_text=True)
    assert approvals_of(database, run_id)[0][2] is None
    confirmed = admin.post(link, {"decision": "approved", "comment": "Customer is right"})
    assert confirmed.status_code == 302, confirmed.get_data(as_text=True)
    assert confirmed.headers["Location"].endswith(f"/org/runs/{run_id}")
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded", run["error"]
    decision = run["steps"][0]["output"]
    assert decision["decision"] == "approved" and decision["by"] == admin_email
    assert decision["comment"] == "Customer is right"
    assert datetime.fromisoformat(decision["at"]) > datetime.now(UTC) - timedelta(minutes=5)


def test_a_member_without_the_role_gets_403_and_a_decision_cannot_be_made_twice(
    browser, new_browser, outbox, database
):
    owner, admin, admin_email, member = team(browser, new_browser, outbox)
    token, run_id = start(browser, approval_document(), {"amount": 5}, token=_new_key(browser))
    drain_jobs(browser.app)
    ((approval_id, *_),) = approvals_of(database, run_id)
    link = link_in(approval_emails(database, run_id)[owner])

    assert member.get(link).status_code == 403
    assert member.post(link, {"decision": "approved"}).status_code == 403
    assert decide_on_page(member, approval_id, "approved").status_code == 403
    listing = member.get("/org/approvals").get_data(as_text=True)
    assert "Refund 5 EUR" in listing and "needs admin" in listing  # shown, not decidable
    assert approvals_of(database, run_id)[0][2] is None

    assert decide_on_page(admin, approval_id, "rejected", "Not this time").status_code == 302
    second = decide_on_page(browser, approval_id, "approved")
    assert second.status_code == 409 and "rejected already" in second.get_data(as_text=True)
    assert admin.post(link, {"decision": "approved"}).status_code == 409
    assert approvals_of(database, run_id)[0][2:] == ("rejected", admin_email, "Not this time")
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "failed" and f"rejected by {admin_email}: Not this time" in run["error"]
    assert run["failed_step"] == "ok" and [s["step_id"] for s in run["steps"]] == ["ok"]  # no refund


def test_an_approval_inside_a_loop_asks_for_each_iteration(browser, new_browser, outbox, database):
    browser.sign_up()
    browser.create_org()
    token, run_id = start(
        browser,
        {
            "steps": [
                {
                    "id": "each",
                    "type": "for_each",
                    "items": "trigger.refunds",
                    "steps": [
                        {"id": "ok", "type": "approval", "title": "Refund {{ item }}?", "notify": False}
                    ],
                }
            ]
        },
        {"refunds": [10, 20]},
        token=_new_key(browser),
    )
    drain_jobs(browser.app)
    first = approvals_of(database, run_id)
    assert [row[1] for row in first] == ["each[0]/ok"]
    assert decide_on_page(browser, first[0][0], "approved").status_code == 302
    drain_jobs(browser.app)
    both = approvals_of(database, run_id)
    assert [row[1] for row in both] == ["each[0]/ok", "each[1]/ok"] and both[1][2] is None
    assert get_run(browser, token, run_id)["waiting_for"]["key"] == "each[1]/ok"
    assert "Refund 20?" in browser.get("/org/approvals").get_data(as_text=True)
    assert decide_on_page(browser, both[1][0], "approved", "second").status_code == 302
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert [d["comment"] for d in run["steps"][0]["output"]] == ["", "second"]


def test_forged_or_expired_approval_links_are_refused_and_strangers_get_403(
    browser, new_browser, outbox, database
):
    owner, admin, admin_email, member = team(browser, new_browser, outbox)
    token, run_id = start(browser, approval_document(), {"amount": 1}, token=_new_key(browser))
    drain_jobs(browser.app)
    link = link_in(approval_emails(database, run_id)[owner])
    path, _, query = link.partition("?")
    assert admin.get(path[:-4] + "AAAA?" + query).status_code == 403
    ((approval_id, step_key, *_),) = approvals_of(database, run_id)
    with database.connect(Role.ADMIN) as conn:
        org_id = conn.execute("SELECT org_id FROM workflow_runs WHERE id = %s", (run_id,)).fetchone()[0]
    links = RunLinks(browser.app.secret_key, "")
    target = Target(org_id, uuid.UUID(run_id), step_key, approval_id=approval_id)
    expired = links.approval_url(target, datetime.now(UTC) - timedelta(seconds=1))
    assert admin.get(expired).status_code == 410
    elsewhere = links.approval_url(
        Target(org_id, uuid.uuid4(), step_key, approval_id=approval_id),
        datetime.now(UTC) + timedelta(hours=1),
    )
    assert admin.get(elsewhere).status_code == 403  # bound to its run and step
    stranger = new_browser()
    stranger.sign_up(unique_email())
    stranger.create_org()
    assert stranger.get(link).status_code == 403
    signed_out = new_browser().get(link)
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    assert approvals_of(database, run_id)[0][2] is None


def test_approval_emails_count_against_the_mail_quota_and_past_it_the_step_says_who_was_not_told(
    browser, database, monkeypatch
):
    owner = browser.sign_up()
    browser.create_org()
    free = dataclasses.replace(plans.PLAN_LIMITS["free"], emails_per_hour=1000, emails_per_day=1)
    monkeypatch.setitem(plans.PLAN_LIMITS, "free", free)
    ask = [{"id": "a", "type": "approval", "title": "First?"}], [
        {"id": "b", "type": "approval", "title": "Second?"}
    ]
    token, run_id = start(
        browser,
        {"steps": [{"id": "both", "type": "parallel", "branches": list(ask)}]},
        token=_new_key(browser),
    )
    drain_jobs(browser.app)
    emailed = {key: list(approval_emails(database, run_id, key)) for key in ("a", "b")}
    assert sorted(emailed.values()) == [[], [owner]], emailed  # the day's one email, for either branch
    for approval_id, *_ in approvals_of(database, run_id):  # both still decided in the app
        assert decide_on_page(browser, approval_id, "approved").status_code == 302
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "succeeded", run["error"]
    inputs = {step["step_id"]: step["input"] for step in run["steps"]}
    [told] = [key for key, to in emailed.items() if to]
    [untold] = [key for key, to in emailed.items() if not to]
    assert "notice" not in inputs[told]
    assert (
        inputs[untold]["notice"] == "0 of 1 approvers emailed: this organization's plan allows 1 emails a day"
    )


def test_an_approval_left_waiting_when_a_failure_decided_its_parallel_step_is_closed(
    browser, new_browser, outbox, database
):
    """The failure, handled by on_error, decided the step; the branch that asked for the approval
    never goes on, so no one is asked any more: it leaves the list and a decision is refused."""
    owner, admin, admin_email, member = team(browser, new_browser, outbox)
    document = {
        "steps": [
            {
                "id": "both",
                "type": "parallel",
                "branches": [
                    [{"id": "ok", "type": "approval", "title": "Ship order {{ trigger.order }}?"}],
                    [{"id": "bad", "type": "transform", "expression": "abs('not a number')"}],
                ],
                "on_error": [{"id": "noted", "type": "transform", "expression": "error.step"}],
            },
            {"id": "later", "type": "wait", "seconds": 3600},
        ]
    }
    token, run_id = start(browser, document, {"order": 7}, token=_new_key(browser))
    drain_jobs(browser.app)
    run = get_run(browser, token, run_id)
    assert run["status"] == "waiting" and run["waiting_for"]["step"] == "later", run
    ((approval_id, key, decision, *_),) = approvals_of(database, run_id)
    assert key == "ok" and decision is None
    assert "Ship order 7" not in admin.get("/org/approvals").get_data(as_text=True)
    refused = decide_on_page(admin, approval_id, "approved")
    assert refused.status_code == 410
    assert approvals_of(database, run_id)[0][2] is None
