"""Running a workflow document: pure logic over injected effects (HTTP, email, sleep, clock), so it
is tested without a server and the same code serves endpoint calls and background runs.

The context every expression sees: `trigger` (the input), `steps` (each finished step's output by
id), `vars` (set by `set` steps), and inside loops `item` and `index`, inside `on_error` `error`.
Any failure becomes a failed run with a clear error; nothing here raises to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from nectar.core.workflows import time_limit
from nectar.core.workflows.definition import MAX_FOR_EACH_ITEMS
from nectar.core.workflows.expressions import ExpressionError, check_size, evaluate, json_bytes, render
from nectar.core.workflows.outbound import OutboundRefused


@dataclass(frozen=True)
class Limits:
    max_steps: int = 200  # steps executed, loop iterations and retries included
    time_limit_seconds: float = 10.0
    max_recorded_bytes: int = 16 * 1024  # per step input/output kept in the run record


SYNC_LIMITS = Limits()
ASYNC_LIMITS = Limits(max_steps=2000, time_limit_seconds=900.0)


class Effects(Protocol):
    def http(self, step: dict, request: dict) -> dict: ...

    def email(self, to: str, subject: str, body: str) -> dict:
        """Queues the message (or refuses it, raising); returns the step's output."""

    def sleep(self, seconds: float) -> None: ...


@dataclass
class StepRecord:
    step_id: str
    step_type: str
    position: int
    attempt: int
    status: str
    input: Any
    output: Any
    error: str | None
    started_at: datetime
    finished_at: datetime


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class RunOutcome:
    status: str  # succeeded | failed
    output: Any
    error: str | None
    response: Response | None
    steps: list[StepRecord]
    started_at: datetime
    finished_at: datetime

    @property
    def duration_ms(self) -> int:
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class StepFailed(Exception):
    """A step failed: its retries and on_error branch decide what happens to the run."""


class RunStopped(Exception):
    """A limit was reached or the document cannot run in this mode: the run fails as a whole."""


class _Responded(Exception):
    def __init__(self, response: Response):
        self.response = response


def truncate(value: Any, limit: int) -> Any:
    """Keeps a value whole when its JSON fits `limit` bytes; otherwise a marked preview."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) * 12 < limit:
        return value  # fits however it is escaped (12 bytes at most per character, a surrogate pair)
    try:
        data = json_bytes(value)
    except Exception as error:  # noqa: BLE001 - a record must not fail its run
        return {"truncated": True, "bytes": None, "preview": f"(not representable as JSON: {error})"}
    if len(data) <= limit:
        return value
    return {"truncated": True, "bytes": len(data), "preview": data[: limit // 2].decode(errors="ignore")}


class Run:
    def __init__(
        self,
        definition: dict,
        trigger: dict,
        effects: Effects,
        limits: Limits,
        mode: str,
        clock: Callable[[], float],
        deadline: float | None = None,
    ):
        self.definition, self.effects, self.limits, self.mode, self.clock = (
            definition,
            effects,
            limits,
            mode,
            clock,
        )
        self.context: dict[str, Any] = {"trigger": trigger, "steps": {}, "vars": {}}
        self.records: list[StepRecord] = []
        self.executed = 0
        self.deadline = clock() + limits.time_limit_seconds if deadline is None else deadline
        self.last_output: Any = None

    def execute(self) -> RunOutcome:
        started = datetime.now(UTC)
        status, error, response = "succeeded", None, None
        try:
            with time_limit.within(self.deadline, self.limits.time_limit_seconds, self.clock):
                self.run_steps(self.definition["steps"], self.context)
        except _Responded as responded:
            response = responded.response
        except (StepFailed, RunStopped) as failure:
            status, error = "failed", str(failure)
        records = [
            record for record in self.records if record is not None
        ]  # a limit can stop a step before its record
        return RunOutcome(status, self.last_output, error, response, records, started, datetime.now(UTC))

    def run_steps(self, steps: list[dict], context: dict) -> None:
        for step in steps:
            self.run_step(step, context)

    def run_step(self, step: dict, context: dict) -> None:
        retry = step.get("retry", {})
        attempts = retry.get("attempts", 1)
        delay = retry.get("backoff_seconds", 1.0)
        for attempt in range(1, attempts + 1):
            self._count_step()
            started = datetime.now(UTC)
            position = len(self.records)
            self.records.append(None)  # a step's record comes before those of the steps it runs
            step_input = None
            try:
                step_input, output = self._perform(step, context)
            except _Responded as responded:
                body = responded.response.body
                self._record(position, step, attempt, "succeeded", step_input, body, None, started)
                raise
            except time_limit.TimeLimitExceeded as stopped:  # mid-step: no retry or on_error can help
                self._record(position, step, attempt, "failed", step_input, None, str(stopped), started)
                raise RunStopped(str(stopped)) from None
            except (StepFailed, ExpressionError, OutboundRefused, ValueError, TypeError) as failure:
                self._record(position, step, attempt, "failed", step_input, None, str(failure), started)
                if attempt < attempts:
                    self._wait(delay)
                    delay *= retry.get("multiplier", 2.0)
                    continue
                self._handle_failure(step, context, failure)
                return
            try:
                check_size(output, f"step {step['id']!r}'s output")
                check_size(context["vars"], "the run's vars")
            except ExpressionError as failure:
                self._record(position, step, attempt, "failed", step_input, None, str(failure), started)
                raise StepFailed(str(failure)) from None
            self._record(position, step, attempt, "succeeded", step_input, output, None, started)
            context["steps"][step["id"]] = output
            self.last_output = output
            return

    def _handle_failure(self, step: dict, context: dict, failure: Exception) -> None:
        message = f"step {step['id']!r} ({step['type']}) failed: {failure}"
        if "on_error" not in step:
            raise StepFailed(message)
        context["error"] = {"step": step["id"], "message": str(failure)}
        context["steps"][step["id"]] = None
        self.run_steps(step["on_error"], context)
        context.pop("error", None)

    def _count_step(self) -> None:
        self.executed += 1
        if self.executed > self.limits.max_steps:
            raise RunStopped(f"the run exceeded its limit of {self.limits.max_steps} steps")
        if self.clock() > self.deadline:
            raise RunStopped(f"the run exceeded its time limit of {self.limits.time_limit_seconds:g} s")

    def _wait(self, seconds: float) -> None:
        if self.clock() + seconds > self.deadline:
            raise RunStopped(
                f"waiting {seconds:g} s would pass the run's time limit of {self.limits.time_limit_seconds:g} s"
            )
        self.effects.sleep(seconds)

    def _record(self, position, step, attempt, status, step_input, output, error, started) -> None:
        limit = self.limits.max_recorded_bytes
        self.records[position] = StepRecord(
            step_id=step["id"],
            step_type=step["type"],
            position=position,
            attempt=attempt,
            status=status,
            input=truncate(step_input, limit),
            output=truncate(output, limit),
            error=error,
            started_at=started,
            finished_at=datetime.now(UTC),
        )

    def _perform(self, step: dict, context: dict) -> tuple[Any, Any]:
        kind = step["type"]
        if kind == "transform":
            return {"expression": step["expression"]}, evaluate(step["expression"], context)
        if kind == "set":
            values = render(step["values"], context)
            context["vars"].update(values)
            return values, values
        if kind == "condition":
            value = evaluate(step["if"], context)
            branch = "then" if _truthy(value) else "else"
            self.run_steps(step.get(branch, []), context)
            return {"if": step["if"], "value": value}, {"branch": branch}
        if kind == "for_each":
            return self._for_each(step, context)
        if kind == "http_request":
            request = {
                "method": step.get("method", "GET"),
                "url": render(step["url"], context),
                "headers": render(step.get("headers", {}), context),
                "query": render(step.get("query"), context),
                "body": render(step.get("body"), context),
                "timeout_seconds": min(
                    step.get("timeout_seconds", 10), max(0.1, self.deadline - self.clock())
                ),
            }
            result = self.effects.http(step, request)
            if result["status"] >= 400:
                raise StepFailed(f"{request['method']} {request['url']} answered {result['status']}")
            return {k: v for k, v in request.items() if k != "headers"}, result
        if kind == "send_email":
            message = {key: str(render(step[key], context)) for key in ("to", "subject", "body")}
            return message, self.effects.email(message["to"], message["subject"], message["body"])
        if kind == "delay":
            if self.mode != "async":
                raise RunStopped(
                    "a delay step needs an asynchronous run (manual or scheduled), not an endpoint call"
                )
            self._wait(float(step["seconds"]))
            return {"seconds": step["seconds"]}, {"waited": step["seconds"]}
        if kind == "respond":
            status = render(step.get("status", 200), context)
            try:
                status = int(status)
            except (TypeError, ValueError):
                raise StepFailed(f"status must be a number, got {status!r}") from None
            if not 200 <= status <= 599:  # 1xx are not final answers
                raise StepFailed(f"status must be 200-599, got {status}")
            headers = {str(k): str(v) for k, v in render(step.get("headers", {}), context).items()}
            body = render(step.get("body"), context)
            context["steps"][step["id"]] = body
            self.last_output = body
            raise _Responded(Response(status, headers, body))
        raise RunStopped(f"unknown step type {kind!r}")

    def _for_each(self, step: dict, context: dict) -> tuple[Any, Any]:
        items = evaluate(step["items"], context)
        if not isinstance(items, list):
            raise StepFailed(f"items must be a list, got {type(items).__name__}")
        cap = step.get("max_items", MAX_FOR_EACH_ITEMS)
        if len(items) > cap:
            raise StepFailed(f"{len(items)} items is more than this loop's limit of {cap}")
        results = []
        for index, item in enumerate(items):
            inner = {**context, "item": item, "index": index, "steps": dict(context["steps"])}
            self.run_steps(step["steps"], inner)
            last = step["steps"][-1]["id"] if step["steps"] else None
            results.append(inner["steps"].get(last) if last else None)
            context["vars"] = inner["vars"]
        return {"items": len(items)}, results


def _truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string, list and object are false."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True  # numbers, 0 included, are true in JMESPath


def execute(
    definition: dict,
    trigger: dict,
    effects: Effects,
    *,
    limits: Limits = SYNC_LIMITS,
    mode: str = "sync",
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
) -> RunOutcome:
    """Runs `definition` with `trigger` as input. Never raises: failures are a failed outcome.
    The run ends by `deadline` (a `clock()` time) when given, for a call whose time limit began
    before the run (its body was checked first); by the limit from now otherwise."""
    return Run(definition, trigger, effects, limits, mode, clock, deadline).execute()
