"""What the builder stands on: validate() names each expression that reads what is not there where
it runs (with its JSON Pointer), drafts are tested without being saved and are not usage, and the
expression preview answers with the server's own engine, scope and limits."""

import time

import pytest

from nectar.core.builder.preview import PREVIEWS_PER_USER
from nectar.core.workflows.definition import scopes, validate
from nectar.shared.config import Role
from tests.core.conftest import drain_jobs
from tests.core.test_api import _new_key
from tests.core.test_orgs import _join


def doc(*steps, trigger="manual"):
    return {"trigger": {"type": trigger}, "steps": list(steps)}


def problems_of(document) -> dict[str, str]:
    return {p.path: p.message for p in validate(document)}


def test_a_reference_to_a_missing_or_later_step_is_a_problem_at_its_field():
    found = problems_of(
        doc(
            {"id": "first", "type": "transform", "expression": "steps.second.total"},
            {"id": "second", "type": "transform", "expression": "steps.first"},
            {
                "id": "answer",
                "type": "respond",
                "body": {"total": "{{ steps.nosuch.field }}", "ok": ["{{ steps.secnd }}"]},
            },
        )
    )
    assert "runs after this one" in found["/steps/0/expression"]
    assert "/steps/1/expression" not in found
    assert found["/steps/2/body/total"] == "there is no step 'nosuch'"
    assert found["/steps/2/body/ok/0"] == "there is no step 'secnd' (did you mean 'second'?)"
    assert (
        "own output"
        in problems_of(doc({"id": "me", "type": "transform", "expression": "steps.me"}))[
            "/steps/0/expression"
        ]
    )


def test_loops_branches_and_error_handlers_have_their_own_scope():
    document = doc(
        {"id": "start", "type": "transform", "expression": "trigger.body.orders"},
        {
            "id": "each",
            "type": "for_each",
            "items": "steps.start",
            "steps": [
                {"id": "price", "type": "transform", "expression": "item.price"},
                {
                    "id": "label",
                    "type": "transform",
                    "expression": "join('-', [to_string(index), to_string(steps.price)])",
                },
                {"id": "inside", "type": "transform", "expression": "steps.each"},
            ],
        },
        {
            "id": "check",
            "type": "condition",
            "if": "length(steps.each) > `0`",
            "then": [{"id": "yes", "type": "transform", "expression": "steps.check"}],
            "else": [{"id": "no", "type": "transform", "expression": "steps.start"}],
        },
        {
            "id": "call",
            "type": "http_request",
            "url": "https://example.com/{{ steps.yes }}",
            "on_error": [
                {
                    "id": "fallback",
                    "type": "set",
                    "values": {"why": "{{ error.message }}", "who": "{{ steps.call }}"},
                }
            ],
        },
        {
            "id": "after",
            "type": "respond",
            "body": {
                "a": "{{ steps.price }}",
                "b": "{{ item }}",
                "c": "{{ error }}",
                "d": "{{ steps.fallback }}",
            },
        },
    )
    found = problems_of(document)
    assert set(found) == {
        "/steps/1/steps/2/expression",  # the loop's own output, inside it
        "/steps/2/then/0/expression",  # the condition's own output, inside its branch
        "/steps/4/body/a",  # a step inside the loop, after it
        "/steps/4/body/b",  # item outside a loop
        "/steps/4/body/c",  # error outside on_error
    }, found
    assert "holds this one" in found["/steps/1/steps/2/expression"]
    assert "inside a loop" in found["/steps/4/body/a"]
    assert "for_each" in found["/steps/4/body/b"] and "on_error" in found["/steps/4/body/c"]
    # The scope the builder's completion offers at each step.
    found_scopes = scopes(document["steps"])
    assert (
        found_scopes["/steps/1/steps/1"].steps == ("start", "price") and found_scopes["/steps/1/steps/1"].loop
    )
    assert found_scopes["/steps/3/on_error/0"].error and "call" in found_scopes["/steps/3/on_error/0"].steps
    assert found_scopes["/steps/4"].steps == ("start", "each", "yes", "no", "check", "fallback", "call")


def test_nested_step_lists_are_found_from_the_schema_and_expressions_must_parse():
    found = problems_of(
        doc(
            {
                "id": "a",
                "type": "transform",
                "expression": "trigger.body.[",
            },
            {
                "id": "b",
                "type": "condition",
                "if": "`true`",
                "then": [{"id": "a", "type": "set", "values": {"x": "{{ steps.zz }}"}}],
            },
        )
    )
    assert found["/steps/0/expression"].startswith("not a valid expression")
    assert "used twice" in found["/steps/1/then/0/id"]
    assert found["/steps/1/then/0/values/x"] == "there is no step 'zz'"


def test_code_is_not_read_as_templates_and_names_inside_values_are_not_references():
    assert (
        problems_of(
            doc(
                {"id": "a", "type": "code", "source": "const t = `{{ steps.nosuch }}`; return t"},
                {"id": "b", "type": "transform", "expression": "trigger.body.items[?item == `1`].steps"},
                {"id": "c", "type": "transform", "expression": "sort_by(trigger.body.items, &index)"},
            )
        )
        == {}
    )


@pytest.fixture
def editor(browser):
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    created = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": "Orders", "definition": doc({"id": "saved", "type": "transform", "expression": "`1`"})},
    )
    assert created.status_code == 201, created.json
    return browser, token, org, created.json["id"]


def test_a_draft_is_tested_without_saving_and_is_not_usage(editor, database):
    browser, token, org, workflow_id = editor
    draft = doc(
        {"id": "total", "type": "transform", "expression": "sum(trigger.body.prices)"},
        {"id": "double", "type": "transform", "expression": "sum([steps.total, steps.total])"},
    )
    started = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/test-runs",
        token=token,
        json={"definition": draft, "input": {"body": {"prices": [1, 2]}}},
    )
    assert started.status_code == 202, started.json
    assert started.json["test"] is True and started.json["trigger"] == "test"
    drain_jobs(browser.app)
    run = browser.api("GET", f"/api/v1/runs/{started.json['id']}", token=token).json
    assert run["status"] == "succeeded" and run["output"]["output"] == 6
    assert [s["step_id"] for s in run["steps"]] == ["total", "double"]
    workflow = browser.api("GET", f"/api/v1/workflows/{workflow_id}", token=token).json
    assert workflow["current_version"] == 1 and workflow["definition"]["steps"][0]["id"] == "saved"
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 200
    with database.connect(Role.ADMIN) as conn:
        kept = conn.execute("SELECT definition FROM workflow_runs WHERE id = %s", (run["id"],)).fetchone()[0]
    assert kept == draft
    # The dashboard counts no test run as usage; a manual run of the saved version counts.
    from nectar.core.dashboard import org_counts
    from nectar.shared.database import db, scope_session

    with browser.app.app_context():
        scope_session(db.session, org_id=org)
        assert org_counts(db.session).runs_this_week == 0
        db.session.rollback()
    # Re-running a test run tests the same draft again.
    again = browser.api("POST", f"/api/v1/runs/{run['id']}/rerun", token=token, json={})
    assert again.status_code == 202 and again.json["test"] is True
    drain_jobs(browser.app)
    assert browser.api("GET", f"/api/v1/runs/{again.json['id']}", token=token).json["output"]["output"] == 6


def test_an_invalid_draft_is_refused_with_paths_and_nothing_runs(editor):
    browser, token, _org, workflow_id = editor
    refused = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/test-runs",
        token=token,
        json={
            "definition": doc({"id": "a", "type": "transform", "expression": "{{ steps.nosuch.field }}"}),
            "input": {},
        },
    )
    assert refused.status_code == 422
    assert refused.json["errors"][0]["path"] == "/steps/0/expression"
    bad_input = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/test-runs",
        token=token,
        json={"definition": doc(), "input": []},
    )
    assert bad_input.status_code == 422
    validated = browser.api(
        "POST",
        "/api/v1/workflows/validate",
        token=token,
        json={"definition": doc({"id": "r", "type": "respond", "body": "{{ steps.nosuch.field }}"})},
    ).json
    assert validated == {
        "valid": False,
        "errors": [{"path": "/steps/0/body", "message": "there is no step 'nosuch'"}],
    }
    assert browser.api("GET", f"/api/v1/runs?workflow_id={workflow_id}", token=token).json["items"] == []


def test_the_preview_evaluates_with_the_last_runs_data_in_scope(editor):
    browser, token, _org, workflow_id = editor
    draft = doc(
        {"id": "fetch", "type": "transform", "expression": "trigger.body"},
        {
            "id": "each",
            "type": "for_each",
            "items": "steps.fetch.orders",
            "steps": [{"id": "line", "type": "transform", "expression": "item.qty"}],
        },
    )
    started = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/test-runs",
        token=token,
        json={"definition": draft, "input": {"body": {"orders": [{"qty": 3}, {"qty": 5}]}}},
    )
    drain_jobs(browser.app)

    def preview(text, pointer, bare=True, **extra):
        response = browser.api(
            "POST",
            f"/api/v1/workflows/{workflow_id}/preview",
            token=token,
            json={"definition": draft, "pointer": pointer, "text": text, "bare": bare, **extra},
        )
        assert response.status_code == 200, response.json
        return response.json

    assert preview("length(steps.fetch.orders)", "/steps/1/items") == {
        "value": 2,
        "run_id": started.json["id"],
    }
    inside = preview("item.qty", "/steps/1/steps/0/expression", with_context=True)
    assert inside["value"] == 3 and inside["context"]["index"] == 0
    assert set(inside["context"]["steps"]) == {"fetch"}, "only earlier steps are in scope"
    assert (
        preview("Total: {{ sum(steps.fetch.orders[*].qty) }}", "/steps/1/name", bare=False)["value"]
        == "Total: 8"
    )
    broken = preview("steps.fetch.[", "/steps/1/items")
    assert broken["position"] == 13 and "value" not in broken
    in_template = preview("a {{ steps. }}", "/steps/1/name", bare=False)
    assert in_template["position"] == 12
    runtime = preview("abs('x')", "/steps/1/items")
    assert "abs" in runtime["error"]
    # A draft mid-edit that is not a valid document still previews.
    loose = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/preview",
        token=token,
        json={
            "definition": {"steps": [7, {"id": 3}]},
            "pointer": "/steps/9",
            "text": "trigger.body.orders[0]",
            "bare": True,
        },
    )
    assert loose.status_code == 200 and loose.json["value"] == {"qty": 3}
    assert (
        browser.api(
            "POST", f"/api/v1/workflows/{workflow_id}/preview", token=token, json={"text": 5}
        ).status_code
        == 422
    )


def test_previews_are_rate_limited_per_user(editor, database):
    browser, token, _org, workflow_id = editor
    key_id = browser.api("GET", "/api/v1/api-keys", token=token).json["items"][0]["id"]
    window = PREVIEWS_PER_USER.window_start(time.time())
    with database.connect(Role.ADMIN) as conn:
        for start in (window, window + PREVIEWS_PER_USER.window_seconds):  # either side of a boundary
            conn.execute(
                "INSERT INTO rate_limit_buckets (key, window_start, count) VALUES (%s, %s, %s)",
                (f"core.preview:{key_id}", start, PREVIEWS_PER_USER.events),
            )
        conn.commit()
    refused = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/preview",
        token=token,
        json={"text": "`1`", "bare": True, "pointer": ""},
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_hostile_drafts_cost_no_more_than_a_full_one_and_never_a_500(editor):
    browser, token, _org, workflow_id = editor
    # 100 steps each holding 200 in on_error: schema-valid lists, 20,100 steps in all.
    nested = doc(
        *[
            {
                "id": f"s{i}",
                "type": "transform",
                "expression": "`1`",
                "on_error": [
                    {"id": f"s{i}_{j}", "type": "transform", "expression": "steps.zz"} for j in range(200)
                ],
            }
            for i in range(100)
        ]
    )
    assert problems_of(nested) == {"/steps": "at most 200 steps in one workflow"}
    flat = {"steps": [{"id": "a"}] * 50_000}  # not even steps: the preview reads drafts as they are
    for body in (
        {"definition": nested, "pointer": "/steps/99/on_error/199/expression", "text": "steps.s1"},
        {"definition": flat, "pointer": "/steps/0", "text": "`1`"},
        {"definition": doc(), "pointer": "", "text": "!" * 600 + "a", "bare": True},
        {
            "definition": {"steps": [{"id": "x", "type": f"t{n}"} for n in range(5000)]},
            "pointer": "",
            "text": "1",
        },
    ):
        answer = browser.api("POST", f"/api/v1/workflows/{workflow_id}/preview", token=token, json=body)
        assert answer.status_code < 500, answer.get_data(as_text=True)
    nests = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/preview",
        token=token,
        json={"definition": doc(), "pointer": "", "text": "(" * 600 + "a" + ")" * 600, "bare": True},
    )
    assert nests.status_code == 200 and "nests too deeply" in nests.json["error"]


@pytest.mark.parametrize("expression", ["!" * 600 + "a", "(" * 600 + "a" + ")" * 600])
def test_an_expression_nested_past_the_parser_is_a_problem_at_its_field(editor, expression):
    browser, token, _org, _workflow_id = editor
    document = doc({"id": "t", "type": "transform", "expression": expression})
    assert problems_of(document) == {"/steps/0/expression": "the expression nests too deeply"}
    answer = browser.api("POST", "/api/v1/workflows/validate", token=token, json={"definition": document})
    assert answer.status_code == 200 and answer.json["valid"] is False


def test_error_handlers_read_what_the_steps_branches_left():
    fetch = {"id": "fetch", "type": "transform", "expression": "`1`"}
    report = {"id": "report", "type": "transform", "expression": "steps.fetch"}
    parallel = {"id": "p", "type": "parallel", "branches": [[fetch]], "on_error": [report]}
    condition = {"id": "c", "type": "condition", "if": "`true`", "then": [fetch], "on_error": [report]}
    assert problems_of(doc(parallel)) == {}
    assert problems_of(doc(condition)) == {}


def test_a_tests_calls_are_tests_too_and_only_editors_run_a_draft_again(editor, new_browser, outbox):
    browser, token, _org, workflow_id = editor
    child = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={"name": "Child", "definition": doc({"id": "one", "type": "transform", "expression": "`1`"})},
    )
    draft = doc({"id": "call", "type": "call_workflow", "workflow": "Child"})
    started = browser.api(
        "POST",
        f"/api/v1/workflows/{workflow_id}/test-runs",
        token=token,
        json={"definition": draft, "input": {}},
    )
    for _ in range(3):  # the test, its call, the test woken by its call's end
        drain_jobs(browser.app)
    runs = browser.api("GET", f"/api/v1/runs?workflow_id={child.json['id']}", token=token).json["items"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("test", "succeeded")]
    assert runs[0]["parent_run_id"] == started.json["id"]

    _email, member = _join(browser, new_browser, outbox, "member")
    for path in (f"/api/v1/runs/{started.json['id']}/rerun", f"/api/v1/runs/{started.json['id']}/retry"):
        refused = member.api("POST", path, json={}, headers={"X-CSRFToken": member.csrf_token()})
        assert refused.status_code == 403, refused.get_data(as_text=True)
    assert "Only an admin or owner" in refused.json["detail"]
