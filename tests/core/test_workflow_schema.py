"""The workflow JSON Schema is public at a stable address that is its own `$id`: an editor fetches it
without signing in (from any origin), caches it, and validates workflow files with it the way the
API does."""

from __future__ import annotations

import jsonschema

from tests.core.test_api import _new_key


def test_anyone_fetches_the_schema_at_its_own_id_and_may_cache_it(core_app):
    client = core_app.test_client()
    answer = client.get("/schemas/workflow-v1.json")
    assert answer.status_code == 200 and answer.mimetype == "application/schema+json"
    schema = answer.get_json(force=True)
    public_url = core_app.config["NECTAR_SETTINGS"].public_url
    assert schema["$id"] == f"{public_url}/schemas/workflow-v1.json"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "public" in answer.headers["Cache-Control"] and answer.headers["ETag"]
    again = client.get("/schemas/workflow-v1.json", headers={"If-None-Match": answer.headers["ETag"]})
    assert again.status_code == 304 and not again.data


def test_the_schema_validates_workflow_files_as_the_api_does(core_app, browser):
    schema = core_app.test_client().get("/schemas/workflow-v1.json").get_json(force=True)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "total", "type": "transform", "expression": "sum(trigger.items[].price)"}],
    }
    bad = {"trigger": {"type": "manual"}, "steps": [{"id": "total", "type": "transform"}], "extra": 1}
    assert list(validator.iter_errors(good)) == []
    assert {error.validator for error in validator.iter_errors(bad)} >= {"additionalProperties"}
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    checked = browser.api("POST", "/api/v1/workflows/validate", token=token, json={"definition": bad}).json
    assert checked["valid"] is False
    same = browser.api("GET", "/api/v1/workflow-schema.json", token=token).json
    assert same == schema
