"""The OpenAPI 3.1 documents of core's APIs, built from the operations' declarations
(nectar.core.api.declare): /api/v1/openapi.json, each operation with the API-key scope it needs,
and /internal/v1/openapi.json, the service contract marketing and admin call."""

from __future__ import annotations

from flask import Flask

from nectar.core.api.declare import openapi_document
from nectar.core.api.models import ProblemDocument
from nectar.core.contract.client import API_PREFIX as INTERNAL_PREFIX

API_PREFIX = "/api/v1"
API_INFO = {
    "title": "Nectar Studio core API",
    "version": "1",
    "description": "Everything acts inside one organization: the API key's, or the signed-in user's "
    "chosen one. An API key needs the scope each operation names (`x-required-scope`; read, "
    "workflows:write, endpoints:call or admin). Errors are RFC 9457 problem documents; input "
    "refused lists each problem in `errors` (a JSON Pointer `path` into the body, or a `field`), "
    "and a body's unknown fields are refused, named. Interactive documentation: /api/v1/docs.",
}
INTERNAL_INFO = {
    "title": "Nectar Studio core service contract",
    "version": "1",
    "description": "What marketing (CORE_SERVICE_TOKEN: accounts and plans only) and admin "
    "(CORE_ADMIN_TOKEN: everything) may ask of core, as `Authorization: Bearer <token>`.",
}


def api_document(app: Flask) -> dict:
    """/api/v1's document (built once per app)."""
    from nectar.core.api.views import required_scope  # the views import this module

    def scope(view, method: str) -> str:
        return str(required_scope(view, method))

    return _cached(
        app,
        "api",
        lambda: openapi_document(
            app,
            prefix=API_PREFIX,
            blueprint="api",
            info=API_INFO,
            security_schemes={
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key: nsk_..."},
                "session": {"type": "apiKey", "in": "cookie", "name": "nectar_core_session"},
            },
            security=lambda view, method: [{"apiKey": [scope(view, method)]}, {"session": []}],
            extra=lambda view, method: {"x-required-scope": scope(view, method)},
            problem_model=ProblemDocument,
        ),
    )


def internal_document(app: Flask) -> dict:
    """/internal/v1's document (built once per app)."""
    return _cached(
        app,
        "internal",
        lambda: openapi_document(
            app,
            prefix=INTERNAL_PREFIX,
            blueprint="service_api",
            info=INTERNAL_INFO,
            security_schemes={"serviceToken": {"type": "http", "scheme": "bearer"}},
            security=lambda view, method: [{"serviceToken": []}],
            problem_model=ProblemDocument,
        ),
    )


def _cached(app: Flask, name: str, build) -> dict:
    documents = app.extensions.setdefault("nectar_openapi", {})
    if name not in documents:
        documents[name] = build()
    return documents[name]
