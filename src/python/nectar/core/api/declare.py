"""Each API operation declared once: its request body and query as pydantic models, which validate
the request before the view runs (a body's unknown fields are refused, named), and its responses;
`openapi_document` builds the OpenAPI 3.1 document of a blueprint from the same declarations.

Why pydantic and a small generator: the models are the validation (strict JSON types, limits,
`extra="forbid"`) and their JSON Schema is what the document shows, so the two cannot drift; the
views stay plain Flask (flask-smorest or spectree would have replaced the blueprints and their
error shapes with their own); and the document follows our own rules (problem documents, scopes)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from flask import Flask, request
from pydantic import BaseModel, ConfigDict, ValidationError

from nectar.shared.rejection import InputRejected, Problem


class Body(BaseModel):
    """A request body: unknown fields are refused, values have their JSON types (no "1" for 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """A query string's parameters (text, converted: ?page=2); others are ignored."""

    model_config = ConfigDict(extra="ignore")


class Answer(BaseModel):
    """A response body as documented (responses are not validated at run time: the API's tests
    check them against the document with schemathesis)."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type[Body] | None = None
    body_required: bool = True
    query: type[Query] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    example: dict | None = None
    description: str | None = None
    links: dict[int, dict[str, dict]] = field(default_factory=dict)
    public: bool = False


def operation(
    summary: str,
    *,
    body: type[Body] | None = None,
    body_required: bool = True,
    query: type[Query] | None = None,
    responses: dict[int, type[BaseModel] | None] | None = None,
    example: dict | None = None,
    description: str | None = None,
    links: dict[int, dict[str, dict]] | None = None,
    public: bool = False,
) -> Callable:
    """Declares a view's operation: `body` and `query` are checked before it runs (InputRejected:
    422 naming each problem, 400 for the query); `responses` maps status to a model (None: no body).
    `links` (by status) are OpenAPI links, which stateful tests follow; `public`: no credential needed."""
    declared = Operation(
        summary,
        body,
        body_required,
        query,
        responses or {200: None},
        example,
        description,
        links or {},
        public,
    )

    def wrap(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            if query is not None:
                _validate(lambda: query.model_validate(request.args.to_dict()), query, 400, "field")
            if body is not None:
                # A body that is no JSON object is the view's 400 ("Send a JSON object"), as before.
                if isinstance(request.get_json(silent=True), dict):
                    _validate(lambda: body.model_validate_json(request.get_data()), body, 422, "path")
            return view(*args, **kwargs)

        checked.api_operation = declared
        return checked

    return wrap


def _validate(check: Callable[[], BaseModel], model: type[BaseModel], status: int, where: str) -> None:
    """check(), or InputRejected naming each problem by JSON Pointer (`where` "path") or by field."""
    try:
        check()  # a body as JSON (strict JSON types; text for UUIDs and times), a query as text
    except ValidationError as invalid:
        problems, unknown = [], []
        for error in invalid.errors(include_url=False):
            location = [str(part) for part in error["loc"]]
            if error["type"] == "extra_forbidden":
                unknown.append(location[-1])
                message = f"Unknown field; this operation takes {', '.join(model.model_fields) or 'none'}."
            elif error["type"] in ("literal_error", "enum"):
                message = (
                    f"{location[-1] if location else 'The body'} must be one of {error['ctx']['expected']}."
                )
            else:
                message = f"{location[-1] if location else 'The body'}: {error['msg']}."
            if where == "path":
                pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in location)
                problems.append(Problem(pointer, message))
            else:
                problems.append(Problem(None, message, field=location[0] if location else "query"))
        if unknown and len(unknown) == len(problems):
            detail = f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}."
        elif len(problems) == 1:
            detail = problems[0].message
        else:
            detail = f"The request has {len(problems)} problems (see errors)."
        raise InputRejected(detail, problems, status=status) from None


# --- The document -----------------------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
_PATH_SCHEMAS = {"uuid": {"type": "string", "format": "uuid"}, None: {"type": "string"}}
PROBLEM_JSON = "application/problem+json"


def openapi_path(rule: str, prefix: str) -> str:
    """A Flask rule as an OpenAPI path under `prefix`: /workflows/<uuid:id> -> /workflows/{id}."""
    return _CONVERTER.sub(r"{\2}", rule.removeprefix(prefix))


def declared_operations(app: Flask, prefix: str, blueprint: str):
    """(path, method, view, rule) of each route of `blueprint` under `prefix`."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(f"{blueprint}.") and rule.rule.startswith(prefix):
            view = app.view_functions[rule.endpoint]
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield openapi_path(rule.rule, prefix), method.lower(), view, rule


def openapi_document(
    app: Flask,
    *,
    prefix: str,
    blueprint: str,
    info: dict,
    security_schemes: dict,
    security: Callable[[Any, str], list[dict]],
    extra: Callable[[Any, str], dict] | None = None,
    problem_model: type[BaseModel],
) -> dict:
    """The OpenAPI 3.1 document of `blueprint`'s routes under `prefix`, from their declarations.
    `security(view, method)` gives an operation's security requirement; `extra` more members."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    problem = {
        "description": "A problem document (RFC 9457)",
        "content": {PROBLEM_JSON: {"schema": ref(problem_model)}},
    }
    paths: dict[str, dict] = {}
    for path, method, view, rule in declared_operations(app, prefix, blueprint):
        declared: Operation | None = getattr(view, "api_operation", None)
        if declared is None:
            continue  # the test of the document names it
        entry: dict[str, Any] = {
            "operationId": f"{rule.endpoint.split('.', 1)[1]}"
            + ("" if len(rule.methods - {"HEAD", "OPTIONS"}) == 1 else f"_{method}"),
            "summary": declared.summary,
            "security": [] if declared.public else security(view, method.upper()),
        }
        if declared.description or view.__doc__:
            entry["description"] = declared.description or " ".join(view.__doc__.split())
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _PATH_SCHEMAS.get(converter, {"type": "string"}),
            }
            for converter, name in _CONVERTER.findall(rule.rule)
        ]
        if declared.query is not None:
            query_schema = declared.query.model_json_schema()
            required = set(query_schema.get("required", ()))
            for name, schema in query_schema.get("properties", {}).items():
                description = schema.pop("description", None)
                parameters.append(
                    {"name": name, "in": "query", "required": name in required, "schema": schema}
                    | ({"description": description} if description else {})
                )
        if parameters:
            entry["parameters"] = parameters
        if declared.body is not None:
            content: dict[str, Any] = {"schema": ref(declared.body)}
            if declared.example is not None:
                content["example"] = declared.example
            entry["requestBody"] = {
                "required": declared.body_required,
                "content": {"application/json": content},
            }
        responses: dict[str, Any] = {}
        for status, model in declared.responses.items():
            answer: dict[str, Any] = {"description": HTTPStatus(status).phrase}
            if model is not None:
                answer["content"] = {"application/json": {"schema": ref(model)}}
            if status in declared.links:
                answer["links"] = declared.links[status]
            responses[str(status)] = answer
        for status in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503):
            responses.setdefault(str(status), problem)
        entry["responses"] = responses
        if extra is not None:
            entry.update(extra(view, method.upper()))
        paths.setdefault(path, {})[method] = entry
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": prefix}],
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": security_schemes, "schemas": dict(sorted(schemas.items()))},
    }
