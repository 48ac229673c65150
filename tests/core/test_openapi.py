"""The OpenAPI documents of /api/v1 and /internal/v1, built from the declarations that validate
requests: complete (every route), with scopes, schemas and problems; unknown fields refused."""

from __future__ import annotations

import re

import pytest

from nectar.core.api.declare import declared_operations
from nectar.core.api.views import required_scope
from nectar.shared.config import Role
from tests.core.conftest import SERVICE_TOKEN
from tests.core.test_api_key_scopes import _key, _workflow

OPERATION_ID = re.compile(r"^[A-Za-z0-9_]+$")


@pytest.fixture()
def admin(browser):
    browser.sign_up()
    browser.create_org()
    return browser, _key(browser, "admin")


def _documented(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, operations in document["paths"].items() for method in operations}


@pytest.mark.parametrize(
    "prefix, blueprint, address",
    [
        ("/api/v1", "api", "/api/v1/openapi.json"),
        ("/internal/v1", "service_api", "/internal/v1/openapi.json"),
    ],
)
def test_every_route_is_in_its_document_with_schemas_and_problems(
    core_app, browser, prefix, blueprint, address
):
    answer = browser.get(address)  # no credential: the shape of the API is public
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    document = answer.json
    assert document["openapi"] == "3.1.0" and document["servers"] == [{"url": prefix}]
    routes = {
        (path, method) for path, method, _view, _rule in declared_operations(core_app, prefix, blueprint)
    }
    missing = routes - _documented(document)
    assert (
        routes and not missing
    ), f"routes the document lacks (declare them with @operation): {sorted(missing)}"
    schemas = document["components"]["schemas"]
    assert {"type", "title", "status"} <= set(schemas["ProblemDocument"]["required"])
    ids = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert OPERATION_ID.match(operation["operationId"]) and operation["operationId"] not in ids
            ids.add(operation["operationId"])
            public = path in ("/openapi.json", "/docs")
            assert operation["summary"] and bool(operation["security"]) is not public, (path, method)
            problem = operation["responses"]["422"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/ProblemDocument"}
            for reference in re.findall(
                r'"\$ref": "#/components/schemas/([^"]+)"', str(operation).replace("'", '"')
            ):
                assert reference in schemas, (path, method, reference)


def test_each_operation_shows_its_scope_and_bodies_their_schema_and_example(core_app, browser):
    document = browser.get("/api/v1/openapi.json").json
    for path, method, view, _rule in declared_operations(core_app, "/api/v1", "api"):
        operation = document["paths"][path][method]
        if path in ("/openapi.json", "/docs"):
            continue
        scope = str(required_scope(view, method.upper()))
        assert operation["x-required-scope"] == scope and operation["security"][0] == {"apiKey": [scope]}
    runs = document["paths"]["/workflows/{workflow_id}/runs"]["post"]
    body = runs["requestBody"]["content"]["application/json"]
    assert body["example"] == {"input": {"name": "Ada"}}
    run_request = document["components"]["schemas"]["RunRequest"]
    assert run_request["additionalProperties"] is False and set(run_request["properties"]) == {
        "input",
        "version",
    }
    assert runs["parameters"] == [
        {
            "name": "workflow_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
    ]
    assert "links" in runs["responses"]["202"]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_unknown_fields_of_a_body_are_refused_and_named(admin):
    browser, token = admin
    runs = f"/api/v1/workflows/{_workflow(browser, token)}/runs"
    guessed = browser.api("POST", runs, token=token, json={"input": {}, "inputs": {"a": 1}, "wait": True})
    assert guessed.status_code == 422 and guessed.mimetype == "application/problem+json", guessed.json
    assert guessed.json["detail"] == "Unknown fields: inputs, wait."
    assert {e["path"] for e in guessed.json["errors"]} == {"/inputs", "/wait"}
    assert "input, version" in guessed.json["errors"][0]["message"]
    assert browser.api("GET", "/api/v1/runs", token=token).json["items"] == [], "nothing was started"
    wrong_type = browser.api("POST", runs, token=token, json={"input": [1]})
    assert wrong_type.status_code == 422 and wrong_type.json["errors"][0]["path"] == "/input"
    assert browser.api("POST", runs, token=token, json={"input": {"a": 1}}).status_code == 202
    bad_query = browser.api("GET", "/api/v1/runs?limit=1000", token=token)
    assert bad_query.status_code == 400 and bad_query.json["errors"][0]["field"] == "limit"


def test_the_service_contract_refuses_unknown_fields_too(browser, database):
    answer = browser.api(
        "POST",
        "/internal/v1/accounts",
        token=SERVICE_TOKEN,
        json={"request_id": "r-unknown", "email": "a@example.com", "plan": "free", "coupon": "FREE"},
    )
    assert answer.status_code == 422 and answer.json["errors"][0]["path"] == "/coupon", answer.json
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = 'a@example.com'").fetchone()[0] == 0


def test_the_interactive_documentation_is_served_from_here_under_the_csp(browser):
    page = browser.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.get_data(as_text=True)
    assert "<script>" not in html, "no inline script"
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert browser.get(asset).status_code == 200, asset
    assert 'data-spec="/api/v1/openapi.json"' in html
