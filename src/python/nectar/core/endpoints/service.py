"""Tenant API endpoints: `METHOD /path/{param}` bound to a workflow, served at /e/<org id>/<path>
(serve.py; routing.py finds a call's endpoint, runs/writer.py writes its run)."""

from __future__ import annotations

import functools
import itertools
import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.contract.plans import raised_limit
from nectar.core.plans import PLAN_LIMITS
from nectar.core.runs.queries import version_of
from nectar.core.workflows import json_schema
from nectar.core.workflows.definition import Problem
from nectar.schema.models import Endpoint, Workflow, WorkflowVersion
from nectar.schema.models.columns import max_length
from nectar.shared.rejection import InputRejected

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PATH_MAX = max_length(Endpoint.path)
RESERVED_PATHS = ("/_hooks/", "/_runs/")  # incoming webhooks, and queued calls' runs (serve.py)
PATH_PATTERN = re.compile(r"^(/([A-Za-z0-9._~-]+|\{[a-z_][a-z0-9_]{0,39}\}))+/?$|^/$")
# Calls per minute per organization, by plan (declared in plans.py; tests and benchmarks change these).
PLAN_RATE_LIMITS = {plan: limits.calls_per_minute for plan, limits in PLAN_LIMITS.items()}


INVALID_ENDPOINT = "The endpoint is not valid."


@functools.lru_cache(maxsize=4096)  # every call matches its candidate rows' paths: compile each once
def compile_path(path: str) -> re.Pattern:
    pattern = re.sub(r"\\\{([a-z_][a-z0-9_]*)\\\}", r"(?P<\1>[^/]+)", re.escape(path.rstrip("/") or "/"))
    return re.compile(f"^{pattern}/?$")


def _check(method: str, path: str, auth: str, request_schema) -> list[Problem]:
    problems = []
    if method not in METHODS:
        problems.append(Problem("/method", f"Use one of {', '.join(METHODS)}."))
    if not isinstance(path, str) or len(path) > PATH_MAX or not PATH_PATTERN.match(path):
        problems.append(
            Problem("/path", "Start with /; use letters, digits, . _ ~ - and {name} for parameters.")
        )
    elif path.startswith(RESERVED_PATHS):
        problems.append(
            Problem("/path", f"Paths under {' and '.join(RESERVED_PATHS)} are Nectar Studio's own.")
        )
    if auth not in ("public", "api_key"):
        problems.append(Problem("/auth", "Use public or api_key."))
    else:
        try:
            compile_path(path)
        except re.error:
            problems.append(Problem("/path", "Each {parameter} name may appear once."))
    if request_schema is not None:
        problems += [
            Problem(f"/request_schema{where}", f"not a valid JSON Schema: {message}")
            for where, message in json_schema.schema_problems(request_schema)
        ]
        if any(not ref.startswith("#") for ref in _refs(request_schema)):
            # A remote $ref would make core fetch URLs of the tenant's choosing on every call.
            problems.append(
                Problem("/request_schema", "Only local references ($ref starting with #) are allowed.")
            )
    return problems


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def save_endpoint(
    session: Session,
    ctx: OrgContext,
    *,
    method: str,
    path: str,
    workflow_id: uuid.UUID,
    auth: str = "api_key",
    request_schema: dict | None = None,
    pinned_version: int | None = None,
    description: str | None = None,
    endpoint: Endpoint | None = None,
) -> Endpoint:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change endpoints.")
    method = (method or "").upper()
    problems = _check(method, path, auth, request_schema)
    workflow = session.get(Workflow, workflow_id)
    if workflow is None:
        problems.append(Problem("/workflow_id", "No such workflow in this organization."))
    elif pinned_version is not None:
        problems += _pin_problems(session, workflow, pinned_version)
    if problems:
        raise InputRejected(INVALID_ENDPOINT, problems)
    endpoint = endpoint or Endpoint(id=uuid.uuid4(), org_id=ctx.org_id)
    endpoint.method, endpoint.path, endpoint.workflow_id, endpoint.auth = method, path, workflow_id, auth
    endpoint.request_schema, endpoint.pinned_version, endpoint.description = (
        request_schema,
        pinned_version,
        description,
    )
    session.add(endpoint)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InputRejected(
            INVALID_ENDPOINT, [Problem("/path", f"{method} {path} exists already.")]
        ) from None
    return endpoint


def _pin_problems(session: Session, workflow: Workflow, pinned_version: int) -> list[Problem]:
    """Routing joins on the pinned version (routing.py): a pin to a version the workflow lacks would
    make every call answer 404. Checked against the workflow this same request binds."""
    if version_of(session, workflow.id, pinned_version) is not None:
        return []
    last = session.scalar(
        select(func.max(WorkflowVersion.version)).where(WorkflowVersion.workflow_id == workflow.id)
    )
    versions = f"its versions are 1-{last}" if last else "it has no versions"
    return [
        Problem("/pinned_version", f"workflow {workflow.name!r} has no version {pinned_version}; {versions}")
    ]


def list_endpoints(session: Session) -> list[Endpoint]:
    return list(session.scalars(select(Endpoint).order_by(Endpoint.path, Endpoint.method)))


def get_endpoint(session: Session, endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise LookupError("no such endpoint")
    return endpoint


def delete_endpoint(session: Session, ctx: OrgContext, endpoint_id: uuid.UUID) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change endpoints.")
    session.delete(get_endpoint(session, endpoint_id))


@dataclass(frozen=True)
class BoundEndpoint:
    """An enabled endpoint with the workflow version it runs."""

    id: uuid.UUID
    path: str
    auth: str
    request_schema: dict | None
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    definition: dict
    waits: bool = False  # the workflow may wait (definition.may_wait): calls queue a run and answer 202
    # The organization's variables and secrets it reads (definition.organization_references): the
    # route table reads them with the first call and keeps them (routing.py); none, no query.
    reads: tuple = ()


@dataclass(frozen=True)
class Route:
    """What a call needs, as routing.RouteTable finds it: the endpoint, the organization's plan,
    the scopes of the caller's API key (None: not a usable key of the organization's), and the
    path's parameters."""

    endpoint: BoundEndpoint
    plan: str
    key_scopes: tuple[str, ...] | None
    params: dict
    plan_overrides: dict = field(default_factory=dict)  # organizations.plan_overrides


def rate_limit(plan: str, overrides: dict | None = None) -> int:
    """Calls a minute the organization may make: its plan's, or staff's higher override."""
    return raised_limit(PLAN_RATE_LIMITS.get(plan, PLAN_RATE_LIMITS["free"]), overrides, "calls_per_minute")


MAX_BODY_PROBLEMS = 50  # a body that breaks its schema everywhere is told the first ones


def body_problems(schema: dict, body) -> list[Problem]:
    """How `body` breaks the endpoint's request schema (at most MAX_BODY_PROBLEMS); empty when it
    matches. Counts against the thread's time limit (TimeLimitExceeded past it)."""
    errors = json_schema.validator(schema).iter_errors(body)
    try:
        return [
            Problem(json_schema.pointer(error.absolute_path) or "/", error.message)
            for error in itertools.islice(errors, MAX_BODY_PROBLEMS)
        ]
    except RecursionError:  # a $ref that leads back to itself without going deeper in the body
        return [Problem("/", "The endpoint's schema refers to itself without end; its owner must fix it.")]
