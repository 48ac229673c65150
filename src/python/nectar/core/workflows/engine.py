"""Running a workflow document: pure logic over injected effects (HTTP, email, sleep, clock), so it
is tested without a server and the same code serves endpoint calls and background runs.

The context every expression sees: `trigger` (the input), `steps` (each finished step's output by
id), `vars` (the organization's variables the document names, with what `set` steps set laid
over them), `secrets` (the organization's secrets it names), and inside loops `item` and `index`,
inside `on_error` `error`. Any failure becomes a failed run with a clear error; nothing here raises
to the caller. Secrets' values never leave a run in what it records or answers: records, errors,
the output, the response, journaled outputs and a called run's input hold "***" in their place.

Durable runs (asynchronous ones) replay: each activation executes the document from the start,
and every step with an outside effect or a wait first asks the run's `Journal` whether it has
finished before. If it has, its recorded output stands in for doing it again; if not, it is done
and saved to the journal before the run goes on. Everything between those steps is a pure
function of the trigger and the journal, so a run resumed on any worker after any crash reaches
the same point with the same context, and repeats no email or request it had recorded. A wait
that is not over yet ends the activation as `waiting`, holding no worker.

What reaches a run from outside comes through its `Inbox`: a `wait_for_event` step takes the
earliest event of its name, an `approval` step reads the decision made on it, and either keeps
what it got (or that its time ran out) in its checkpoint, so replays take the same path. Earlier
steps can hand a `wait_for_event` step's resume URL to an outside system: the context holds it as
`resume_urls.<step id>`. A cancelled run stops before its next step that acts or waits.

The branches of a `parallel` step run on threads of their own in asynchronous runs, but take turns
running engine code (one lock per run): a branch lets the others go on only while it waits for an
HTTP answer, a retry's backoff or branches of its own. So everything else, the journal and the
effects that write to the run's transaction included, runs one branch at a time, and a step's
effect and its checkpoint still commit together. Each branch works on its own copy of the context
and keeps its own records, joined in document order when every branch has ended or suspended.
"""

from __future__ import annotations

import contextvars
import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

from nectar.core.workflows import code, time_limit
from nectar.core.workflows.definition import (
    DEFAULT_SIGNAL_TIMEOUT_SECONDS,
    LOOP_LISTS,
    MAX_FOR_EACH_ITEMS,
    MAX_WAIT_SECONDS,
    OrganizationReference,
    step_lists,
)
from nectar.core.workflows.expressions import (
    ExpressionError,
    check_size,
    evaluate,
    journaled,
    json_bytes,
    render,
)
from nectar.core.workflows.outbound import OutboundRefused
from nectar.shared.logs import MASK, masked_in_logs


@dataclass(frozen=True)
class Limits:
    max_steps: int = 200  # steps executed, loop iterations and retries included
    time_limit_seconds: float = 10.0
    max_recorded_bytes: int = 16 * 1024  # per step input/output kept in the run record


SYNC_LIMITS = Limits()
ASYNC_LIMITS = Limits(max_steps=2000, time_limit_seconds=900.0)


MAX_WAIT = timedelta(seconds=MAX_WAIT_SECONDS)
# Steps that act on the world or wait: a durable run journals each one, so a replay never repeats it.
# A code step too: its result may differ between replays (Date.now, Math.random) and cost seconds.
DURABLE_STEP_TYPES = frozenset({"http_request", "send_email", "wait", "delay", "code", "call_workflow"})
# Steps that wait for something from outside; they keep their own checkpoints (_wait_for_signal).
SIGNAL_STEP_TYPES = frozenset({"wait_for_event", "approval"})
# A run that only computes asks whether it was cancelled at its next step once this much has passed.
ASK_AGAIN_SECONDS = 1.0
MAX_ERROR_CHARS = 4000  # of an error a run records (a step's, the run's)
MAX_BRANCH_THREADS = 10  # threads one run's parallel steps may use at once; further branches run in turn


class Effects(Protocol):
    def http(self, step: dict, request: dict) -> dict: ...

    def email(self, to: str, subject: str, body: str, *, dedupe_key: str | None = None) -> dict:
        """Queues the message (or refuses it, raising); returns the step's output. A durable run's
        step gives a dedupe key: at most one message is ever queued under it."""

    def sleep(self, seconds: float) -> None: ...

    def start_workflow(self, workflow: str, run_input: dict, *, key: str | None) -> str:
        """Queues a run of the organization's workflow `workflow` (id or name), called by this run,
        in the run's transaction, and returns its id; under `key`, the run queued before."""

    def workflow_result(self, run_id: str) -> dict | None:
        """A called run's end: {"status", "output", "error"}; None while it has not ended."""


@dataclass(frozen=True)
class OrganizationValues:
    """The organization's variables and secrets a run's document names (nectar.core.variables),
    read when the run starts: by name, those that exist; with the document's `references`
    (definition.organization_references) they were read for."""

    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    references: tuple[OrganizationReference, ...] = ()

    @property
    def masks(self) -> tuple[str, ...]:
        """The secrets' values to mask (see `masked`), longest first (mask_forms)."""
        return mask_forms(self.secrets.values())


def mask_forms(values) -> tuple[str, ...]:
    """Each of `values` to mask (see `masked`), longest first: as it is, and as a URL carries it (a
    path parameter or query value is percent-encoded before it is recorded)."""
    forms = set()
    for value in filter(None, values):
        forms |= {value, quote(value, safe=""), quote(value), quote_plus(value)}
    return tuple(sorted(forms, key=len, reverse=True))


def masked(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with every occurrence of each of `secrets` (longest first) in its text, keys
    included, replaced by MASK."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {masked(k, secrets): masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item, secrets) for item in value]
    return value


def masked_and_cut(text: str | None, secrets: tuple[str, ...], limit: int) -> str | None:
    """`text` masked (see `masked`), then cut to `limit` characters: the one way a run shortens text
    that may hold a secret (an error quoting a URL, a thrown message). Cut first, a secret spanning
    the cut would lose its tail, match no mask, and its first part be recorded."""
    if text is None:
        return None
    text = masked(text, secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    status: str  # succeeded | failed | waiting | cancelled
    output: Any
    error: str | None
    response: Response | None
    steps: list[StepRecord]
    started_at: datetime
    finished_at: datetime
    wake_at: datetime | None = None  # waiting: when to activate the run again (None: only when woken)
    waiting_for: dict | None = None  # waiting: what for, e.g. {"type": "wait", "step": "pause"}
    failed_step: str | None = None  # failed: the key of the step whose failure ended the run, if one did

    @property
    def duration_ms(self) -> int:
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


@dataclass(frozen=True)
class Checkpoint:
    """What a durable step left in its run's journal: finished (succeeded or failed, with its
    record for the run's trace) or `waiting` (its output says until when)."""

    status: str  # succeeded | failed | waiting
    output: Any = None
    error: str | None = None
    record: StepRecord | None = None


class Journal(Protocol):
    """A run's durable memory of its steps, by step key (the step's id, within loops with each
    enclosing iteration: `send[3]/notify`)."""

    def recall(self, key: str) -> Checkpoint | None: ...

    def save(self, key: str, checkpoint: Checkpoint) -> None:
        """Keeps `checkpoint` durably, together with whatever the step queued in the same
        transaction (its email), before the run goes on."""

    def effect_key(self, key: str) -> str | None:
        """The key an outside system may deduplicate the step's effect by (an HTTP request's
        Idempotency-Key, an email's dedupe key): the same for every replay of this run's step."""


class NoJournal:
    """Synchronous runs live in memory: nothing is recalled or kept."""

    def recall(self, key: str) -> Checkpoint | None:
        return None

    def save(self, key: str, checkpoint: Checkpoint) -> None:
        pass

    def effect_key(self, key: str) -> str | None:
        return None


NO_JOURNAL = NoJournal()


class Inbox(Protocol):
    """What reaches a durable run from outside: named events, people's decisions on its approvals,
    and its cancellation. Its writes join the run's transaction, so they are kept together with the
    checkpoint of the step that made them."""

    def take_event(self, key: str, name: str, until: datetime) -> dict | None:
        """Takes, for step `key`, the earliest event `name` received by `until` that no step has
        taken: {"id", "received_at", "payload"}; None if there is none."""

    def request_approval(self, key: str, request: dict) -> str | None:
        """Asks for a decision on step `key` (its title, details, approver_role, notify and until),
        and tells the people who may decide; returns a notice if some could not be told."""

    def decision(self, key: str, closing: bool) -> dict | None:
        """The decision made on step `key`: {"decision": "approved" or "rejected", "by", "at",
        "comment"}; None while there is none. `closing` (its time is up): none can be made after
        this, so a decision either came before the step gave up waiting or it is refused."""

    def resume_url(self, key: str, event: str) -> str | None:
        """An address an outside system may POST event `event` to, for step `key`, without credentials."""

    def cancelled(self) -> bool:
        """Whether the run was cancelled: asked before each step that acts or waits, and before
        any step once ASK_AGAIN_SECONDS have passed since it was last asked."""


class NoInbox:
    """Synchronous runs hear nothing from outside (they refuse the steps that wait for it)."""

    def take_event(self, key: str, name: str, until: datetime) -> dict | None:
        return None

    def request_approval(self, key: str, request: dict) -> str | None:
        return None

    def decision(self, key: str, closing: bool) -> dict | None:
        return None

    def resume_url(self, key: str, event: str) -> str | None:
        return None

    def cancelled(self) -> bool:
        return False


NO_INBOX = NoInbox()


class StepFailed(Exception):
    """A step failed: its retries and on_error branch decide what happens to the run."""


class RunStopped(Exception):
    """A limit was reached or the document cannot run in this mode: the run fails as a whole."""


class Suspended(Exception):
    """The run waits (for a time, an event or a person): this activation ends here."""

    def __init__(self, wake_at: datetime | None, waiting_for: dict):
        super().__init__(f"waiting for {waiting_for}")
        self.wake_at, self.waiting_for = wake_at, waiting_for


class Cancelled(Exception):
    """The run was cancelled: it stops here, doing nothing more."""


class _Abandoned(Exception):
    """A branch of a parallel step that a failure decided in an earlier activation reached a step
    it had not finished then: it stops there, as it did then, and does nothing new."""


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
        journal: Journal = NO_JOURNAL,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        inbox: Inbox = NO_INBOX,
        organization: OrganizationValues | None = None,
    ):
        self.definition, self.effects, self.limits, self.mode, self.clock = (
            definition,
            effects,
            limits,
            mode,
            clock,
        )
        self.journal, self.now, self.inbox = journal, now, inbox
        self.failed_key: str | None = None  # the step whose failure is on its way up, unhandled so far
        self.context: dict[str, Any] = {"trigger": trigger, "steps": {}, "vars": {}}
        self.secrets: tuple[str, ...] = ()  # values to mask, longest first
        self.missing: dict[str, str] = {}  # by step id: why the step cannot run (a name deleted since)
        if organization is not None:
            self._take(organization)
        self.records: list[StepRecord] = []
        self.shared = _Shared(asked_at=clock())
        self.deadline = clock() + limits.time_limit_seconds if deadline is None else deadline
        self.last_output: Any = None
        self.settled_only = False  # a branch of a decided parallel step: replays, never acts (_parallel)

    def _take(self, organization: OrganizationValues) -> None:
        """Puts the organization's values in the context, and notes each step that reads one the
        organization no longer has: it fails when it runs (saving the document refused it then)."""
        self.context["vars"] = dict(organization.variables)
        self.context["secrets"] = dict(organization.secrets)
        self.secrets = organization.masks
        have = {"vars": organization.variables, "secrets": organization.secrets}
        for reference in organization.references:
            if not reference.local and reference.name not in have[reference.root]:
                kind = "variable" if reference.root == "vars" else "secret"
                self.missing.setdefault(
                    reference.step,
                    f"{reference} does not exist: this organization has no {kind} named "
                    f"{reference.name!r} (deleted after the workflow was saved?)",
                )

    def _masked(self, value: Any) -> Any:
        return masked(value, self.secrets)

    def execute(self) -> RunOutcome:
        started = datetime.now(UTC)
        status, error, response, suspended = "succeeded", None, None, None
        self.shared.turn.acquire()
        try:
            if self.mode == "async" and (urls := self._resume_urls(self.definition["steps"], "")):
                self.context["resume_urls"] = urls
            with time_limit.within(self.deadline, self.limits.time_limit_seconds, self.clock):
                self.run_steps(self.definition["steps"], self.context)
        except _Responded as responded:
            response = responded.response
        except (StepFailed, RunStopped) as failure:
            status, error = "failed", str(failure)
        except Suspended as waiting:
            status, suspended = "waiting", waiting
        except Cancelled:
            status, error = "cancelled", "the run was cancelled"
        finally:
            self.shared.turn.release()
        records = [
            record for record in self.records if record is not None
        ]  # a limit or a wait can stop a step before its record
        error = masked_and_cut(error, self.secrets, MAX_ERROR_CHARS)
        if self.secrets:
            self.last_output = self._masked(self.last_output)
            if response is not None:
                response = Response(
                    response.status, self._masked(response.headers), self._masked(response.body)
                )
        outcome = RunOutcome(status, self.last_output, error, response, records, started, datetime.now(UTC))
        if suspended is not None:
            outcome.wake_at, outcome.waiting_for = suspended.wake_at, self._masked(suspended.waiting_for)
        if status == "failed":
            outcome.failed_step = self.failed_key
        return outcome

    def run_steps(self, steps: list[dict], context: dict, path: str = "") -> None:
        """Runs `steps` in order; `path` places them in the run (inside loops: each iteration)."""
        for step in steps:
            self.run_step(step, context, path)

    def run_step(self, step: dict, context: dict, path: str = "") -> None:
        key = path + step["id"]
        durable = step["type"] in DURABLE_STEP_TYPES
        saved = self.journal.recall(key) if durable else None
        if saved is not None and saved.status != "waiting":
            self._replay(step, context, path, saved)
            return
        if self.settled_only and (durable or self._unsettled_signal(step, key)):
            raise _Abandoned()
        if (durable or step["type"] in SIGNAL_STEP_TYPES or self._time_to_ask()) and self._cancelled():
            raise Cancelled()
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
                step_input, output = self._perform(step, context, key, path, attempt)
            except _Responded as responded:
                body = responded.response.body
                self._record(position, step, attempt, "succeeded", step_input, body, None, started)
                raise
            except time_limit.TimeLimitExceeded as stopped:  # mid-step: no retry or on_error can help
                self._record(position, step, attempt, "failed", step_input, None, str(stopped), started)
                raise RunStopped(str(stopped)) from None
            except (StepFailed, ExpressionError, OutboundRefused, ValueError, TypeError) as failure:
                self._record(position, step, attempt, "failed", step_input, None, str(failure), started)
                self.failed_key = self.failed_key or key  # a failure inside this step came up first
                if attempt < attempts:
                    self.failed_key = None
                    self._wait(delay)
                    delay *= retry.get("multiplier", 2.0)
                    continue
                if durable:
                    error = masked_and_cut(str(failure), self.secrets, MAX_ERROR_CHARS)
                    self.journal.save(key, Checkpoint("failed", None, error, self.records[position]))
                self._handle_failure(step, context, failure, path)
                return
            try:
                check_size(output, f"step {step['id']!r}'s output")
                check_size(context["vars"], "the run's vars")
            except ExpressionError as failure:
                self._record(position, step, attempt, "failed", step_input, None, str(failure), started)
                self.failed_key = self.failed_key or key
                raise StepFailed(str(failure)) from None
            if durable:
                # A journaled output holds no secret; the first activation goes on with what
                # replays will read, so every activation takes the same path.
                output = self._masked(journaled(output))
            self._record(position, step, attempt, "succeeded", step_input, output, None, started)
            if durable:
                self.journal.save(key, Checkpoint("succeeded", output, None, self.records[position]))
            context["steps"][step["id"]] = output
            self.last_output = output
            return

    def _time_to_ask(self) -> bool:
        """Whether a second has passed since the inbox was last asked (or the run began): steps
        that only compute hear of a cancellation too."""
        return self.clock() - self.shared.asked_at > ASK_AGAIN_SECONDS

    def _cancelled(self) -> bool:
        self.shared.asked_at = self.clock()
        return self.inbox.cancelled()

    def _unsettled_signal(self, step: dict, key: str) -> bool:
        if step["type"] not in SIGNAL_STEP_TYPES:
            return False
        saved = self.journal.recall(key)
        return saved is None or saved.status == "waiting"

    def _replay(self, step: dict, context: dict, path: str, saved: Checkpoint) -> None:
        """A durable step that finished in an earlier activation: its journaled result, again."""
        self._count_step()
        self.records.append(replace(saved.record, position=len(self.records)))
        if saved.status == "failed":
            self.failed_key = self.failed_key or path + step["id"]
            self._handle_failure(step, context, StepFailed(saved.error), path)
            return
        context["steps"][step["id"]] = saved.output
        self.last_output = saved.output

    def _handle_failure(self, step: dict, context: dict, failure: Exception, path: str) -> None:
        message = f"step {step['id']!r} ({step['type']}) failed: {failure}"
        if "on_error" not in step:
            raise StepFailed(message)
        self.failed_key = None  # handled
        context["error"] = {"step": step["id"], "message": str(failure)}
        context["steps"][step["id"]] = None
        self.run_steps(step["on_error"], context, path)
        context.pop("error", None)

    def _count_step(self) -> None:
        self.shared.executed += 1
        if self.shared.executed > self.limits.max_steps:
            raise RunStopped(f"the run exceeded its limit of {self.limits.max_steps} steps")
        if self.clock() > self.deadline:
            raise RunStopped(f"the run exceeded its time limit of {self.limits.time_limit_seconds:g} s")

    def _wait(self, seconds: float) -> None:
        if self.clock() + seconds > self.deadline:
            raise RunStopped(
                f"waiting {seconds:g} s would pass the run's time limit of {self.limits.time_limit_seconds:g} s"
            )
        with self._others_may_run():
            self.effects.sleep(seconds)

    @contextmanager
    def _others_may_run(self) -> Iterator[None]:
        """Around waiting (for an answer, a backoff, branches): the run's other branches go on."""
        self.shared.turn.release()
        try:
            yield
        finally:
            self.shared.turn.acquire()

    def _record(self, position, step, attempt, status, step_input, output, error, started) -> None:
        limit = self.limits.max_recorded_bytes
        self.records[position] = StepRecord(
            step_id=step["id"],
            step_type=step["type"],
            position=position,
            attempt=attempt,
            status=status,
            input=truncate(self._masked(step_input), limit),
            output=truncate(self._masked(output), limit),
            error=masked_and_cut(error, self.secrets, MAX_ERROR_CHARS),
            started_at=started,
            finished_at=datetime.now(UTC),
        )

    def _perform(self, step: dict, context: dict, key: str, path: str, attempt: int = 1) -> tuple[Any, Any]:
        kind = step["type"]
        if self.missing and step["id"] in self.missing:
            raise StepFailed(self.missing[step["id"]])
        if kind == "transform":
            return {"expression": step["expression"]}, evaluate(step["expression"], context)
        if kind == "set":
            values = render(step["values"], context)
            context["vars"].update(values)
            return values, values
        if kind == "condition":
            value = evaluate(step["if"], context)
            branch = "then" if _truthy(value) else "else"
            self.run_steps(step.get(branch, []), context, path)
            return {"if": step["if"], "value": value}, {"branch": branch}
        if kind == "for_each":
            return self._for_each(step, context, path)
        if kind == "http_request":
            request = {
                "method": step.get("method", "GET"),
                "url": render(step.get("url", ""), context),
                "headers": render(step.get("headers", {}), context),
                "query": render(step.get("query"), context),
                "body": render(step.get("body"), context),
                "timeout_seconds": min(
                    step.get("timeout_seconds", 10), max(0.1, self.deadline - self.clock())
                ),
            }
            if "operation" in step:  # an imported connector's operation: the effects build the URL
                request["operation"] = step["operation"]
                request["path_params"] = render(step.get("path_params", {}), context)
            # Each attempt its own key: a target that caches answers (failures too) under it
            # would otherwise answer every retry with the first failure.
            effect = key if attempt == 1 else f"{key}#{attempt}"
            if (effect_key := self.journal.effect_key(effect)) is not None:
                # A resumed run may send a request whose answer it never recorded; a target that
                # honours the key sees it once.
                request["headers"] = {"Idempotency-Key": effect_key, **request["headers"]}
            with self._others_may_run():
                result = self.effects.http(step, request)
            if result["status"] >= 400:
                raise StepFailed(f"{request['method']} {request['url']} answered {result['status']}")
            return {k: v for k, v in request.items() if k != "headers"}, result
        if kind == "send_email":
            message = {key: str(render(step[key], context)) for key in ("to", "subject", "body")}
            dedupe_key = self.journal.effect_key(key)
            return message, self.effects.email(
                message["to"], message["subject"], message["body"], dedupe_key=dedupe_key
            )
        if kind in ("wait", "delay"):
            return self._wait_step(step, context, key)
        if kind == "code":
            return self._code_step(step, context)
        if kind in SIGNAL_STEP_TYPES:
            return self._wait_for_signal(step, context, key, path)
        if kind == "call_workflow":
            return self._call_workflow(step, context, key)
        if kind == "parallel":
            return self._parallel(step, context, path)
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

    def _wait_step(self, step: dict, context: dict, key: str) -> tuple[Any, Any]:
        """Until its time has come, the run is suspended (no worker held); the time is fixed the
        first time the step is reached, so every replay waits for the same moment."""
        self._require_async(step)
        started = self.journal.recall(key)
        if started is None:
            until = self._wake_time(step, context)
            self.journal.save(key, Checkpoint("waiting", {"until": until.isoformat()}))
        else:
            until = datetime.fromisoformat(started.output["until"])
        step_input = {"until": until.isoformat()}
        if self.now() < until:
            raise Suspended(until, {"type": "wait", "step": step["id"], "until": until.isoformat()})
        return step_input, {"waited_until": until.isoformat()}

    def _code_step(self, step: dict, context: dict) -> tuple[Any, Any]:
        """Runs the step's JavaScript in a sandbox (code.py) for at most its own time limit, the
        mode's cap, and what the run has left; running out of the run's time stops the run."""
        cap = code.SYNC_TIME_LIMIT_SECONDS if self.mode == "sync" else code.ASYNC_TIME_LIMIT_SECONDS
        wanted = min(step.get("timeout_ms", cap * 1000) / 1000, cap)
        timeout = min(wanted, self.deadline - self.clock())
        if timeout <= 0:
            raise RunStopped(f"the run exceeded its time limit of {self.limits.time_limit_seconds:g} s")
        memory_mb = step.get("memory_mb", code.MAX_MEMORY_MB)
        step_input = {"timeout_ms": round(timeout * 1000), "memory_mb": memory_mb}
        try:
            with self._others_may_run():  # the code runs in its sandbox: the run's other branches go on
                output = code.run_code(step["source"], context, timeout_seconds=timeout, memory_mb=memory_mb)
        except code.CodeTimeout as error:
            if timeout < wanted:
                raise RunStopped(
                    f"the run exceeded its time limit of {self.limits.time_limit_seconds:g} s "
                    f"in code step {step['id']!r}"
                ) from None
            raise StepFailed(str(error)) from None
        except code.CodeError as error:
            raise StepFailed(str(error)) from None
        if self.clock() > self.deadline:  # waiting for a free sandbox counts too
            raise RunStopped(f"the run exceeded its time limit of {self.limits.time_limit_seconds:g} s")
        return step_input, output

    def _require_async(self, step: dict) -> None:
        if self.mode != "async":
            raise RunStopped(
                f"a {step['type']} step needs an asynchronous run (manual or scheduled), not an endpoint call"
            )

    def _wait_for_signal(self, step: dict, context: dict, key: str, path: str) -> tuple[Any, Any]:
        """wait_for_event and approval. The deadline is fixed (and an approval requested) the first
        time the step is reached; what came (the event, the decision) or that nothing came in time
        is kept in the step's checkpoint once known, so every replay takes the same path."""
        self._require_async(step)
        saved = self.journal.recall(key)
        if saved is None or saved.status == "waiting":
            saved = self._settle_signal(step, context, key, saved)
        got = saved.output
        step_input = {k: v for k, v in got.items() if k != "payload"}
        if "timed_out" in got and "on_timeout" in step:
            self.run_steps(step["on_timeout"], context, path)
            return step_input, None
        if (failure := _signal_failure(step, got)) is not None:
            raise StepFailed(failure)
        return step_input, got["payload"] if step["type"] == "wait_for_event" else got["decision"]

    def _settle_signal(self, step: dict, context: dict, key: str, saved: Checkpoint | None) -> Checkpoint:
        if saved is None:
            until = self.now() + timedelta(
                seconds=step.get("timeout_seconds", DEFAULT_SIGNAL_TIMEOUT_SECONDS)
            )
            waiting: dict[str, Any] = {"until": until.isoformat()}
            if step["type"] == "approval":
                waiting["request"] = {  # shown to people and kept: no secret
                    "title": masked_and_cut(str(render(step["title"], context)), self.secrets, 200),
                    "details": masked_and_cut(
                        str(render(step.get("details", ""), context)), self.secrets, 5000
                    ),
                    "approver_role": step.get("approver_role", "admin"),
                }
                request = {**waiting["request"], "step": step["id"], "until": until}
                if notice := self.inbox.request_approval(
                    key, {**request, "notify": step.get("notify", True)}
                ):
                    waiting["notice"] = notice  # in the step's trace: who was not emailed, and why
            saved = Checkpoint("waiting", waiting)
            self.journal.save(key, saved)  # with the approval's request and its emails
        until = datetime.fromisoformat(saved.output["until"])
        # One reading of the clock: an approval found open is closed before the step may time out.
        closing = self.now() >= until
        if step["type"] == "wait_for_event":
            event = self.inbox.take_event(key, step["event"], until)
            got = None
            if event is not None:
                got = {
                    "event_id": event["id"],
                    "received_at": event["received_at"],
                    "payload": event["payload"],
                }
        else:
            decision = self.inbox.decision(key, closing=closing)
            got = {"decision": decision} if decision else None
        if got is None and not closing:
            raise Suspended(until, self._waiting_for(step, key, saved.output))
        got = {**saved.output, **(got or {"timed_out": True})}
        failure = None if "timed_out" in got and "on_timeout" in step else _signal_failure(step, got)
        settled = Checkpoint("succeeded" if failure is None else "failed", got, failure)
        self.journal.save(key, settled)  # with the event marked as taken
        return settled

    def _waiting_for(self, step: dict, key: str, waiting: dict) -> dict:
        what = {"step": step["id"], "key": key, "until": waiting["until"]}
        if step["type"] == "approval":
            return {"type": "approval", **what, **waiting["request"]}
        what = {"type": "event", **what, "event": step["event"]}
        if url := self.inbox.resume_url(key, step["event"]):
            what["resume_url"] = url
        return what

    def _resume_urls(self, steps: list[dict], path: str) -> dict[str, str]:
        """The resume URL of each wait_for_event step among `steps` (and in their branches) at
        `path`; a loop's steps have theirs in each iteration."""
        urls = {}
        for step in steps:
            if step["type"] == "wait_for_event" and (
                url := self.inbox.resume_url(path + step["id"], step["event"])
            ):
                urls[step["id"]] = url
            for _parts, inner, name in step_lists(step):  # as the schema places nested steps
                if (step["type"], name) not in LOOP_LISTS:
                    urls.update(self._resume_urls(inner, path))
        return urls

    def _call_workflow(self, step: dict, context: dict, key: str) -> tuple[Any, Any]:
        """Starts the called run once (its id is journaled with it, so a replay never starts a
        second) and, unless told not to wait, suspends until it has ended: it wakes this run."""
        wait = step.get("wait", True)
        if wait and self.mode != "async":
            raise RunStopped(
                "a call_workflow step that waits for its output needs an asynchronous run, not an endpoint call"
            )
        started = self.journal.recall(key)  # `waiting`: started in an earlier activation
        if started is None:
            run_input = render(step.get("input", {}), context)
            if not isinstance(run_input, dict):
                raise StepFailed(f"input must be an object, got {type(run_input).__name__}")
            # The called run's input is recorded as its trigger: it holds no secret (the called
            # workflow reads the organization's secrets itself).
            run_input = self._masked(run_input)
            run_id = self.effects.start_workflow(
                step["workflow"], run_input, key=self.journal.effect_key(key)
            )
            if not wait:
                return {"workflow": step["workflow"], "input": run_input}, {"run_id": run_id}
            self.journal.save(key, Checkpoint("waiting", {"run_id": run_id}))
        else:
            run_id = started.output["run_id"]
        result = self.effects.workflow_result(run_id)
        if result is None:
            raise Suspended(None, {"type": "workflow", "step": step["id"], "run_id": run_id})
        if result["status"] != "succeeded":
            raise StepFailed(f"the called run {run_id} ended {result['status']}: {result['error']}")
        return {"workflow": step["workflow"], "run_id": run_id}, result["output"]

    def _parallel(self, step: dict, context: dict, path: str) -> tuple[Any, Any]:
        """Every branch runs to its end or suspension, whatever the others do; then a limit or a
        failure (the first in document order) decides, else a suspension (the run wakes at the
        earliest), else the step's output is each branch's, in document order: as a run's, the
        output of the last step it ran."""
        branches = step["branches"]
        # A failure that decided this step while a branch waited is journaled: later activations
        # replay the branches only as far as they went, so the waiting one never goes on.
        decided_key = path + step["id"] + "!decided"
        settled_only = self.settled_only or self.journal.recall(decided_key) is not None
        lanes = [
            _Lane(
                self._branch(settled_only),
                {**context, "steps": dict(context["steps"]), "vars": dict(context["vars"])},
            )
            for _ in branches
        ]

        def run_lane(index: int) -> None:
            try:
                # The time limit is per thread: a branch's thread keeps the run's.
                with time_limit.within(self.deadline, self.limits.time_limit_seconds, self.clock):
                    lanes[index].run.run_steps(branches[index], lanes[index].context, path)
            except BaseException as ended:  # noqa: BLE001 - judged once every branch has ended
                lanes[index].ended = ended

        # Endpoint calls run branches in turn: a call's threads are the web process's to share.
        threads: list[threading.Thread] = []
        for index in range(min(len(branches), self.shared.spare_threads) if self.mode == "async" else 0):
            # Each thread runs in a copy of this one's context, so the effects find what they rely on.
            thread = threading.Thread(
                target=contextvars.copy_context().run, args=(self._in_turn, run_lane, index)
            )
            try:
                thread.start()
            except RuntimeError:  # the process has no thread to spare
                break
            threads.append(thread)
        self.shared.spare_threads -= len(threads)
        for index in range(len(threads), len(branches)):  # beyond the run's threads: on this one
            run_lane(index)
        with self._others_may_run():
            for thread in threads:
                thread.join()
        self.shared.spare_threads += len(threads)

        for lane in lanes:
            self.records += [replace(r, position=len(self.records) + i) for i, r in enumerate(lane.records())]
        ends = [lane.ended for lane in lanes if lane.ended is not None]
        for ended in ends:
            if not isinstance(ended, StepFailed | Suspended | _Abandoned):
                raise ended  # a limit: the run stops
        failed = next((ended for ended in ends if isinstance(ended, StepFailed)), None)
        waiting = [ended for ended in ends if isinstance(ended, Suspended)]
        if failed is None and waiting:
            raise _together(step, waiting)
        if failed is None and any(isinstance(ended, _Abandoned) for ended in ends):
            raise StepFailed("a branch of this parallel step was left when a failure decided it")
        before, merged = context["vars"], dict(context["vars"])
        for lane in lanes:
            context["steps"].update(lane.context["steps"])
            merged.update(
                {k: v for k, v in lane.context["vars"].items() if k not in before or before[k] != v}
            )
        context["vars"] = merged
        if failed is not None:
            if waiting and not settled_only:
                # No one is asked any more; closed in the transaction the decision commits.
                for approval in _approvals_waited_for([w.waiting_for for w in waiting]):
                    self.inbox.decision(approval, closing=True)
                self.journal.save(decided_key, Checkpoint("waiting", {"decided": "failed"}))
            # The step that failed in its branch is the run's failed step, as outside a parallel.
            self.failed_key = next(lane.run.failed_key for lane in lanes if lane.ended is failed)
            raise failed
        return {"branches": len(branches)}, [lane.run.last_output for lane in lanes]

    def _branch(self, settled_only: bool) -> Run:
        """This run for one branch: the same document, journal, effects, limits and turns, with
        records of its own."""
        branch = copy.copy(self)
        branch.records, branch.last_output, branch.settled_only = [], None, settled_only
        return branch

    def _in_turn(self, work: Callable[[int], None], index: int) -> None:
        with self.shared.turn:
            work(index)

    def _wake_time(self, step: dict, context: dict) -> datetime:
        now = self.now()
        if "until" in step:
            text = render(step["until"], context)
            try:
                until = datetime.fromisoformat(str(text))
            except ValueError:
                raise StepFailed(f"until must be an ISO 8601 time, got {text!r}") from None
            if until.tzinfo is None:
                raise StepFailed(f"until must say its time zone (e.g. 2027-01-31T09:00:00Z), got {text!r}")
        else:
            until = now + timedelta(seconds=float(step["seconds"]))
        if until - now > MAX_WAIT:
            raise StepFailed(f"a run waits at most {MAX_WAIT.days} days; {until.isoformat()} is later")
        return until

    def _for_each(self, step: dict, context: dict, path: str) -> tuple[Any, Any]:
        items = evaluate(step["items"], context)
        if not isinstance(items, list):
            raise StepFailed(f"items must be a list, got {type(items).__name__}")
        cap = step.get("max_items", MAX_FOR_EACH_ITEMS)
        if len(items) > cap:
            raise StepFailed(f"{len(items)} items is more than this loop's limit of {cap}")
        results = []
        for index, item in enumerate(items):
            inner = {**context, "item": item, "index": index, "steps": dict(context["steps"])}
            if self.mode == "async" and (
                urls := self._resume_urls(step["steps"], f"{path}{step['id']}[{index}]/")
            ):
                inner["resume_urls"] = {**context.get("resume_urls", {}), **urls}
            self.run_steps(step["steps"], inner, f"{path}{step['id']}[{index}]/")
            last = step["steps"][-1]["id"] if step["steps"] else None
            results.append(inner["steps"].get(last) if last else None)
            context["vars"] = inner["vars"]
        return {"items": len(items)}, results


def _signal_failure(step: dict, got: dict) -> str | None:
    """Why a settled wait_for_event or approval step fails (nothing came in time, or a rejection),
    or None."""
    if "timed_out" in got:
        waited = f"{step.get('timeout_seconds', DEFAULT_SIGNAL_TIMEOUT_SECONDS):g} s"
        if step["type"] == "wait_for_event":
            return f"no event {step['event']!r} arrived within {waited}"
        return f"nobody decided within {waited}"
    decision = got.get("decision")
    if decision is not None and decision["decision"] == "rejected":
        comment = f": {decision['comment']}" if decision.get("comment") else ""
        return f"rejected by {decision['by']}{comment}"
    return None


class _Shared:
    """What a run's branches share: the steps counted against the limit, the turn to run engine
    code, and the threads left for branches."""

    def __init__(self, asked_at: float):
        self.executed = 0
        self.asked_at = (
            asked_at  # when the inbox was last asked whether the run was cancelled (or the run began)
        )
        self.turn = threading.Lock()
        self.spare_threads = MAX_BRANCH_THREADS


@dataclass
class _Lane:
    """One branch of a parallel step as it runs: its run, its context, and how it ended."""

    run: Run
    context: dict
    ended: BaseException | None = None

    def records(self) -> list[StepRecord]:
        return [record for record in self.run.records if record is not None]


def _approvals_waited_for(waiting_for: list[dict]) -> list[str]:
    """The keys of the approval steps among suspensions (a parallel step's own, in its branches)."""
    keys = []
    for what in waiting_for:
        if what["type"] == "approval":
            keys.append(what["key"])
        elif what["type"] == "parallel":
            keys += _approvals_waited_for(what["waiting_for"])
    return keys


def _together(step: dict, waiting: list[Suspended]) -> Suspended:
    """Branches that suspended, as one suspension of their parallel step: woken at the earliest."""
    if len(waiting) == 1:
        return waiting[0]
    times = [suspended.wake_at for suspended in waiting if suspended.wake_at is not None]
    return Suspended(
        min(times) if times else None,
        {"type": "parallel", "step": step["id"], "waiting_for": [s.waiting_for for s in waiting]},
    )


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
    journal: Journal = NO_JOURNAL,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    inbox: Inbox = NO_INBOX,
    tenant: object | None = None,
    organization: OrganizationValues | None = None,
) -> RunOutcome:
    """Runs `definition` with `trigger` as input, resuming from `journal` (durable runs). Never
    raises: failures are a failed outcome, a wait not over yet a waiting one. `clock` measures the
    time limit, which ends by `deadline` (a `clock()` time) when given, for a call whose time limit
    began before the run (its body was checked first), and by the limit from now otherwise; `now`
    is the wall clock waits are set by; `inbox` brings events, decisions and cancellation (durable
    runs). Code steps use the `tenant`'s share of the code sandboxes (code.tenant_share).
    `organization`: the variables and secrets the document names (None: it names none)."""
    masks = organization.masks if organization is not None else ()
    with code.tenant_share(tenant), masked_in_logs(masks):  # whatever logs during the run (a request URL)
        return Run(
            definition, trigger, effects, limits, mode, clock, deadline, journal, now, inbox, organization
        ).execute()
