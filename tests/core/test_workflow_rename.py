"""PATCH /api/v1/workflows/{id}: a new name and/or description, refused with a problem (never a
server error) for a name in use, an unknown field, or a rename that would break a caller."""

import pytest

from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow

RESPOND = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "ok"}]}


@pytest.fixture
def editor(browser):
    browser.sign_up()
    browser.create_org()
    return browser, _new_key(browser)


def test_name_and_description_change_and_the_versions_stay(editor):
    browser, token = editor
    workflow_id = _workflow(browser, token, RESPOND, name="Before")
    described = browser.api(
        "PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json={"description": "What it does"}
    )
    assert described.status_code == 200, described.json
    assert described.json["name"] == "Before" and described.json["description"] == "What it does"
    renamed = browser.api("PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json={"name": " After "})
    assert renamed.json["name"] == "After" and renamed.json["description"] == "What it does"
    cleared = browser.api(
        "PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json={"description": None}
    )
    assert cleared.json["description"] is None
    got = browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).json
    assert got["name"] == "After" and got["current_version"] == 1 and got["definition"] == RESPOND


def test_a_name_in_use_an_unknown_field_and_a_bad_value_are_problems(editor):
    browser, token = editor
    _workflow(browser, token, RESPOND, name="Taken")
    workflow_id = _workflow(browser, token, RESPOND, name="Mine")
    taken = browser.api("PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json={"name": "Taken"})
    assert taken.status_code == 422 and taken.mimetype == "application/problem+json"
    assert taken.json["errors"] == [{"path": "/name", "message": "A workflow named 'Taken' exists already."}]
    unknown = browser.api("PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json={"definition": {}})
    assert unknown.status_code == 422 and "definition" in unknown.json["detail"]
    for bad in ({"name": None}, {"name": ""}, {"name": "   "}, {"description": 3}):
        answer = browser.api("PATCH", f"/api/v1/workflows/{workflow_id}", token=token, json=bad)
        assert answer.status_code == 422, (bad, answer.json)
    assert browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).json["name"] == "Mine"


def test_a_rename_is_refused_while_a_workflow_calls_it_by_name(editor):
    browser, token = editor
    callee = _workflow(browser, token, RESPOND, name="Callee")
    call = {
        "trigger": {"type": "http"},
        "steps": [{"id": "c", "type": "call_workflow", "workflow": "Callee"}],
    }
    caller = _workflow(browser, token, call, name="Caller")
    refused = browser.api("PATCH", f"/api/v1/workflows/{callee}", token=token, json={"name": "Renamed"})
    assert refused.status_code == 409 and "Caller" in refused.json["detail"]
    # Called by id, it may be renamed.
    by_id = {**call, "steps": [{"id": "c", "type": "call_workflow", "workflow": callee}]}
    browser.api("POST", f"/api/v1/workflows/{caller}/versions", token=token, json={"definition": by_id})
    renamed = browser.api("PATCH", f"/api/v1/workflows/{callee}", token=token, json={"name": "Renamed"})
    assert renamed.status_code == 200, renamed.json
