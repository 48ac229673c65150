"""OpenAPI import: a third-party OpenAPI 3 document becomes a connector whose operations
http_request steps call by operationId, checked against the document when the workflow is saved and
before each call, signed with a connection's credentials, through the outbound guard.

The document is a real published one: data/petstore.yaml is the OpenAPI Initiative's Petstore
example as the PyPI package pantsbuild.pants 2.17.1 ships it
(pants/backend/openapi/sample/petstore_spec.yaml; Pants is Apache-2.0, the document says MIT),
copied unchanged. Where a test needs a request body and a security scheme, which that document
lacks, it adds them to the parsed document the way later Petstore versions have them.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest
import yaml

from tests.core.conftest import Browser
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.serving import served

PETSTORE = (Path(__file__).parent / "data" / "petstore.yaml").read_text()
API_KEY = "petstore-key-0123456789"


def _with_key_and_body(document_text: str) -> dict:
    """The Petstore with an API key in a header and createPets taking a Pet."""
    document = yaml.safe_load(document_text)
    document["components"]["securitySchemes"] = {
        "api_key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    }
    document["security"] = [{"api_key": []}]
    document["paths"]["/pets"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}},
    }
    return document


class Upstream:
    """The Petstore's server on loopback: answers its operations and keeps each request."""

    def __init__(self):
        self.requests: list[dict] = []

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        seen = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "raw_path": environ.get("REQUEST_URI", "").split("?")[0],
            "query": parse_qs(environ.get("QUERY_STRING", "")),
            "body": json.loads(body) if body else None,
            "api_key": environ.get("HTTP_X_API_KEY"),
            "authorization": environ.get("HTTP_AUTHORIZATION"),
        }
        self.requests.append(seen)
        if seen["path"].startswith("/v1/pets/"):
            answer = {"id": 7, "name": "Rex", "requested": seen["raw_path"].rsplit("/", 1)[1]}
        else:
            answer = [{"id": 7, "name": "Rex"}]
        payload = json.dumps(answer).encode()
        status = "201 Created" if seen["method"] == "POST" else "200 OK"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


@pytest.fixture(scope="module")
def upstream():
    recorder = Upstream()
    with served(recorder) as url:
        recorder.url = url
        yield recorder


@pytest.fixture
def owner(local_outbound_app):
    browser = Browser(local_outbound_app)
    browser.sign_up()
    browser.create_org()
    return browser, _new_key(browser)


def _import(browser, token, document, *, name="petstore", base_url=None, status=201):
    body = {"name": name, "document": document}
    if base_url is not None:
        body["base_url"] = base_url
    answer = browser.api("POST", "/api/v1/connectors", token=token, json=body)
    assert answer.status_code == status, answer.json
    return answer.json


def _connection(browser, token, connector="petstore", name="petstore-key"):
    created = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "openapi",
            "name": name,
            "config": {"connector": connector},
            "credentials": {"api_key": API_KEY},
        },
    )
    assert created.status_code == 201, created.json
    return created.json


def _save(browser, token, steps, status=201):
    answer = browser.api(
        "POST",
        "/api/v1/workflows",
        token=token,
        json={
            "name": f"wf-{uuid.uuid4().hex[:6]}",
            "definition": {"trigger": {"type": "http"}, "steps": steps},
        },
    )
    assert answer.status_code == status, answer.json
    return answer.json


ADOPT = [
    {
        "id": "made",
        "type": "http_request",
        "connection": "petstore-key",
        "operation": "createPets",
        "body": {"id": 7, "name": "{{ trigger.body.name }}", "tag": "cat"},
    },
    {
        "id": "shown",
        "type": "http_request",
        "connector": "petstore",
        "connection": "petstore-key",
        "operation": "showPetById",
        "path_params": {"petId": "{{ trigger.query.pet }}"},
    },
    {
        "id": "listed",
        "type": "http_request",
        "connection": "petstore-key",
        "operation": "listPets",
        "query": {"limit": "{{ trigger.query.limit }}"},
    },
    {
        "id": "r",
        "type": "respond",
        "body": {"shown": "{{ steps.shown.body }}", "listed": "{{ steps.listed.body }}"},
    },
]


def test_an_imported_operation_is_called_with_the_right_request_and_credentials(owner, upstream):
    browser, token = owner
    imported = _import(
        browser, token, json.dumps(_with_key_and_body(PETSTORE)), base_url=upstream.url + "/v1"
    )
    assert {(o["operation_id"], o["method"], o["path"]) for o in imported["operations"]} == {
        ("listPets", "GET", "/pets"),
        ("createPets", "POST", "/pets"),
        ("showPetById", "GET", "/pets/{petId}"),
    }
    listed = browser.api("GET", "/api/v1/connectors", token=token).json["items"]
    assert [c["name"] for c in listed] == ["petstore"]
    connection = _connection(browser, token)
    assert API_KEY not in json.dumps(connection)
    tested = browser.api("POST", f"/api/v1/connections/{connection['id']}/test", token=token).json
    assert tested["ok"] is True, tested
    workflow_id = _workflow(browser, token, {"trigger": {"type": "http"}, "steps": ADOPT})
    endpoint = _endpoint(browser, token, workflow_id, path="/adopt")
    upstream.requests.clear()
    answer = browser.client.post(endpoint["url"] + "?limit=3&pet=a%20b%2F7", json={"name": "Rex"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["shown"]["requested"] == "a%20b%2F7"
    made, shown, listed_request = upstream.requests
    assert made == {
        "method": "POST",
        "path": "/v1/pets",
        "raw_path": "/v1/pets",
        "query": {},
        "body": {"id": 7, "name": "Rex", "tag": "cat"},
        "api_key": API_KEY,
        "authorization": None,
    }
    assert (shown["method"], shown["body"], shown["api_key"]) == ("GET", None, API_KEY)
    assert (listed_request["path"], listed_request["query"]) == ("/v1/pets", {"limit": ["3"]})
    runs = browser.api("GET", "/api/v1/runs", token=token).json["items"]
    run = browser.api("GET", f"/api/v1/runs/{runs[0]['id']}", token=token).json
    assert [step["input"]["url"] for step in run["steps"][:3]] == [
        f"{upstream.url}/v1/pets",
        f"{upstream.url}/v1/pets/a%20b%2F7",
        f"{upstream.url}/v1/pets",
    ]
    assert API_KEY not in json.dumps(run), "the credential stays out of the run record"


def test_the_published_document_imports_as_it_is_in_yaml(owner):
    browser, token = owner
    imported = _import(browser, token, PETSTORE, name="as-published")
    assert imported["base_url"] == "http://petstore.swagger.io/v1"
    assert imported["title"] == "Swagger Petstore"


def test_a_body_that_breaks_the_schema_is_refused_at_save_and_at_run(owner, upstream):
    browser, token = owner
    _import(browser, token, json.dumps(_with_key_and_body(PETSTORE)), base_url=upstream.url + "/v1")
    _connection(browser, token)
    refused = _save(
        browser,
        token,
        [
            {
                "id": "bad",
                "type": "http_request",
                "connection": "petstore-key",
                "operation": "createPets",
                "body": {"id": "seven"},
            },
        ],
        status=422,
    )
    problems = {e["path"]: e["message"] for e in refused["errors"]}
    assert "'name' is a required property" in problems["/steps/0/body"]
    assert "'seven' is not of type 'integer'" in problems["/steps/0/body/id"]
    # Templated: only its shape is known when saved; the call checks the rendered value.
    steps = [
        {
            "id": "later",
            "type": "http_request",
            "connection": "petstore-key",
            "operation": "createPets",
            "body": {"id": "{{ trigger.body.id }}", "name": "Rex"},
        },
        {"id": "r", "type": "respond", "body": "unreachable"},
    ]
    endpoint = _endpoint(browser, token, _save(browser, token, steps)["id"], path="/later")
    upstream.requests.clear()
    answer = browser.client.post(endpoint["url"], json={"id": "not a number"})
    assert answer.status_code == 500
    assert "body/id: 'not a number' is not of type 'integer'" in answer.json["detail"], answer.json
    run = browser.api("GET", f"/api/v1/runs/{answer.json['run_id']}", token=token).json
    assert run["status"] == "failed" and run["steps"][0]["step_id"] == "later"
    assert upstream.requests == [], "nothing is sent"


MISNAMED = [
    {"id": "a", "type": "http_request", "connector": "petstore", "operation": "showPet"},
    {
        "id": "b",
        "type": "http_request",
        "connector": "petstore",
        "operation": "listPets",
        "query": {"limt": 3},
    },
    {"id": "c", "type": "http_request", "connector": "petstore", "operation": "showPetById"},
    {"id": "d", "type": "http_request", "connector": "nope", "operation": "listPets"},
    {
        "id": "e",
        "type": "http_request",
        "connector": "petstore",
        "operation": "listPets",
        "query": {"limit": "many"},
    },
]


def test_unknown_operations_parameters_and_connectors_are_named_at_save(owner, upstream):
    browser, token = owner
    _import(browser, token, PETSTORE, base_url=upstream.url + "/v1")
    mixed = {"id": "e", "type": "http_request", "operation": "listPets", "url": "http://x.example/"}
    refused = _save(browser, token, [mixed], status=422)
    problems = {e["path"]: e["message"] for e in refused["errors"]}
    assert problems["/steps/0/url"].startswith("the operation decides the url"), problems
    assert "name the connector" in problems["/steps/0/operation"]
    refused = _save(browser, token, MISNAMED, status=422)
    problems = {e["path"]: e["message"] for e in refused["errors"]}
    assert "no operation 'showPet' (did you mean 'showPetById'?)" in problems["/steps/0/operation"]
    assert "no query parameter 'limt' (it has: limit)" in problems["/steps/1/query/limt"]
    assert "'petId' is required" in problems["/steps/2/path_params"]
    assert "no imported connector 'nope'" in problems["/steps/3/connector"]
    assert "'many' is not of type 'integer'" in problems["/steps/4/query/limit"]


def test_a_base_url_at_a_private_address_is_refused_by_the_guard(owner):
    browser, token = owner
    _import(browser, token, PETSTORE, name="internal", base_url="http://10.0.0.5/v1")
    connection = _connection(browser, token, connector="internal", name="internal-key")
    tested = browser.api("POST", f"/api/v1/connections/{connection['id']}/test", token=token).json
    assert tested["ok"] is False and "private or internal address" in tested["message"]
    steps = [
        {"id": "list", "type": "http_request", "connector": "internal", "operation": "listPets"},
        {"id": "r", "type": "respond", "body": "unreachable"},
    ]
    endpoint = _endpoint(browser, token, _save(browser, token, steps)["id"], path="/internal")
    answer = browser.client.post(endpoint["url"], json={})
    assert answer.status_code == 500
    assert "10.0.0.5, a private or internal address; refused" in answer.json["detail"], answer.json


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ({"swagger": "2.0", "info": {"title": "x"}, "paths": {}}, "/swagger", "expected OpenAPI 3.x"),
        ({"openapi": "2.0", "info": {"title": "x"}, "paths": {}}, "/openapi", "expected 3.x, got '2.0'"),
        ("openapi: [unclosed", "/", "neither JSON nor YAML"),
        (
            {
                "openapi": "3.0.3",
                "info": {"title": "x"},
                "servers": [{"url": "https://a.example"}],
                "paths": {"/pets": {"get": {"responses": {}}}},
            },
            "/paths/~1pets/get",
            "operationId missing",
        ),
        (
            {
                "openapi": "3.0.3",
                "info": {"title": "x"},
                "servers": [{"url": "https://a.example"}],
                "paths": {
                    "/pets": {
                        "get": {"operationId": "p", "parameters": [{"$ref": "https://evil.example/p.json"}]}
                    }
                },
            },
            "/paths/~1pets/get/parameters/0/$ref",
            "only references inside the document",
        ),
        (
            {
                "openapi": "3.0.3",
                "info": {"title": "x"},
                "servers": [{"url": "https://a.example"}],
                "components": {"parameters": {"loop": {"$ref": "#/components/parameters/loop"}}},
                "paths": {
                    "/p": {
                        "get": {"operationId": "p", "parameters": [{"$ref": "#/components/parameters/loop"}]}
                    }
                },
            },
            "/components/parameters/loop/$ref",
            "a chain of more than 16 references",
        ),
        ("a: " + "[" * 80 + "]" * 80, "/a/0/0/0", "nested more than 64 levels deep"),
        # Merge keys: PyYAML copies merged mappings before any limit counts them (nested, a bomb).
        (
            "a: &a {k0: 0, k1: 1}\nb: &b {<<: [*a, *a]}\nc: {<<: [*b, *b]}\n",
            "/",
            "merge keys (<<) are not accepted",
        ),
        (
            "a: &x [1]\nb: &y [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n"
            + "".join(
                f"c{i}: &z{i} [{', '.join(['*' + ('y' if i == 0 else f'z{i-1}')] * 10)}]\n" for i in range(6)
            ),
            "/",
            "more than 500000 values",
        ),
    ],
)
def test_documents_that_are_not_openapi_3_are_refused_naming_the_place(owner, document, path, message):
    browser, token = owner
    text = document if isinstance(document, str) else json.dumps(document)
    refused = _import(browser, token, text, name=f"bad-{uuid.uuid4().hex[:6]}", status=422)
    found = [e for e in refused["errors"] if e["path"].startswith(path)]
    assert found and message in found[0]["message"], refused


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # Python's int() refuses more than 4300 digits with a ValueError that is no parse error.
        ('{"openapi": "3.0.3", "x": ' + "1" * 5000 + "}", "(4300 digits)"),
        ("openapi: 3.0.3\nx: " + "1" * 5000 + "\n", "(4300 digits)"),
        ("openapi: 3.0.3\nx: 2026-13-45\n", "month must be in 1..12"),  # a YAML date that is none
        # YAML's escapes make a NUL, which no text (nor jsonb) may hold.
        (
            'openapi: 3.0.3\ninfo: {title: t, x-note: "a\\0b"}\nservers: [{url: "https://a.example"}]\n'
            "paths: {/p: {get: {operationId: p}}}\n",
            "NUL",
        ),
    ],
    ids=["long JSON number", "long YAML number", "impossible YAML date", "NUL in YAML"],
)
def test_values_no_document_can_hold_are_refused_not_a_server_error(owner, document, message):
    browser, token = owner
    refused = _import(browser, token, document, name=f"odd-{uuid.uuid4().hex[:6]}", status=422)
    assert any(message in e["message"] for e in refused["errors"]), refused


def test_yaml_aliases_that_repeat_a_long_text_are_refused_by_its_expanded_size(owner):
    """Each use of an alias costs three bytes of the document and copies all of its text when the
    document is stored: 100 KB used 100 times is 10 MB (450 KB used 100,000 times, within the
    count of values, would be 45 GB)."""
    browser, token = owner
    copies = ", ".join(["*t"] * 100)
    for bomb in (
        PETSTORE + "\nx-text: &t " + "a" * 100_000 + f"\nx-copies: [{copies}]\n",
        # A key, repeated (an explicit one: a plain key is at most 1024 characters).
        PETSTORE + "\nx-key: &t\n  ? " + "k" * 100_000 + f"\n  : 1\nx-copies: [{copies}]\n",
    ):
        refused = _import(browser, token, bomb, name="aliases", status=422)
        assert refused["errors"][0]["path"] == "/" and "characters of text" in refused["errors"][0]["message"]
    assert browser.api("GET", "/api/v1/connectors", token=token).json["items"] == []


def test_a_document_too_large_is_refused(owner):
    browser, token = owner
    big = PETSTORE + "\n# " + "x" * (950 * 1024)
    refused = _import(browser, token, big, name="big", status=422)
    assert refused["errors"][0]["path"] == "/" and "at most 921600" in refused["errors"][0]["message"]
    assert browser.api("GET", "/api/v1/connectors", token=token).json["items"] == []


def test_the_page_imports_a_pasted_document_and_lists_its_operations(owner):
    browser, _token = owner
    answer = browser.post("/org/connectors", {"name": "pasted", "document": PETSTORE})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    listing = browser.get("/org/connectors").get_data(as_text=True)
    assert "showPetById" in listing and "http://petstore.swagger.io/v1" in listing
    refused = browser.post("/org/connectors", {"name": "swagger", "document": '{"swagger": "2.0"}'})
    assert refused.status_code == 422
    assert "/swagger: expected OpenAPI 3.x" in refused.get_data(as_text=True)


def test_basic_credentials_follow_the_documents_scheme(owner, upstream):
    browser, token = owner
    document = yaml.safe_load(PETSTORE)
    document["components"]["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"}}
    document["paths"]["/pets"]["get"]["security"] = [{"basic": []}]
    _import(browser, token, json.dumps(document), name="basic-store", base_url=upstream.url + "/v1")
    created = browser.api(
        "POST",
        "/api/v1/connections",
        token=token,
        json={
            "service_key": "openapi",
            "name": "basic-login",
            "config": {"connector": "basic-store"},
            "credentials": {"username": "ann", "password": "s3cret"},
        },
    )
    assert created.status_code == 201, created.json
    steps = [
        {"id": "list", "type": "http_request", "connection": "basic-login", "operation": "listPets"},
        {"id": "r", "type": "respond", "body": "{{ steps.list.status }}"},
    ]
    endpoint = _endpoint(browser, token, _save(browser, token, steps)["id"], path="/basic")
    upstream.requests.clear()
    assert browser.client.post(endpoint["url"], json={}).status_code == 200
    assert upstream.requests[0]["authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()


def test_a_required_header_parameter_is_checked(owner, upstream):
    browser, token = owner
    document = yaml.safe_load(PETSTORE)
    document["paths"]["/pets"]["get"]["parameters"].append(
        {"name": "X-Tenant", "in": "header", "required": True, "schema": {"type": "integer"}}
    )
    _import(browser, token, json.dumps(document), name="headed", base_url=upstream.url + "/v1")
    step = {"id": "list", "type": "http_request", "connector": "headed", "operation": "listPets"}
    problems = _save(browser, token, [step], status=422)["errors"]
    assert problems == [
        {"path": "/steps/0/headers", "message": "the header 'X-Tenant' is required by listPets"}
    ]
    problems = _save(browser, token, [{**step, "headers": {"x-tenant": "abc"}}], status=422)["errors"]
    assert problems[0]["path"] == "/steps/0/headers/x-tenant"
    _save(browser, token, [{**step, "headers": {"x-tenant": "42"}}])


def test_a_connector_its_connections_use_cannot_be_deleted(owner, upstream):
    """Connections are bound to a connector by name and keep their credentials: deleting it and
    importing another under that name, with another server, would hand them over."""
    browser, token = owner
    imported = _import(
        browser, token, json.dumps(_with_key_and_body(PETSTORE)), base_url=upstream.url + "/v1"
    )
    connection = _connection(browser, token)
    refused = browser.api("DELETE", f"/api/v1/connectors/{imported['id']}", token=token)
    assert refused.status_code == 409 and "petstore-key" in refused.json["detail"], refused.json
    assert browser.api("DELETE", f"/api/v1/connections/{connection['id']}", token=token).status_code == 204
    assert browser.api("DELETE", f"/api/v1/connectors/{imported['id']}", token=token).status_code == 204


def test_a_secret_in_a_path_parameter_is_masked_percent_encoded_too(owner, upstream):
    browser, token = owner
    secret = "tok:en/with+signs"
    assert browser.api("PUT", "/api/v1/secrets/PET", token=token, json={"value": secret}).status_code == 201
    _import(browser, token, json.dumps(_with_key_and_body(PETSTORE)), base_url=upstream.url + "/v1")
    _connection(browser, token)
    steps = [
        {
            "id": "shown",
            "type": "http_request",
            "connection": "petstore-key",
            "operation": "showPetById",
            "path_params": {"petId": "{{ secrets.PET }}"},
        },
        {"id": "r", "type": "respond", "body": "{{ steps.shown.body }}"},
    ]
    endpoint = _endpoint(browser, token, _save(browser, token, steps)["id"], path="/secret-pet")
    answer = browser.client.post(endpoint["url"], json={})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    runs = browser.api("GET", "/api/v1/runs", token=token).json["items"]
    record = json.dumps(browser.api("GET", f"/api/v1/runs/{runs[0]['id']}", token=token).json)
    for form in (secret, quote(secret, safe=""), quote(secret)):
        assert form not in record and form not in answer.get_data(as_text=True), form
