"""The workflow document: a published JSON Schema plus the checks a schema cannot express.

A workflow is a trigger and a list of steps. Steps run in order; `condition` and `for_each` hold
nested step lists; any step may name an `on_error` list and a `retry` policy; `wait_for_event` and
`approval` may name an `on_timeout` list. Values are JSON, and strings may embed expressions in
`{{ ... }}` (JMESPath over the run's context, see expressions.py); a string that is exactly one
`{{ ... }}` keeps the expression's JSON type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import jmespath
from jsonschema import Draft202012Validator

from nectar.core.workflows import code
from nectar.core.workflows.expressions import ExpressionError, expressions_in
from nectar.core.workflows.json_schema import TenantValidator

STEP_TYPES = (
    "http_request",
    "transform",
    "condition",
    "for_each",
    "set",
    "wait",
    "delay",
    "send_email",
    "respond",
    "code",
    "wait_for_event",
    "approval",
    "call_workflow",
    "parallel",
)
MAX_WAIT_SECONDS = 30 * 86400
# wait_for_event and approval: how long they wait when the document does not say.
DEFAULT_SIGNAL_TIMEOUT_SECONDS = 7 * 86400
EVENT_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
APPROVER_ROLES = ("member", "admin", "owner")
MAX_STEPS_IN_DOCUMENT = 200
MAX_FOR_EACH_ITEMS = 1000
MAX_BRANCHES = 10
MAX_CALL_DEPTH = 5  # a run started by a call_workflow step may call again, this many levels deep
# Steps that may hold a run until later: a workflow with one runs asynchronously (an endpoint
# bound to it answers 202). A call_workflow step waits unless it says `"wait": false`.
SUSPENDING_STEP_TYPES = frozenset({"wait", "delay", "wait_for_event", "approval"})

_STEP_LIST = {"type": "array", "items": {"$ref": "#/$defs/step"}, "maxItems": MAX_STEPS_IN_DOCUMENT}
_ANY = {}

WORKFLOW_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nectar.studio/schemas/workflow-v1.json",
    "title": "Nectar Studio workflow",
    "type": "object",
    "required": ["trigger", "steps"],
    "additionalProperties": False,
    "properties": {
        "description": {"type": "string", "maxLength": 2000},
        "trigger": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["http", "manual", "schedule"]},
                "cron": {"type": "string", "maxLength": 100},
                "timezone": {"type": "string", "maxLength": 64},
            },
            "if": {"properties": {"type": {"const": "schedule"}}},
            "then": {"required": ["cron"]},
        },
        "steps": {**_STEP_LIST, "minItems": 1},
    },
    "$defs": {
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "attempts": {"type": "integer", "minimum": 1, "maximum": 10},
                "backoff_seconds": {"type": "number", "minimum": 0, "maximum": 300},
                "multiplier": {"type": "number", "minimum": 1, "maximum": 10},
            },
        },
        "step": {
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
                "type": {"enum": list(STEP_TYPES)},
                "name": {"type": "string", "maxLength": 200},
                "retry": {"$ref": "#/$defs/retry"},
                "on_error": _STEP_LIST,
            },
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "http_request"}}},
                    "then": {
                        "required": ["url"],
                        "properties": {
                            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                            "url": {"type": "string", "maxLength": 2000},
                            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                            "query": {"type": "object"},
                            "body": _ANY,
                            "connection": {"type": "string", "maxLength": 100},
                            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "transform"}}},
                    "then": {
                        "required": ["expression"],
                        "properties": {"expression": {"type": "string", "maxLength": 2000}},
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "condition"}}},
                    "then": {
                        "required": ["if", "then"],
                        "properties": {
                            "if": {"type": "string", "maxLength": 2000},
                            "then": _STEP_LIST,
                            "else": _STEP_LIST,
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "for_each"}}},
                    "then": {
                        "required": ["items", "steps"],
                        "properties": {
                            "items": {"type": "string", "maxLength": 2000},
                            "steps": _STEP_LIST,
                            "max_items": {"type": "integer", "minimum": 1, "maximum": MAX_FOR_EACH_ITEMS},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "set"}}},
                    "then": {"required": ["values"], "properties": {"values": {"type": "object"}}},
                },
                {
                    "if": {"properties": {"type": {"const": "wait"}}},
                    "then": {
                        "description": "Pauses an asynchronous run for a duration or until a time, up to 30 days, "
                        "holding no worker.",
                        "oneOf": [{"required": ["seconds"]}, {"required": ["until"]}],
                        "properties": {
                            "seconds": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": MAX_WAIT_SECONDS,
                                "description": "How long to wait.",
                            },
                            "until": {
                                "type": "string",
                                "maxLength": 2000,
                                "description": "An ISO 8601 time with its zone, or a {{ }} template giving one.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "delay"}}},
                    "then": {
                        "required": ["seconds"],
                        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "send_email"}}},
                    "then": {
                        "required": ["to", "subject", "body"],
                        "properties": {
                            "to": {"type": "string", "maxLength": 320},
                            "subject": {"type": "string", "maxLength": 300},
                            "body": {"type": "string", "maxLength": 20000},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "code"}}},
                    "then": {
                        "description": "Runs JavaScript in an isolated engine: no network, files, modules "
                        "or timers. The source is the body of an async function with `ctx` in scope (the "
                        "run's trigger, steps and vars, and item, index or error where the step has them); "
                        "what it returns is the step's output and must be JSON. Errors give their line and "
                        "column.",
                        "required": ["source"],
                        "properties": {
                            "source": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": code.MAX_SOURCE_CHARS,
                                "description": "JavaScript: a function body ending in `return <a JSON value>`, "
                                "e.g. `return ctx.trigger.items.length`.",
                            },
                            "timeout_ms": {
                                "type": "integer",
                                "minimum": 10,
                                "maximum": int(code.ASYNC_TIME_LIMIT_SECONDS * 1000),
                                "description": "Wall time the code may take, in milliseconds; at most "
                                f"{code.SYNC_TIME_LIMIT_SECONDS * 1000:.0f} in endpoint calls and "
                                f"{code.ASYNC_TIME_LIMIT_SECONDS * 1000:.0f} in background runs (the default), "
                                "and never more than the run has left.",
                            },
                            "memory_mb": {
                                "type": "integer",
                                "minimum": 8,
                                "maximum": code.MAX_MEMORY_MB,
                                "description": f"Memory the code may use, in MB (default {code.MAX_MEMORY_MB}).",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "wait_for_event"}}},
                    "then": {
                        "description": "Pauses an asynchronous run until an event with this name arrives for it "
                        "(POST /api/v1/runs/{id}/events/{name}, or the step's resume URL, which earlier steps "
                        "read as {{ resume_urls.<step id> }}) or its timeout passes. The event's JSON payload "
                        "becomes the step's output; an event that came before the step was reached is taken "
                        "when it is.",
                        "required": ["event"],
                        "properties": {
                            "event": {
                                "type": "string",
                                "pattern": EVENT_NAME_PATTERN,
                                "description": "The event's name: letters, digits and _ . : - (up to 100).",
                            },
                            "timeout_seconds": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": MAX_WAIT_SECONDS,
                                "description": "How long to wait, up to 30 days (default 7 days).",
                            },
                            "on_timeout": {
                                **_STEP_LIST,
                                "description": "Steps to run when no event came in time (the step's output "
                                "is then null); without them the step fails, and on_error applies.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "approval"}}},
                    "then": {
                        "description": "Pauses an asynchronous run until a member with at least approver_role "
                        "approves or rejects it, on the Approvals page or through the links emailed to those "
                        "members. Approved: the output says who, when and their comment. Rejected: the step "
                        "fails (on_error applies). Inside a loop, each iteration asks anew.",
                        "required": ["title"],
                        "properties": {
                            "title": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "description": "What is to be decided, as approvers see it; may hold {{ }} templates.",
                            },
                            "details": {
                                "type": "string",
                                "maxLength": 5000,
                                "description": "More for the approvers to read; may hold {{ }} templates.",
                            },
                            "approver_role": {
                                "enum": list(APPROVER_ROLES),
                                "description": "The least role that may decide (default admin).",
                            },
                            "notify": {
                                "type": "boolean",
                                "description": "Email the members who may decide (default true).",
                            },
                            "timeout_seconds": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": MAX_WAIT_SECONDS,
                                "description": "How long to wait for a decision, up to 30 days (default 7 days).",
                            },
                            "on_timeout": {
                                **_STEP_LIST,
                                "description": "Steps to run when nobody decided in time (the step's output is "
                                "then null); without them the step fails, and on_error applies.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "call_workflow"}}},
                    "then": {
                        "description": "Runs another workflow of this organization (its current version) with "
                        "an input, and by default waits for its output, which becomes this step's output; "
                        "if the called run fails, this step fails. Asynchronous runs only when it waits. "
                        f"Calls nest at most {MAX_CALL_DEPTH} deep, and a cycle of calls is refused when "
                        "saved. It does not retry: give the called workflow's steps a retry policy.",
                        "required": ["workflow"],
                        "properties": {
                            "workflow": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 200,
                                "description": "The workflow to run: its id or its name (not a template).",
                            },
                            "input": {
                                "type": "object",
                                "description": "The called run's trigger input; strings may hold {{ }} templates.",
                            },
                            "wait": {
                                "type": "boolean",
                                "description": "Wait for the called run's output (default true); false starts it "
                                "and goes on, with its run id as this step's output.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "parallel"}}},
                    "then": {
                        "description": "Runs branches of steps side by side (concurrently in asynchronous runs, "
                        "one after another in endpoint calls); the step ends when every branch has, and its "
                        "output is the list of each branch's output (that of the last step it ran), in "
                        "document order. A branch works "
                        "on a copy of the context; the vars each branch sets are merged in document order.",
                        "required": ["branches"],
                        "properties": {
                            "branches": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_BRANCHES,
                                "description": f"At most {MAX_BRANCHES} lists of steps.",
                                "items": {**_STEP_LIST, "minItems": 1},
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "respond"}}},
                    "then": {
                        "properties": {
                            "status": {
                                "anyOf": [
                                    {"type": "integer", "minimum": 200, "maximum": 599},
                                    {"type": "string"},
                                ]
                            },
                            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                            "body": _ANY,
                        }
                    },
                },
            ],
        },
    },
}


@dataclass(frozen=True)
class Problem:
    """One problem in a document: where (a JSON Pointer such as /steps/2/if) and what."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def _pointer(parts) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in parts) if parts else "/"


@cache
def _validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(WORKFLOW_SCHEMA)
    return TenantValidator(WORKFLOW_SCHEMA)  # RE2 and linear uniqueItems over the tenant's document


def validate(document: object) -> list[Problem]:
    """Every problem in `document`, each with its exact path; an empty list means it is valid."""
    problems = [
        Problem(_pointer(error.absolute_path), error.message) for error in _validator().iter_errors(document)
    ]
    if problems:
        return sorted(problems, key=lambda p: p.path)
    seen: dict[str, str] = {}
    for path, step in _walk(document["steps"], ["steps"]):
        if step["id"] in seen:
            problems.append(
                Problem(path + "/id", f"step id {step['id']!r} is used twice (first at {seen[step['id']]})")
            )
        seen.setdefault(step["id"], path)
        if step["type"] == "code" and (error := code.syntax_error(step["source"])) is not None:
            problems.append(Problem(path + "/source", error))
        if step["type"] in ("wait_for_event", "approval") and "retry" in step:
            problems.append(
                Problem(
                    path + "/retry", f"a {step['type']} step is not retried: on_timeout and on_error decide"
                )
            )
        for field, expression in _expression_fields(step):
            try:
                for inner in expressions_in(expression):
                    jmespath.compile(inner)
            except (ExpressionError, jmespath.exceptions.JMESPathError) as error:
                problems.append(Problem(f"{path}/{field}", f"not a valid expression: {error}"))
    if document["trigger"]["type"] == "schedule":
        problems += _check_cron(document["trigger"].get("cron", ""))
    timezone = document["trigger"].get("timezone")
    if timezone is not None and timezone not in _time_zones():
        problems.append(
            Problem("/trigger/timezone", f"{timezone!r} is not a time zone (e.g. Europe/Berlin, UTC)")
        )
    problems += _flow_problems(document)
    if sum(1 for _ in _walk(document["steps"], ["steps"])) > MAX_STEPS_IN_DOCUMENT:
        problems.append(Problem("/steps", f"at most {MAX_STEPS_IN_DOCUMENT} steps in one workflow"))
    return problems


def _walk(steps: list, prefix: list) -> Iterator[tuple[str, dict]]:
    for index, step in enumerate(steps):
        path = prefix + [index]
        yield _pointer(path), step
        for nested in ("then", "else", "steps", "on_error", "on_timeout"):
            if isinstance(step.get(nested), list):
                yield from _walk(step[nested], path + [nested])
        if step.get("type") == "parallel":
            for branch, branch_steps in enumerate(step.get("branches", [])):
                yield from _walk(branch_steps, path + ["branches", branch])


def calls_in(document: dict) -> Iterator[tuple[str, dict]]:
    """(path, step) of every call_workflow step of a valid document, nested ones included."""
    for path, step in _walk(document["steps"], ["steps"]):
        if step["type"] == "call_workflow":
            yield path, step


def may_wait(document: dict) -> bool:
    """Whether a valid document has a step that can hold its run until later (a wait, an event, an
    approval, a call that waits for its output), wherever it is: such a workflow runs
    asynchronously."""
    return any(
        step["type"] in SUSPENDING_STEP_TYPES or (step["type"] == "call_workflow" and step.get("wait", True))
        for _, step in _walk(document["steps"], ["steps"])
    )


def _flow_problems(document: dict) -> list[Problem]:
    """What the schema cannot say about call_workflow and parallel steps."""
    problems = []
    for path, step in _walk(document["steps"], ["steps"]):
        if step["type"] == "call_workflow":
            if "{{" in step["workflow"]:
                problems.append(Problem(f"{path}/workflow", "name the workflow itself, not a template"))
            if "retry" in step:
                problems.append(
                    Problem(
                        f"{path}/retry",
                        "call_workflow does not retry; give the called workflow's steps a retry",
                    )
                )
        if step["type"] == "respond" and "/branches/" in path:  # inside a parallel step's branch
            problems.append(
                Problem(
                    f"{path}/type",
                    "a branch of a parallel step cannot respond; respond after the parallel step",
                )
            )
    return problems


def _expression_fields(step: dict) -> Iterator[tuple[str, str]]:
    """(field, text) for fields holding a bare expression or templates with {{ }}."""
    if step["type"] == "transform":
        yield "expression", "{{" + step["expression"] + "}}"
    if step["type"] == "condition":
        yield "if", "{{" + step["if"] + "}}"
    if step["type"] == "for_each":
        yield "items", "{{" + step["items"] + "}}"
    for field in ("url", "to", "subject", "body", "until", "title", "details"):
        if isinstance(step.get(field), str):
            yield field, step[field]


def _check_cron(cron: str) -> list[Problem]:
    from datetime import UTC, datetime

    from croniter import CroniterError, croniter

    if not croniter.is_valid(cron):
        return [Problem("/trigger/cron", f"{cron!r} is not a cron expression (e.g. '*/15 * * * *')")]
    try:
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, ValueError):
        return [Problem("/trigger/cron", f"{cron!r} never happens (e.g. 31 February)")]
    return []


@cache
def _time_zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())
