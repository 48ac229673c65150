"""The workflow document: a published JSON Schema plus the checks a schema cannot express.

A workflow is a trigger and a list of steps. Steps run in order; `condition` and `for_each` hold
nested step lists; any step may name an `on_error` list and a `retry` policy; `wait_for_event` and
`approval` may name an `on_timeout` list. Values are JSON, and strings may embed expressions in
`{{ ... }}` (JMESPath over the run's context, see expressions.py); a string that is exactly one
`{{ ... }}` keeps the expression's JSON type.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

import jmespath
from jsonschema import Draft202012Validator

from nectar.core.workflows import code
from nectar.core.workflows.expressions import ExpressionError, compiled, template_parts
from nectar.core.workflows.json_schema import TenantValidator, pointer
from nectar.shared.rejection import Problem  # noqa: F401 - where the workflow language's problems come from

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
    # Served at /schemas/workflow-v1.json, whose address in each deployment becomes its $id.
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
                "type": {
                    "enum": ["http", "manual", "schedule"],
                    "description": "What starts a run: an endpoint call, a person (or the API), or a schedule.",
                },
                "cron": {
                    "type": "string",
                    "maxLength": 100,
                    "description": "When a scheduled workflow runs, e.g. */15 * * * * (every 15 minutes).",
                },
                "timezone": {
                    "type": "string",
                    "maxLength": 64,
                    "description": "The cron's time zone, e.g. Europe/Berlin (default UTC).",
                },
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
                "attempts": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10,
                    "default": 1,
                    "description": "How many times to try in all.",
                },
                "backoff_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 300,
                    "default": 1,
                    "description": "The pause before the second try.",
                },
                "multiplier": {
                    "type": "number",
                    "minimum": 1,
                    "maximum": 10,
                    "default": 2,
                    "description": "Each later pause is this many times the one before.",
                },
            },
        },
        "step": {
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]{0,63}$",
                    "description": "Unique in the workflow: lower-case letters, digits and _; later steps "
                    "read this step's output as steps.<id>.",
                },
                "type": {"enum": list(STEP_TYPES), "description": "What the step does."},
                "name": {"type": "string", "maxLength": 200, "description": "A label for people."},
                "retry": {"$ref": "#/$defs/retry", "description": "Try the step again when it fails."},
                "on_error": {
                    **_STEP_LIST,
                    "description": "Steps run when this step fails (after its retries), with `error` in scope; "
                    "the run then goes on.",
                },
            },
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "http_request"}}},
                    "then": {
                        "description": "Calls an HTTP API, at a URL or as an operation of a connector imported "
                        "from an OpenAPI document. The output is the answer: status, headers and body "
                        "(JSON when the answer is JSON). An answer of 400 or more fails the step.",
                        "if": {"not": {"required": ["operation"]}},
                        "then": {"required": ["url"]},
                        "properties": {
                            "method": {
                                "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                                "default": "GET",
                                "description": "The HTTP method.",
                            },
                            "url": {
                                "type": "string",
                                "maxLength": 2000,
                                "description": "The address to call, e.g. https://api.example.com/orders/{{ trigger.params.id }}.",
                            },
                            "headers": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                                "description": "Request headers; values may hold {{ }} templates.",
                            },
                            "query": {
                                "type": "object",
                                "description": "Query string parameters, added to the URL.",
                            },
                            "body": {
                                **_ANY,
                                "description": "The JSON body to send; strings may hold {{ }} templates.",
                            },
                            "connection": {
                                "type": "string",
                                "maxLength": 100,
                                "description": "The name of a connection (Connections page) whose credentials sign the request.",
                            },
                            "connector": {
                                "type": "string",
                                "maxLength": 100,
                                "description": "The name of a connector imported from an OpenAPI document (Connectors "
                                "page) whose `operation` the step calls; a connection bound to it may name it instead.",
                            },
                            "operation": {
                                "type": "string",
                                "maxLength": 200,
                                "description": "The operationId to call, instead of `url` and `method`; `path_params`, "
                                "`query` and `body` are checked against the operation when the workflow is saved "
                                "and again before the call.",
                            },
                            "path_params": {
                                "type": "object",
                                "description": 'Values of the operation\'s path parameters, e.g. {"petId": '
                                '"{{ trigger.params.id }}"}.',
                            },
                            "timeout_seconds": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 30,
                                "default": 10,
                                "description": "How long to wait for the answer, in seconds.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "transform"}}},
                    "then": {
                        "description": "Computes a value from the run's data with a JMESPath expression; the "
                        "value is the step's output.",
                        "required": ["expression"],
                        "properties": {
                            "expression": {
                                "type": "string",
                                "maxLength": 2000,
                                "format": "jmespath",
                                "description": "A JMESPath expression, e.g. length(trigger.body.items).",
                            }
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "condition"}}},
                    "then": {
                        "description": "Runs the `then` steps when the expression is true, the `else` steps "
                        "otherwise (false, null, 0-length text, list or object are false).",
                        "required": ["if", "then"],
                        "properties": {
                            "if": {
                                "type": "string",
                                "maxLength": 2000,
                                "format": "jmespath",
                                "description": "A JMESPath expression, e.g. trigger.body.total > `100`.",
                            },
                            "then": {**_STEP_LIST, "description": "Steps run when the expression is true."},
                            "else": {**_STEP_LIST, "description": "Steps run when it is false."},
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "for_each"}}},
                    "then": {
                        "description": "Runs its steps once per item of a list, with `item` and `index` in "
                        "scope; the output is the list of each iteration's last step output.",
                        "required": ["items", "steps"],
                        "properties": {
                            "items": {
                                "type": "string",
                                "maxLength": 2000,
                                "format": "jmespath",
                                "description": "A JMESPath expression giving a list, e.g. trigger.body.orders.",
                            },
                            "steps": {**_STEP_LIST, "description": "Steps run for each item."},
                            "max_items": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_FOR_EACH_ITEMS,
                                "default": MAX_FOR_EACH_ITEMS,
                                "description": "More items than this fails the step.",
                            },
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "set"}}},
                    "then": {
                        "description": "Sets run variables, read later as vars.<name>.",
                        "required": ["values"],
                        "properties": {
                            "values": {
                                "type": "object",
                                "description": "Names and values; strings may hold {{ }} templates.",
                            }
                        },
                    },
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
                        "description": "Pauses an asynchronous run for a number of seconds (up to a day).",
                        "required": ["seconds"],
                        "properties": {
                            "seconds": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": 86400,
                                "description": "How long to pause.",
                            }
                        },
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "send_email"}}},
                    "then": {
                        "description": "Sends a plain-text email through the organization's outbox.",
                        "required": ["to", "subject", "body"],
                        "properties": {
                            "to": {
                                "type": "string",
                                "maxLength": 320,
                                "description": "The address, e.g. {{ trigger.body.email }}.",
                            },
                            "subject": {
                                "type": "string",
                                "maxLength": 300,
                                "description": "The subject line.",
                            },
                            "body": {
                                "type": "string",
                                "maxLength": 20000,
                                "description": "The message text.",
                            },
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
                                "contentMediaType": "text/javascript",
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
                        "document order. A branch works on a copy of the context and sees none of the other "
                        "branches' steps; after the step, the outputs of every branch's steps are there and "
                        "the vars each branch sets are merged in document order.",
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
                        "description": "Answers the endpoint's caller and ends the run.",
                        "properties": {
                            "status": {
                                "anyOf": [
                                    {"type": "integer", "minimum": 200, "maximum": 599},
                                    {"type": "string"},
                                ],
                                "default": 200,
                                "description": "The HTTP status, 200 to 599 (or a {{ }} template giving one).",
                            },
                            "headers": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                                "description": "Response headers.",
                            },
                            "body": {
                                **_ANY,
                                "description": "The JSON answer; strings may hold {{ }} templates.",
                            },
                        },
                    },
                },
            ],
        },
    },
}


def _pointer(parts) -> str:
    return pointer(parts) or "/"


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
    if too_many_steps(document["steps"]):  # before any work that grows with the steps
        return [Problem("/steps", f"at most {MAX_STEPS_IN_DOCUMENT} steps in one workflow")]
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
    problems += _expression_problems(document["steps"], seen)
    if document["trigger"]["type"] == "schedule":
        problems += _check_cron(document["trigger"].get("cron", ""))
    timezone = document["trigger"].get("timezone")
    if timezone is not None and timezone not in _time_zones():
        problems.append(
            Problem("/trigger/timezone", f"{timezone!r} is not a time zone (e.g. Europe/Berlin, UTC)")
        )
    problems += _flow_problems(document)
    return problems


# How nested step lists see the run's context (engine.py): a loop's steps work on a copy (their
# outputs stay inside) and see `item` and `index`; a parallel step's branches see none of each
# other's steps, whose outputs are all there after it; the steps run after a step ended badly
# (on_error, on_timeout) see that step's id, set to null.
LOOP_LISTS = frozenset({("for_each", "steps")})
HANDLER_LISTS = frozenset({"on_error", "on_timeout"})
STEP_REF = "#/$defs/step"


@dataclass(frozen=True)
class Scope:
    """What an expression in a step's fields can read: the steps whose outputs are in `steps` (in
    document order), and whether `item`/`index` (inside a loop) and `error` (on_error) are there."""

    steps: tuple[str, ...]
    loop: bool = False
    error: bool = False


def step_properties(kind: str) -> dict[str, dict]:
    """The schema of each property a step of type `kind` may have (common ones included)."""
    return _step_properties().get(kind, {})


@cache
def _step_properties() -> dict[str, dict[str, dict]]:
    step = WORKFLOW_SCHEMA["$defs"]["step"]
    result = {}
    for kind in STEP_TYPES:
        properties = dict(step["properties"])
        for rule in step["allOf"]:
            if rule.get("if", {}).get("properties", {}).get("type", {}).get("const") == kind:
                properties.update(rule["then"].get("properties", {}))
        result[kind] = properties
    return result


def step_list_depth(schema: dict) -> int:
    """1 for a property that is a list of steps, 2 for a list of such lists (parallel branches),
    0 otherwise: nested steps are found from the schema, so a new step type's lists are too."""
    items = schema.get("items", {})
    if items.get("$ref") == STEP_REF:
        return 1
    return 2 if items.get("items", {}).get("$ref") == STEP_REF else 0


@cache
def _nested_lists(kind: str) -> tuple[tuple[str, int], ...]:
    return tuple(
        (name, depth) for name, schema in step_properties(kind).items() if (depth := step_list_depth(schema))
    )


def step_lists(step: dict) -> Iterator[tuple[list, list, str]]:
    """(path parts below the step, the steps, the property) of each step list a step holds."""
    kind = step.get("type")
    for name, depth in _nested_lists(kind) if kind in STEP_TYPES else ():
        value = step.get(name)
        if not isinstance(value, list):
            continue
        if depth == 1:
            yield [name], value, name
        else:
            for index, inner in enumerate(value):
                if isinstance(inner, list):
                    yield [name, index], inner, name


def _walk(steps: list, prefix: list) -> Iterator[tuple[str, dict]]:
    for index, step in enumerate(steps):
        path = prefix + [index]
        yield _pointer(path), step
        for parts, inner, _name in step_lists(step):
            yield from _walk(inner, path + parts)


def calls_in(document: dict) -> Iterator[tuple[str, dict]]:
    """(path, step) of every call_workflow step of a valid document, nested ones included."""
    for path, step in _walk(document["steps"], ["steps"]):
        if step["type"] == "call_workflow":
            yield path, step


def operation_calls_in(document: dict) -> Iterator[tuple[str, dict]]:
    """(path, step) of every http_request step of a valid document that calls an operation of an
    imported connector, nested ones included."""
    for path, step in _walk(document["steps"], ["steps"]):
        if step["type"] == "http_request" and "operation" in step:
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
        if step["type"] == "http_request":
            problems += _operation_step_problems(path, step)
        if step["type"] == "respond" and "/branches/" in path:  # inside a parallel step's branch
            problems.append(
                Problem(
                    f"{path}/type",
                    "a branch of a parallel step cannot respond; respond after the parallel step",
                )
            )
    return problems


def _operation_step_problems(path: str, step: dict) -> list[Problem]:
    """An http_request step calls a URL or an imported operation, not a mix of both."""
    if "operation" not in step:
        return [
            Problem(f"{path}/{field}", f"{field} goes with operation, which this step does not name")
            for field in ("connector", "path_params")
            if field in step
        ]
    problems = [
        Problem(f"{path}/{field}", f"the operation decides the {field}; remove it or remove operation")
        for field in ("url", "method")
        if field in step
    ]
    if "connector" not in step and "connection" not in step:
        problems.append(
            Problem(f"{path}/operation", "name the connector (or a connection bound to it) of this operation")
        )
    return problems


def scopes(steps: list) -> dict[str, Scope]:
    """The scope of each step's fields, by the step's JSON Pointer. A document being edited may be
    invalid: what is not a step is passed over."""
    found: dict[str, Scope] = {}
    if not too_many_steps(steps):  # a draft past the limit has no scopes: they grow with its square
        _scope_steps(steps, ["steps"], Scope(()), found)
    return found


def too_many_steps(steps: list, most: int = MAX_STEPS_IN_DOCUMENT) -> bool:
    """Whether `steps` holds more than `most` steps, nested ones included: counted only that far, so
    a hostile document costs no more than a full one."""
    pending, count = [steps], 0
    while pending:
        for step in pending.pop():
            if isinstance(step, dict):
                count += 1
                if count > most:
                    return True
                pending += [inner for _, inner, _ in step_lists(step)]
    return False


def _scope_steps(steps: list, prefix: list, outer: Scope, found: dict[str, Scope]) -> list[str]:
    """Records the scope of each step of `steps`; returns the ids visible after them."""
    added: list[str] = []
    for index, step in enumerate(steps):
        path = prefix + [index]
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            continue
        here = Scope(outer.steps + tuple(added), outer.loop, outer.error)
        found[_pointer(path)] = here
        own: list[str] = []  # what the step's own lists leave in the context
        # Handlers run after the rest of the step (a parallel step's branches, a condition's branch):
        # they see what those left, and the step's id.
        for parts, inner, name in sorted(step_lists(step), key=lambda entry: entry[2] in HANDLER_LISTS):
            handler = name in HANDLER_LISTS
            inner_scope = Scope(
                here.steps + ((*own, step["id"]) if handler else ()),
                here.loop or (step["type"], name) in LOOP_LISTS,
                here.error or name == "on_error",
            )
            inner_added = _scope_steps(inner, path + parts, inner_scope, found)
            if (step["type"], name) not in LOOP_LISTS:
                own += inner_added
        added += own
        added.append(step["id"])
    return added


def step_expressions(step: dict) -> Iterator[tuple[list, str, bool]]:
    """(path parts below the step, text, bare) of each expression a step holds: fields whose schema
    says `"format": "jmespath"` are one bare expression; other strings (nested ones too, but not
    step lists or code) may hold {{ }} templates."""
    properties = step_properties(step["type"])
    lists = {name for name, _ in _nested_lists(step["type"])}
    for name, value in step.items():
        schema = properties.get(name, {})
        if name in ("id", "type", "name", "retry") or name in lists or "contentMediaType" in schema:
            continue
        if schema.get("format") == "jmespath":
            if isinstance(value, str):
                yield [name], value, True
            continue
        pending = [([name], value)]
        while pending:  # a stack, not recursion: a body may nest deeply
            parts, item = pending.pop()
            if isinstance(item, str) and "{{" in item:
                yield parts, item, False
            elif isinstance(item, dict):
                pending += [(parts + [key], inner) for key, inner in reversed(item.items())]
            elif isinstance(item, list):
                pending += [(parts + [i], inner) for i, inner in reversed(list(enumerate(item)))]


def expression_parts(text: str, bare: bool) -> list[tuple[int, str]]:
    """(offset in `text`, expression) of each expression: the whole of a bare one, or each {{ }}."""
    return [(0, text)] if bare else list(template_parts(text))


def root_references(node: dict) -> Iterator[tuple[str, str | None]]:
    """(name, next name) of each name a parsed JMESPath expression reads from the run's context
    itself, e.g. ("steps", "fetch") for `length(steps.fetch.body)`; not those read from values
    inside it (`trigger.items[*].name` reads only ("trigger", "items"))."""
    pending = [(node, True)]
    while pending:
        node, at_root = pending.pop()
        kind, children = node.get("type"), node.get("children", [])
        if kind == "field":
            if at_root:
                yield node["value"], None
        elif kind == "subexpression":
            while at_root and len(children) > 1 and children[0].get("type") == "current":
                children = children[1:]  # @.steps.x reads from the context itself
            if at_root and children and children[0].get("type") == "field":
                yield children[0]["value"], _first_field(children[1]) if len(children) > 1 else None
                pending += [(child, False) for child in children[1:]]
            else:
                pending += [(children[0], at_root)] + [(child, False) for child in children[1:]]
        elif kind in ("index_expression", "projection", "value_projection", "filter_projection", "pipe"):
            pending += [(children[0], at_root)] + [(child, False) for child in children[1:]]
        elif kind == "expref":
            pending += [(child, False) for child in children]
        else:  # functions, comparisons, and/or/not, multi-selects, flatten: on the same value
            pending += [(child, at_root) for child in children]


def _first_field(node: dict) -> str | None:
    while node.get("type") in ("subexpression", "index_expression", "projection", "filter_projection"):
        node = node["children"][0]
    return node["value"] if node.get("type") == "field" else None


# The roots an expression reads an organization's own values from (nectar.core.variables): `vars`
# holds its variables, with what the run's `set` steps set laid over them; `secrets` its secrets.
ORGANIZATION_ROOTS = ("vars", "secrets")
# What an organization's variable may be named (as the organization_variables table checks; the
# workflow language imports nothing of the schema). `vars.name` with any other name is the run's
# own (a `set` step's, null until set), as it always was: documents saved before organizations
# had variables read so, and keep working.
ORGANIZATION_NAME_PATTERN = "^[A-Z_][A-Z0-9_]{0,63}$"
_ORGANIZATION_NAME = re.compile(ORGANIZATION_NAME_PATTERN)
# In a code step's JavaScript, which gets the context as `ctx`.
_CODE_REFERENCE = re.compile(r"\bctx\s*\.\s*(vars|secrets)\s*\.\s*([A-Za-z_$][A-Za-z0-9_$]*)")


@dataclass(frozen=True)
class OrganizationReference:
    """A step's read of one of its organization's variables (`vars.NAME`) or secrets
    (`secrets.NAME`). `local`: a `set` step of the document sets that name too, so the run may
    have it whether or not the organization does."""

    step: str  # the step's id
    path: str  # the JSON Pointer of the field that reads it
    root: str  # "vars" (a name an organization's variable may have) or "secrets" (any name)
    name: str
    local: bool = False

    def __str__(self) -> str:
        return f"{self.root}.{self.name}"


def organization_references(document: dict) -> list[OrganizationReference]:
    """Every read of a named variable or secret in a valid document, in document order: in
    expressions and templates, and in code steps' `ctx.vars.NAME`/`ctx.secrets.NAME`. A whole
    `vars` or `secrets` (no name) is not one: it holds only what named reads brought."""
    walked = list(_walk(document["steps"], ["steps"]))
    local = {
        name
        for _, step in walked
        if step["type"] == "set" and isinstance(step.get("values"), dict)
        for name in step["values"]
    }
    found: list[OrganizationReference] = []
    for path, step in walked:
        for parts, text, bare in step_expressions(step):
            if "vars" not in text and "secrets" not in text:
                continue  # most fields read neither: no parsing
            where = _pointer([*_parts_of(path), *parts])
            for _offset, expression in expression_parts(text, bare):
                try:
                    parsed = compiled(expression).parsed
                except (ExpressionError, jmespath.exceptions.JMESPathError):
                    continue  # validate() reports it
                for name, next_name in root_references(parsed):
                    if _organizations(name, next_name):
                        found.append(
                            OrganizationReference(
                                step["id"], where, name, next_name, name == "vars" and next_name in local
                            )
                        )
        if step["type"] == "code" and isinstance(step.get("source"), str):
            for match in _CODE_REFERENCE.finditer(step["source"]):
                root, name = match.groups()
                if not _organizations(root, name):
                    continue
                found.append(
                    OrganizationReference(
                        step["id"], path + "/source", root, name, root == "vars" and name in local
                    )
                )
    return found


def _organizations(root: str, name: str | None) -> bool:
    """Whether `root.name` reads one of the organization's variables or secrets."""
    if root == "secrets":
        return name is not None
    return root == "vars" and name is not None and _ORGANIZATION_NAME.fullmatch(name) is not None


def organization_reference_problems(
    document: dict, variables: Iterable[str], secrets: Iterable[str]
) -> list[Problem]:
    """A problem for each read of a variable or secret the organization does not have (and no
    `set` step sets), naming the step and the name."""
    have = {"vars": set(variables), "secrets": set(secrets)}
    problems = []
    for reference in organization_references(document):
        if reference.local or reference.name in have[reference.root]:
            continue
        kind = "variable" if reference.root == "vars" else "secret"
        close = difflib.get_close_matches(reference.name, sorted(have[reference.root]), n=1)
        hint = f" (did you mean {reference.root}.{close[0]}?)" if close else ""
        problems.append(
            Problem(
                reference.path,
                f"step {reference.step!r} reads {reference}, but this organization has no {kind} "
                f"named {reference.name!r}{hint}",
            )
        )
    return problems


MAX_EXPRESSION_PROBLEMS = 100


def _expression_problems(steps: list, pointers: dict[str, str]) -> list[Problem]:
    """Expressions that do not parse, and names they read that are not there where they run: a
    step that does not exist, comes later or runs inside a loop; item/index outside loops; error
    outside on_error."""
    problems = []
    order = {step_id: n for n, step_id in enumerate(pointers)}
    for path, scope in scopes(steps).items():
        step = _step_at(steps, path)
        for parts, text, bare in step_expressions(step):
            where = _pointer([*_parts_of(path), *parts])
            for _offset, expression in expression_parts(text, bare):
                try:
                    parsed = compiled(expression).parsed
                except ExpressionError as error:  # nested past the parser
                    problems.append(Problem(where, str(error)))
                    continue
                except jmespath.exceptions.JMESPathError as error:
                    problems.append(Problem(where, f"not a valid expression: {error}"))
                    continue
                for name, next_name in root_references(parsed):
                    message = _reference_problem(name, next_name, scope, path, pointers, order, step["id"])
                    if message:
                        problems.append(Problem(where, message))
            if len(problems) >= MAX_EXPRESSION_PROBLEMS:  # enough to act on; the rest cost time only
                return problems
    return problems


def _reference_problem(name, next_name, scope: Scope, path: str, pointers, order, own_id) -> str | None:
    if name in ("item", "index") and not scope.loop:
        return f"`{name}` is only there inside a for_each step's steps"
    if name == "error" and not scope.error:
        return "`error` is only there inside on_error steps"
    if name != "steps" or next_name is None or next_name in scope.steps:
        return None
    if next_name == own_id:
        return f"steps.{next_name} is this step's own output, which is not there until it has finished"
    if next_name not in pointers:
        close = difflib.get_close_matches(next_name, list(pointers), n=1)
        return f"there is no step {next_name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if path.startswith(pointers[next_name] + "/"):
        return f"steps.{next_name} is not there until step {next_name!r}, which holds this one, has finished"
    if order[next_name] > order[own_id]:
        return (
            f"step {next_name!r} runs after this one ({pointers[next_name]}), so its output is not there yet"
        )
    return (
        f"step {next_name!r} runs inside a loop or parallel branch ({pointers[next_name]}); its output is "
        "only there inside it (read the loop's or parallel step's output instead)"
    )


def _parts_of(pointer: str) -> list:
    return [
        int(p) if p.isdigit() else p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]
    ]


def _step_at(steps: list, pointer: str) -> dict:
    value: object = {"steps": steps}
    for part in _parts_of(pointer):
        value = value[part]  # type: ignore[index]
    return value  # type: ignore[return-value]


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
