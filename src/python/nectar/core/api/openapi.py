"""The OpenAPI 3.1 document of core's /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from functools import cache

from nectar.core.api_keys.service import Scope

SCOPES = [scope.value for scope in Scope]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list_of(name: str) -> dict:
    return {"type": "object", "properties": {"items": {"type": "array", "items": _ref(name)}}}


def _page_of(name: str) -> dict:
    return {
        "type": "object",
        "required": ["items", "page", "per_page", "next"],
        "properties": {
            "items": {"type": "array", "items": _ref(name)},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "next": {"type": ["string", "null"], "description": "URL of the next page, or null"},
        },
    }


PROBLEM = {"description": "Problem", "content": {"application/problem+json": {"schema": _ref("Problem")}}}
ERRORS = {"400": PROBLEM, "401": PROBLEM, "403": PROBLEM, "404": PROBLEM, "422": PROBLEM}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {
        "name": "per_page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
    },
]
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": ["string", "null"], "format": "date-time"}
ALERT_RULE_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "workflow_id": {"type": ["string", "null"], "format": "uuid", "description": "null: any workflow"},
    "threshold": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1},
    "window_minutes": {"type": "integer", "minimum": 1, "maximum": 10080, "default": 60},
    "channel": {"enum": ["email", "slack", "webhook", "workflow"]},
    "target": {
        "type": "string",
        "maxLength": 2000,
        "description": "an email address, a Slack connection's name, an http(s) URL, or a workflow's id",
    },
    "enabled": {"type": "boolean", "default": True},
}


def with_scopes(document: dict, scopes: dict[tuple[str, str], str]) -> dict:
    """`document` with each operation's API-key scope (by (path, method)): in its security
    requirement, and as `x-required-scope`."""
    paths = {}
    for path, operations in document["paths"].items():
        paths[path] = {}
        for method, operation in operations.items():
            scope = scopes.get((path, method))
            if scope is not None:
                security = [{"apiKey": [scope]}, {"session": []}]
                operation = {**operation, "security": security, "x-required-scope": scope}
            paths[path][method] = operation
    return {**document, "paths": paths}


@cache
def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nectar Studio core API",
            "version": "1",
            "description": "Everything acts inside one organization: the API key's, or the signed-in "
            "user's chosen one. Errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"apiKey": []}, {"session": []}],
        "paths": {
            "/organization": {
                "get": {
                    "summary": "The organization",
                    "responses": {"200": _json(_ref("Organization")), **ERRORS},
                }
            },
            "/dashboard": {
                "get": {
                    "summary": "The organization's counts",
                    "responses": {"200": _json(_ref("Counts")), **ERRORS},
                }
            },
            "/usage": {
                "get": {
                    "summary": "The organization's usage per UTC day (runs counted as they end)",
                    "parameters": [
                        {"name": name, "in": "query", "schema": {"type": "string", "format": "date"}}
                        for name in ("from", "to")
                    ],
                    "responses": {"200": _json(_ref("UsageReport")), **ERRORS},
                }
            },
            "/members": {
                "get": {
                    "summary": "Members",
                    "parameters": PAGING,
                    "responses": {"200": _json(_page_of("Member")), **ERRORS},
                }
            },
            "/members/{user_id}": {
                "delete": {
                    "summary": "Remove a member",
                    "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": UUID}],
                    "responses": {"204": {"description": "Removed"}, **ERRORS},
                }
            },
            "/api-keys": {
                "get": {
                    "summary": "API keys",
                    "parameters": PAGING,
                    "responses": {"200": _json(_page_of("ApiKey")), **ERRORS},
                },
                "post": {
                    "summary": "Create an API key (the token is in this response only; 403 on a plan without API keys)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewApiKey")}},
                    },
                    "responses": {"201": _json(_ref("CreatedApiKey"), "Created"), **ERRORS},
                },
            },
            "/api-keys/{key_id}": {
                "delete": {
                    "summary": "Revoke an API key",
                    "parameters": [{"name": "key_id", "in": "path", "required": True, "schema": UUID}],
                    "responses": {"204": {"description": "Revoked"}, **ERRORS},
                }
            },
            "/invitations": {
                "get": {
                    "summary": "Invitations",
                    "parameters": PAGING,
                    "responses": {"200": _json(_page_of("Invitation")), **ERRORS},
                },
                "post": {
                    "summary": "Invite someone by email",
                    "description": "Needs a confirmed inviter (for an API key, its creator). An invitation "
                    "to the address that is still pending is answered as it is (200), with no new email. "
                    "Invitations and their email are limited per organization: 429 with Retry-After (a plan's mail limit also gives `limit` and `resets_at`).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewInvitation")}},
                    },
                    "responses": {
                        "200": _json(_ref("Invitation"), "Already pending"),
                        "201": _json(_ref("Invitation"), "Created"),
                        **ERRORS,
                        "429": PROBLEM,
                    },
                },
            },
            "/invitations/{invitation_id}": {
                "delete": {
                    "summary": "Withdraw an invitation",
                    "parameters": [{"name": "invitation_id", "in": "path", "required": True, "schema": UUID}],
                    "responses": {"204": {"description": "Withdrawn"}, **ERRORS},
                }
            },
            "/alert-rules": {
                "get": {
                    "summary": "Alert rules",
                    "responses": {"200": _json(_list_of("AlertRule")), **ERRORS},
                },
                "post": {
                    "summary": "Create an alert rule (a webhook's signing secret is in this response only)",
                    "description": "Fires when `threshold` runs of the workflow (any, without `workflow_id`) "
                    "failed within `window_minutes`, at most once per window. Webhooks are POSTed with "
                    "X-Nectar-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of `t.body` with the secret>.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("NewAlertRule")}},
                    },
                    "responses": {"201": _json(_ref("AlertRule"), "Created"), **ERRORS},
                },
            },
            "/alert-rules/{rule_id}": {
                "patch": {
                    "summary": "Change an alert rule (not its channel)",
                    "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": UUID}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("AlertRuleChange")}},
                    },
                    "responses": {"200": _json(_ref("AlertRule")), **ERRORS},
                },
                "delete": {
                    "summary": "Delete an alert rule",
                    "parameters": [{"name": "rule_id", "in": "path", "required": True, "schema": UUID}],
                    "responses": {"204": {"description": "Deleted"}, **ERRORS},
                },
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key: nsk_..."},
                "session": {"type": "apiKey", "in": "cookie", "name": "nectar_core_session"},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "Organization": {
                    "type": "object",
                    "properties": {
                        "id": UUID,
                        "name": {"type": "string"},
                        "slug": {"type": "string"},
                        "timezone": {"type": "string"},
                        "plan": {"type": "string"},
                        "status": {"enum": ["active", "suspended"]},
                    },
                },
                "Usage": {
                    "type": "object",
                    "properties": {
                        "runs": {"type": "integer"},
                        "runs_by_trigger": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "endpoint_calls": {"type": "integer"},
                        "steps": {"type": "integer"},
                        "http_calls": {"type": "integer"},
                        "run_seconds": {"type": "number"},
                    },
                },
                "UsageReport": {
                    "type": "object",
                    "properties": {
                        "from": {"type": "string", "format": "date"},
                        "to": {"type": "string", "format": "date"},
                        "days": {
                            "type": "array",
                            "items": {
                                "allOf": [
                                    _ref("Usage"),
                                    {
                                        "type": "object",
                                        "properties": {"day": {"type": "string", "format": "date"}},
                                    },
                                ]
                            },
                        },
                        "total": _ref("Usage"),
                    },
                },
                "Counts": {
                    "type": "object",
                    "properties": {
                        name: {"type": "integer"}
                        for name in ("members", "services", "endpoints", "workflows", "runs_this_week")
                    },
                },
                "Member": {
                    "type": "object",
                    "properties": {
                        "user_id": UUID,
                        "email": {"type": "string", "format": "email"},
                        "display_name": {"type": ["string", "null"]},
                        "role": {"enum": ["owner", "admin", "member"]},
                        "joined_at": TIME,
                    },
                },
                "ApiKey": {
                    "type": "object",
                    "properties": {
                        "id": UUID,
                        "name": {"type": "string"},
                        "prefix": {"type": "string"},
                        "scopes": {"type": "array", "items": {"enum": SCOPES}},
                        "expires_at": TIME,
                        "created_at": TIME,
                        "last_used_at": TIME,
                        "revoked_at": TIME,
                    },
                },
                "NewApiKey": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 100},
                        "scopes": {
                            "type": "array",
                            "items": {"enum": SCOPES},
                            "minItems": 1,
                            "default": ["read"],
                            "description": "read; workflows:write (reads too); endpoints:call; admin (everything)",
                        },
                        "expires_at": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "When the key stops working (at most two years off); null: never",
                        },
                    },
                },
                "CreatedApiKey": {
                    "allOf": [_ref("ApiKey"), {"type": "object", "properties": {"token": {"type": "string"}}}]
                },
                "Invitation": {
                    "type": "object",
                    "properties": {
                        "id": UUID,
                        "email": {"type": "string", "format": "email"},
                        "role": {"enum": ["owner", "admin", "member"]},
                        "expires_at": TIME,
                        "accepted_at": TIME,
                    },
                },
                "AlertRule": {
                    "type": "object",
                    "properties": {
                        "id": UUID,
                        **ALERT_RULE_FIELDS,
                        "has_secret": {"type": "boolean"},
                        "secret": {
                            "type": "string",
                            "description": "a webhook's, in its creation's answer only",
                        },
                        "last_fired_at": TIME,
                        "last_delivered_at": TIME,
                        "last_error": {"type": ["string", "null"]},
                        "created_at": TIME,
                    },
                },
                "NewAlertRule": {
                    "type": "object",
                    "required": ["name", "channel", "target"],
                    "additionalProperties": False,
                    "properties": ALERT_RULE_FIELDS,
                },
                "AlertRuleChange": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": ALERT_RULE_FIELDS,
                },
                "NewInvitation": {
                    "type": "object",
                    "required": ["email"],
                    "properties": {
                        "email": {"type": "string", "format": "email"},
                        "role": {"enum": ["owner", "admin", "member"]},
                    },
                },
            },
        },
    }
