"""The OpenAPI document of one organization's endpoints."""

from __future__ import annotations

import re


def organization_openapi(org, endpoints) -> dict:
    paths: dict = {}
    for endpoint in endpoints:
        if not endpoint.is_enabled:
            continue
        operation = {
            "operationId": f"{endpoint.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', endpoint.path.lower()).strip('_') or 'root'}",
            "summary": endpoint.description or f"{endpoint.method} {endpoint.path}",
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"\{([a-z_][a-z0-9_]*)\}", endpoint.path)
            ],
            "responses": {
                "200": {"description": "What the workflow responds"},
                "401": {"description": "API key missing or wrong"},
                "403": {
                    "description": "The organization's plan does not include API keys (names the plan that does)"
                },
                "422": {"description": "The body does not match the schema"},
                "429": {
                    "description": "Rate limit of the plan reached: the problem gives `limit` and `resets_at`"
                },
            },
        }
        if endpoint.auth == "api_key":
            operation["security"] = [{"apiKey": []}]
        else:
            operation["security"] = []
        if endpoint.request_schema is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": endpoint.request_schema}},
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{org.name} API (Nectar Studio)", "version": "1"},
        "servers": [{"url": f"/e/{org.id}"}],
        "paths": paths,
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
    }
