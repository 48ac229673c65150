"""The builder's expression preview: what an expression or template in a draft would give, with
the same engine a run uses (expressions.py, so its functions and limits are the server's own),
against the data of one of the workflow's runs, seen from the place in the draft where it stands.

Expressions are evaluated here rather than by a JMESPath library in the browser so that the value
shown is the value a run computes (custom functions, bounds, template rendering alike)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from jmespath.exceptions import IncompleteExpressionError, JMESPathError, LexerError
from sqlalchemy.orm import Session

from nectar.core.runs import queries as run_queries
from nectar.core.workflows.definition import (
    LOOP_LISTS,
    Scope,
    expression_parts,
    scopes,
)
from nectar.core.workflows.expressions import ExpressionError, check_size, compiled, evaluate, render
from nectar.shared import throttle

MAX_TEXT = 20_000
# A person types a few keys a second; this leaves room for several tabs and still stops a script.
PREVIEWS_PER_USER = throttle.Limit(events=900, window_seconds=60)
EMPTY_TRIGGER = {"body": {}, "query": {}, "params": {}, "headers": {}}


class PreviewRefused(Exception):
    def __init__(self, status: int, detail: str, retry_after: int | None = None):
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


def count_preview(session: Session, user_id) -> None:
    """Counts one preview for the user; refuses past PREVIEWS_PER_USER in a minute."""
    key = f"core.preview:{user_id}"
    if throttle.hit(session, key, PREVIEWS_PER_USER) > PREVIEWS_PER_USER.events:
        raise PreviewRefused(
            429, "Too many previews; wait a moment.", PREVIEWS_PER_USER.seconds_left(time.time())
        )


def sample_data(session: Session, workflow_id: uuid.UUID, run_id: uuid.UUID | None) -> dict:
    """The trigger input and each step's output (its first run, within loops the first iteration)
    of a run of this workflow: the given one, or its newest. Empty when it has none."""
    run = None
    if run_id is not None:
        run = run_queries.get_run(session, run_id)
        if run.workflow_id != workflow_id:
            raise LookupError("no such run of this workflow")
    else:
        newest = run_queries.list_runs(session, workflow_id=workflow_id, limit=1)
        run = newest[0] if newest else None
    if run is None:
        return {"run_id": None, "trigger": EMPTY_TRIGGER, "steps": {}, "vars": {}, "errors": {}}
    steps, variables, errors = {}, {}, {}
    for record in run.steps or []:
        if record["status"] == "failed":
            errors.setdefault(record["step_id"], record.get("error"))
        elif record["step_id"] not in steps:
            steps[record["step_id"]] = record.get("output")
            if record["step_type"] == "set" and isinstance(record.get("output"), dict):
                variables.update(record["output"])
    return {
        "run_id": str(run.id),
        "trigger": run.input or EMPTY_TRIGGER,
        "steps": steps,
        "vars": variables,
        "errors": errors,
    }


def context_at(document: dict, pointer: str, sample: dict) -> tuple[Scope, dict]:
    """The scope at `pointer` (a field of a step) and a run context holding what is in scope
    there, filled from `sample`: the steps before it, `item`/`index` of each loop around it (the
    first item), `error` inside on_error."""
    steps = document.get("steps") if isinstance(document, dict) else None
    steps = steps if isinstance(steps, list) else []
    found = scopes(steps)
    owner = max((p for p in found if pointer == p or pointer.startswith(p + "/")), key=len, default=None)
    scope = found.get(owner, Scope(()))
    context: dict[str, Any] = {
        "trigger": sample["trigger"],
        "steps": {step_id: sample["steps"].get(step_id) for step_id in scope.steps},
        "vars": sample["vars"],
    }
    if owner is None:
        return scope, context
    for name, step in _holders(steps, owner):
        if (step.get("type"), name) in LOOP_LISTS:
            items_text = str(step.get("items", ""))
            try:
                items = evaluate(items_text, context) if len(items_text) <= MAX_TEXT else None
            except (ExpressionError, ValueError, TypeError):
                items = None
            context["item"] = items[0] if isinstance(items, list) and items else None
            context["index"] = 0
        if name == "on_error":
            message = sample["errors"].get(step.get("id")) or "(the failed step's error message)"
            context["error"] = {"step": step.get("id"), "message": message}
    return scope, context


def _holders(steps: list, pointer: str):
    """(list property, step) of each step holding the one at `pointer`, outermost first."""
    parts = pointer.split("/")[1:]
    value: Any = {"steps": steps}
    for i, part in enumerate(parts):
        key = int(part) if part.isdigit() else part
        if (
            isinstance(value, dict)
            and i + 1 < len(parts)
            and isinstance(value.get(key), list)
            and "id" in value
        ):
            yield key, value
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return


def preview(text: str, bare: bool, context: dict) -> dict:
    """The value of `text` (one JMESPath expression, or a template with {{ }}) over `context`, or
    the error, with the character where a parse error is when there is one."""
    if len(text) > MAX_TEXT:
        return {"error": f"longer than {MAX_TEXT:,} characters", "position": None}
    for offset, expression in expression_parts(text, bare):
        try:
            compiled(expression)
        except ExpressionError as error:  # nested past the parser
            return {"error": str(error), "position": offset}
        except JMESPathError as error:
            position = getattr(error, "lex_position", None)
            where = offset + position if isinstance(position, int) else None
            return {
                "error": _parse_message(error) + (f" at character {where + 1}" if where is not None else ""),
                "position": where,
            }
    try:
        value = evaluate(text, context) if bare else render(text, context)
        check_size(value, "the value")
    except ExpressionError as error:
        return {"error": str(error), "position": None}
    except (ValueError, TypeError) as error:  # JMESPath's functions on the wrong types
        return {"error": str(error), "position": None}
    return {"value": value}


def _parse_message(error: JMESPathError) -> str:
    """A person's words for a parse error (JMESPath's own list the tokens it expected)."""
    if isinstance(error, IncompleteExpressionError):
        return "the expression is not finished"
    if isinstance(error, LexerError):
        return error.message  # e.g. Unclosed ' delimiter
    token = getattr(error, "token_value", None)
    return f"unexpected {token!r}" if token else "the expression ends too soon"
