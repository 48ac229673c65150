"""Deleting a workflow: through the API and the builder's page, refused (409, naming each) while
anything still uses it, never a server error, and its finished runs' history gone with it."""

import re
import threading
import time
import uuid

import pytest

from nectar.shared.config import Role
from tests.core.conftest import run_and_wait
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow
from tests.core.test_orgs import _join

RESPOND = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "ok"}]}


@pytest.fixture
def editor(browser):
    browser.sign_up()
    org = browser.create_org()
    return browser, org, _new_key(browser)


def _count(database, sql, *args) -> int:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_an_unused_workflow_is_deleted_with_its_versions_and_finished_runs(editor, database):
    browser, _org, token = editor
    workflow_id = _workflow(browser, token, RESPOND, name="Old")
    browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/versions", token=token, json={"definition": RESPOND}
    )
    assert run_and_wait(browser, token, workflow_id)["status"] == "succeeded"

    deleted = browser.api("DELETE", f"/api/v1/workflows/{workflow_id}", token=token)
    assert deleted.status_code == 204, deleted.get_data(as_text=True)
    assert browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).status_code == 404
    assert browser.api("DELETE", f"/api/v1/workflows/{workflow_id}", token=token).status_code == 404
    for table in ("workflow_versions", "workflow_runs"):
        assert _count(database, f"SELECT count(*) FROM {table} WHERE workflow_id = %s", workflow_id) == 0
    # The name is free again.
    assert _workflow(browser, token, RESPOND, name="Old")


def test_deletion_is_refused_naming_everything_that_still_uses_the_workflow(editor, database):
    browser, _org, token = editor
    target = _workflow(browser, token, RESPOND, name="Target")
    caller = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "http"},
            "steps": [{"id": "c", "type": "call_workflow", "workflow": "Target"}],
        },
        name="Caller",
    )
    endpoint = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "GET", "path": "/target", "workflow_id": target, "auth": "api_key"},
    ).json
    hook_id = _hook(browser, token, target)
    rule = browser.api(
        "POST",
        "/api/v1/alert-rules",
        token=token,
        json={"name": "on errors", "channel": "workflow", "target": target},
    )
    assert rule.status_code == 201, rule.json
    queued = browser.api("POST", f"/api/v1/workflows/{target}/runs", token=token, json={})
    assert queued.status_code == 202
    scheduled = {"trigger": {"type": "schedule", "cron": "0 3 * * *"}, "steps": RESPOND["steps"]}
    saved = browser.api(
        "POST", f"/api/v1/workflows/{target}/versions", token=token, json={"definition": scheduled}
    )
    assert saved.status_code == 201, saved.json

    refused = browser.api("DELETE", f"/api/v1/workflows/{target}", token=token)
    assert refused.status_code == 409
    assert refused.mimetype == "application/problem+json"
    errors = {e["field"]: e["message"] for e in refused.json["errors"]}
    assert set(errors) == {"endpoints", "connections", "schedule", "alert_rules", "callers", "runs"}
    assert "GET /target" in errors["endpoints"]
    assert "hook" in errors["connections"]
    assert "'0 3 * * *'" in errors["schedule"]
    assert "on errors" in errors["alert_rules"]
    assert "Caller" in errors["callers"]
    assert "1 of its runs" in errors["runs"]
    assert "Caller" in refused.json["detail"] and "GET /target" in refused.json["detail"]
    assert _count(database, "SELECT count(*) FROM workflows WHERE id = %s", target) == 1

    # Each taken away, the deletion goes through.
    browser.api("DELETE", f"/api/v1/endpoints/{endpoint['id']}", token=token)
    browser.api("DELETE", f"/api/v1/connections/{hook_id}", token=token)
    browser.api("DELETE", f"/api/v1/alert-rules/{rule.json['id']}", token=token)
    browser.api("POST", f"/api/v1/workflows/{target}/versions", token=token, json={"definition": RESPOND})
    browser.api("POST", f"/api/v1/workflows/{caller}/versions", token=token, json={"definition": RESPOND})
    browser.api("POST", f"/api/v1/runs/{queued.json['id']}/cancel", token=token)
    remaining = browser.api("DELETE", f"/api/v1/workflows/{target}", token=token)
    assert remaining.status_code == 204, remaining.json
    assert _count(database, "SELECT count(*) FROM workflow_schedules WHERE workflow_id = %s", target) == 0


def test_a_key_without_workflows_write_cannot_delete(editor):
    browser, _org, token = editor
    workflow_id = _workflow(browser, token, RESPOND)
    page = browser.post("/org/api-keys", {"target": "reader", "scopes": "read"}).get_data(as_text=True)
    reader = re.search(r'id="new-token">(nsk_[^<]+)<', page).group(1)
    refused = browser.api("DELETE", f"/api/v1/workflows/{workflow_id}", token=reader)
    assert refused.status_code == 403
    assert refused.json["required_scope"] == "workflows:write"


def test_the_builder_page_deletes_after_confirmation_and_flashes_a_refusal(editor):
    browser, _org, token = editor
    workflow_id = _workflow(browser, token, RESPOND, name="Page one")
    page = browser.get(f"/org/workflows/{workflow_id}").get_data(as_text=True)
    assert f'action="/org/workflows/{workflow_id}/delete"' in page and 'name="confirm"' in page

    unconfirmed = browser.post(f"/org/workflows/{workflow_id}/delete", {})
    assert unconfirmed.status_code == 302
    assert "Tick the box" in browser.get(unconfirmed.headers["Location"]).get_data(as_text=True)

    browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "GET", "path": "/page-one", "workflow_id": workflow_id, "auth": "api_key"},
    )
    refused = browser.post(f"/org/workflows/{workflow_id}/delete", {"confirm": "yes"})
    assert refused.status_code == 302
    shown = browser.get(refused.headers["Location"]).get_data(as_text=True)
    assert "still in use" in shown and "GET /page-one" in shown

    other = _workflow(browser, token, RESPOND, name="Page two")
    deleted = browser.post(f"/org/workflows/{other}/delete", {"confirm": "yes"})
    assert deleted.status_code == 302 and deleted.headers["Location"].endswith("/org/workflows")
    listing = browser.get("/org/workflows").get_data(as_text=True)
    assert "was deleted" in listing and f"/org/workflows/{other}" not in listing


def test_a_member_sees_no_delete_button_and_cannot_delete(editor, new_browser, outbox):
    browser, _org, token = editor
    workflow_id = _workflow(browser, token, RESPOND)
    _email, member = _join(browser, new_browser, outbox)
    assert "Delete workflow" not in member.get(f"/org/workflows/{workflow_id}").get_data(as_text=True)
    assert member.post(f"/org/workflows/{workflow_id}/delete", {"confirm": "yes"}).status_code == 403


def test_an_unknown_id_is_not_found(editor):
    browser, _org, token = editor
    assert browser.api("DELETE", f"/api/v1/workflows/{uuid.uuid4()}", token=token).status_code == 404
    assert browser.post(f"/org/workflows/{uuid.uuid4()}/delete", {"confirm": "yes"}).status_code == 404


@pytest.mark.parametrize(
    ("path", "body"), [("runs", {}), ("test-runs", {"definition": RESPOND})], ids=["run", "test-run"]
)
def test_a_run_started_while_the_workflow_is_being_deleted_is_a_404_not_a_server_error(
    editor, database, path, body
):
    """The deletion holds its workflow's versions locked until it commits; a run being queued
    meanwhile (a run or a draft's test run) waits on that lock and then finds its version gone."""
    browser, org, token = editor
    workflow_id = _workflow(browser, token, RESPOND, name="Going")
    answer = _sent_while_deleting(
        database,
        org,
        workflow_id,
        lambda: browser.api("POST", f"/api/v1/workflows/{workflow_id}/{path}", token=token, json=body),
    )
    assert answer.status_code == 404, answer.get_data(as_text=True)
    assert answer.json["status"] == 404


def _sent_while_deleting(database, org, workflow_id, send):
    """`send()`'s answer, sent while a deletion of the workflow holds its versions locked (as
    delete_workflow does) and committed once the request's insert waits on that lock."""
    answers = []
    with database.connect(Role.APP) as deleting:
        deleting.execute("SELECT set_config('nectar.org_id', %s, true)", (str(org),))
        deleting.execute("SELECT id FROM workflow_versions WHERE workflow_id = %s FOR UPDATE", (workflow_id,))
        deleting.execute("DELETE FROM workflows WHERE id = %s", (workflow_id,))
        sending = threading.Thread(target=lambda: answers.append(send()))
        sending.start()
        deadline = time.monotonic() + 30
        while not deleting.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the request's insert never waited on the deletion"
            time.sleep(0.05)
        deleting.commit()
        sending.join(30)
    assert answers, "the request did not end"
    return answers[0]


@pytest.mark.parametrize(
    "spell",
    [str.upper, lambda ref: ref.replace("-", ""), lambda ref: "{" + ref + "}"],
    ids=["upper", "hex", "braces"],
)
def test_a_call_or_a_hook_naming_the_id_in_another_spelling_still_refuses_the_deletion(editor, spell):
    # find_workflow and the webhook read these ids through uuid.UUID(), which takes any of these
    # spellings: the refusal must see them as the same workflow, or the call and the hook break unseen.
    browser, _org, token = editor
    target = _workflow(browser, token, RESPOND, name="Target")
    call = {
        "trigger": {"type": "http"},
        "steps": [{"id": "c", "type": "call_workflow", "workflow": spell(target)}],
    }
    _workflow(browser, token, call, name="Caller")
    _hook(browser, token, target.upper())

    refused = browser.api("DELETE", f"/api/v1/workflows/{target}", token=token)
    assert refused.status_code == 409, refused.get_data(as_text=True)
    errors = {e["field"]: e["message"] for e in refused.json["errors"]}
    assert "Caller" in errors["callers"]
    assert "hook" in errors["connections"]


def test_an_endpoint_call_meeting_its_workflow_being_deleted_is_not_a_server_error(editor, database):
    # A call routed just before its endpoint and workflow are deleted (prune deletes one right after
    # the other; another process hears of it a moment later) queues its run on a version the
    # deletion holds locked, then finds it gone. With an Idempotency-Key the run is recorded in the
    # call's own transaction (without one, the answer is given and the record written after it).
    browser, org, token = editor
    workflow_id = _workflow(browser, token, RESPOND, name="Going")
    endpoint = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "POST", "path": "/going", "workflow_id": workflow_id, "auth": "public"},
    ).json
    assert browser.client.post(endpoint["url"], json={}).status_code == 200  # its route is cached
    answer = _sent_while_deleting(
        database,
        org,
        workflow_id,
        lambda: browser.client.post(endpoint["url"], json={}, headers={"Idempotency-Key": "k-1"}),
    )
    assert answer.status_code == 404, answer.get_data(as_text=True)


def _hook(browser, token, workflow_ref: str) -> str:
    """An incoming-webhook connection named "hook" that starts the workflow `workflow_ref` names: its id."""
    connection = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "name": "hook",
            "service_key": "webhook",
            "config": {"workflow_id": workflow_ref},
            "credentials": {"secret": "s" * 20},
        },
    )
    assert connection.status_code == 201, connection.json
    return connection.json["id"]
