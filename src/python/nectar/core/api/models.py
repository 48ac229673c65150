"""The request and response models of core's APIs (/api/v1 and the service contract /internal/v1):
request models validate (nectar.core.api.declare), and all of them are the OpenAPI documents."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from nectar.core.api.declare import Answer, Body, Query
from nectar.core.api_keys.service import Scope
from nectar.core.contract.client import PLANS
from nectar.schema.models.alerts import ALERT_CHANNELS, MAX_WINDOW_MINUTES
from nectar.schema.models.workflows import RUN_STATUSES
from nectar.shared.bad_input import MAX_EMAIL_LENGTH, MAX_INTEGER

Role = Literal["owner", "admin", "member"]
Plan = Literal[PLANS]  # type: ignore[valid-type]
Count = Field(ge=1, le=MAX_INTEGER)
DESCRIPTION_MAX = 2000


# --- Problems ------------------------------------------------------------------------------------


class ProblemEntry(Answer):
    """Where (a JSON Pointer `path` into the body, or the `field`: a query parameter, header or
    form field) and what."""

    path: str | None = None
    field: str | None = None
    message: str


class ProblemDocument(Answer):
    """RFC 9457. A refusal of input lists its problems in `errors`; a missing scope names it in
    `required_scope`; a limit gives `limit` and `resets_at`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "Unknown field: colour.",
                "errors": [
                    {"path": "/colour", "message": "Unknown field; this operation takes name, scopes."}
                ],
            }
        },
    )
    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemEntry] | None = None


class Document(Answer):
    """A JSON document (a JSON Schema, an OpenAPI document)."""


# --- The organization ----------------------------------------------------------------------------


class Organization(Answer):
    id: uuid.UUID
    name: str
    slug: str
    timezone: str
    plan: str
    status: Literal["active", "suspended"]


class Counts(Answer):
    members: int
    services: int
    endpoints: int
    workflows: int
    runs_this_week: int


class Usage(Answer):
    runs: int
    runs_by_trigger: dict[str, int]
    endpoint_calls: int
    steps: int
    http_calls: int
    run_seconds: float


class UsageDay(Usage):
    day: date


class UsageReport(Answer):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    first: date = Field(alias="from")
    to: date
    days: list[UsageDay]
    total: Usage


class UsagePeriod(Query):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    first: date | None = Field(
        None, alias="from", description="The first UTC day (default: this month's first)"
    )
    to: date | None = Field(None, description="The last UTC day (default: today)")


class Paging(Query):
    page: int = Field(1, ge=1, le=100_000)
    per_page: int = Field(50, ge=1, le=100)


class _Page(Answer):
    page: int
    per_page: int
    next: str | None = Field(description="The address of the next page, or null")


class Member(Answer):
    user_id: uuid.UUID
    email: str
    display_name: str | None
    role: Role
    joined_at: datetime | None


class MemberPage(_Page):
    items: list[Member]


class ApiKey(Answer):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[Scope]
    expires_at: datetime | None
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(ApiKey):
    token: str = Field(description="The key itself, shown in this answer only")


class ApiKeyPage(_Page):
    items: list[ApiKey]


class NewApiKey(Body):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(
        [Scope.READ],
        min_length=1,
        description="read; workflows:write (reads too); endpoints:call; admin (everything)",
    )
    expires_at: datetime | None = Field(
        None, description="When the key stops working, with its zone (at most two years off); null: never"
    )


class Invitation(Answer):
    id: uuid.UUID
    email: str
    role: Role
    expires_at: datetime | None
    accepted_at: datetime | None


class InvitationPage(_Page):
    items: list[Invitation]


class NewInvitation(Body):
    email: str = Field(max_length=MAX_EMAIL_LENGTH)
    role: Role = "member"


# --- Workflows and runs --------------------------------------------------------------------------


class Workflow(Answer):
    id: uuid.UUID
    name: str
    description: str | None
    current_version: int
    is_active: bool
    updated_at: datetime | None


class WorkflowWithDefinition(Workflow):
    definition: dict[str, Any]


class WorkflowList(Answer):
    items: list[Workflow]


class NewWorkflow(Body):
    name: str = Field(max_length=200)
    definition: Any = Field(description="The workflow document (see /schemas/workflow-v1.json)")
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)


class WorkflowChange(Body):
    name: str = Field(None, min_length=1, max_length=200, description="unique in the organization")
    description: str | None = Field(None, max_length=DESCRIPTION_MAX, description="null: none")


class DraftDefinition(Body):
    definition: Any = Field(None, description="The workflow document (see /schemas/workflow-v1.json)")


class Validation(Answer):
    valid: bool
    errors: list[ProblemEntry]


class Version(Answer):
    version: int
    note: str | None
    created_at: datetime | None
    definition: dict[str, Any]


class VersionList(Answer):
    items: list[Version]


class NewVersion(Body):
    definition: Any = Field(description="The workflow document (see /schemas/workflow-v1.json)")
    note: str | None = Field(None, max_length=500)


class VersionNumber(Answer):
    version: int


class Rollback(Body):
    version: int = Field(ge=1, le=MAX_INTEGER, description="The version to make current again")


class RunRequest(Body):
    input: dict[str, Any] = Field(
        default_factory=dict, description="The run's input (`input` in expressions)"
    )
    version: int | None = Field(
        None, ge=1, le=MAX_INTEGER, description="A version (default: the current one)"
    )


class TestRunRequest(Body):
    definition: Any = Field(None, description="The draft to run (not saved)")
    input: dict[str, Any] = Field(default_factory=dict)


class PreviewRequest(Body):
    definition: Any = None
    text: str = ""
    pointer: str = ""
    bare: bool = False
    run_id: uuid.UUID | None = None
    with_context: bool = False


class Preview(Answer):
    run_id: uuid.UUID | None


class Run(Answer):
    id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    trigger: str
    status: Literal[RUN_STATUSES]  # type: ignore[valid-type]
    error: str | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    rerun_of: uuid.UUID | None
    wake_at: datetime | None
    waiting_for: Any
    failed_step: Any
    parent_run_id: uuid.UUID | None
    test: bool


class RunDetail(Run):
    input: Any
    output: Any
    steps: list[dict[str, Any]]


class RunList(Answer):
    items: list[Run]
    next_before: datetime | None


class RunFilter(Query):
    workflow_id: uuid.UUID | None = None
    status: Literal[RUN_STATUSES] | None = None  # type: ignore[valid-type]
    trigger: str | None = None
    before: datetime | None = Field(
        None, description="Runs queued before this time (the last page's next_before)"
    )
    limit: int = Field(50, ge=1, le=200)


class RunAgain(Body):
    version: Literal["original", "current"] = Field(
        "original", description="The run's own version, or the workflow's current one"
    )


class Event(Answer):
    id: uuid.UUID
    run_id: uuid.UUID
    name: str
    received_at: datetime | None


# --- Endpoints, connections, alerts --------------------------------------------------------------


class Endpoint(Answer):
    id: uuid.UUID
    method: str
    path: str
    url: str
    workflow_id: uuid.UUID
    pinned_version: int | None
    auth: Literal["public", "api_key"]
    request_schema: dict[str, Any] | None
    description: str | None
    is_enabled: bool


class EndpointList(Answer):
    items: list[Endpoint]


class EndpointFields(Body):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str = Field(max_length=300, description="Starts with /; {name} for a parameter")
    workflow_id: uuid.UUID
    auth: Literal["public", "api_key"] = "api_key"
    request_schema: dict[str, Any] | None = Field(
        None, description="A JSON Schema the request body must match"
    )
    pinned_version: int | None = Field(None, ge=1, le=MAX_INTEGER)
    description: str | None = Field(None, max_length=DESCRIPTION_MAX)


class CatalogService(Answer):
    key: str
    name: str
    description: str | None
    config_schema: dict[str, Any] | None
    credentials_schema: dict[str, Any] | None


class Catalog(Answer):
    items: list[CatalogService]


class Connection(Answer):
    id: uuid.UUID
    service_key: str
    name: str
    config: dict[str, Any] | None
    has_credentials: bool
    last_tested_at: datetime | None
    last_test_ok: bool | None
    last_test_error: str | None
    webhook_url: str | None


class ConnectionList(Answer):
    items: list[Connection]


class NewConnection(Body):
    service_key: str = Field(max_length=100, description="A catalog service's key")
    name: str = Field(max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict, description="Encrypted at rest; never returned")


class ConnectionChange(Body):
    name: str | None = Field(None, max_length=100)
    config: dict[str, Any] | None = None
    credentials: dict[str, Any] | None = Field(None, description="Encrypted at rest; never returned")


class ConnectionTest(Answer):
    ok: bool
    message: str | None
    connection: Connection


class AlertRuleChange(Body):
    name: str = Field(None, min_length=1, max_length=100)
    workflow_id: uuid.UUID | None = Field(None, description="null: any workflow")
    threshold: int = Field(None, ge=1, le=1000)
    window_minutes: int = Field(None, ge=1, le=MAX_WINDOW_MINUTES)
    channel: Literal[ALERT_CHANNELS] = None  # type: ignore[valid-type]
    target: str = Field(
        None,
        max_length=2000,
        description="an email address, a Slack connection's name, an http(s) URL, or a workflow's id",
    )
    enabled: bool = True


class NewAlertRule(AlertRuleChange):
    name: str = Field(min_length=1, max_length=100)
    channel: Literal[ALERT_CHANNELS]  # type: ignore[valid-type]
    target: str = Field(min_length=1, max_length=2000)


class AlertRule(Answer):
    id: uuid.UUID
    name: str
    workflow_id: uuid.UUID | None
    threshold: int
    window_minutes: int
    channel: str
    target: str
    enabled: bool
    has_secret: bool
    secret: str | None = Field(
        None, description="A webhook rule's signing secret, in its creation's answer only"
    )
    last_fired_at: datetime | None
    last_delivered_at: datetime | None
    last_error: str | None
    created_at: datetime | None


class AlertRuleList(Answer):
    items: list[AlertRule]


# --- The service contract (/internal/v1) ---------------------------------------------------------


class NewAccount(Body):
    request_id: str = Field(min_length=1, max_length=255, description="Makes retries safe")
    email: str = Field(max_length=MAX_EMAIL_LENGTH)
    organization_name: str | None = Field(None, max_length=200)
    plan: Plan | None = "free"  # type: ignore[valid-type]
    display_name: str | None = Field(None, max_length=200)


class ProvisionedAccount(Answer):
    user_id: uuid.UUID
    organization_id: uuid.UUID
    created_user: bool
    created_organization: bool


class Suspension(Body):
    reason: str = Field(max_length=10_000, description="Shown to the organization's members")


class PlanChange(Body):
    plan: Plan  # type: ignore[valid-type]


class OrganizationPlan(Answer):
    organization_id: uuid.UUID
    plan: str
    status: Literal["active", "suspended"]


class NewUser(Body):
    request_id: str = Field(min_length=1, max_length=255, description="Makes retries safe")
    email: str = Field(max_length=MAX_EMAIL_LENGTH)
    display_name: str | None = Field(None, max_length=200)


class UserChange(Body):
    email: str | None = Field(None, max_length=MAX_EMAIL_LENGTH)
    display_name: str | None = Field(None, max_length=200)


class CustomerUser(Answer):
    user_id: uuid.UUID
    email: str
    display_name: str | None
    is_active: bool
    email_verified: bool
    created: bool


class Queued(Answer):
    queued: bool


# --- Variables and secrets ------------------------------------------------------------------------


class Variable(Answer):
    name: str
    value: str
    created_at: datetime
    updated_at: datetime


class VariableList(Answer):
    items: list[Variable]


class Secret(Answer):
    """A secret as it is listed: its name and dates, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(Answer):
    items: list[Secret]


class NewValue(Body):
    value: str = Field(description="The value (its limits: the 422 names /value when it breaks one)")


# --- Connectors imported from OpenAPI documents ---------------------------------------------------


class ConnectorOperation(Answer):
    operation_id: str
    method: str
    path: str
    summary: str | None
    callable: bool = Field(description="false: its request body is not JSON, so steps cannot call it")


class Connector(Answer):
    id: uuid.UUID
    name: str
    title: str
    base_url: str
    document_bytes: int
    created_at: datetime
    operations: list[ConnectorOperation]


class ConnectorDetail(Connector):
    document: dict[str, Any]


class ConnectorList(Answer):
    items: list[Connector]


class NewConnector(Body):
    document: str | dict[str, Any] = Field(
        description="The OpenAPI 3 document: its text (JSON or YAML) or an object"
    )
    name: str | None = Field(None, max_length=100, description="Default: from the document's title")
    base_url: str | None = Field(None, max_length=2000, description="Default: the document's first server")
