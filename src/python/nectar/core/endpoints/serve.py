"""Serving tenant endpoints: /e/<organization id>/<path>. No session cookie, no CSRF: these are
the organization's public (or API-key) HTTP APIs, answered by running the bound workflow.

Calls are answered by `TenantEndpointCalls`, a WSGI middleware in front of Flask's request
handling: the URL map, the session, sign-in and the hooks of pages cost more than the workflow
itself here, and a call needs none of them (only the app context: settings and the database).
Incoming webhooks (/e/<org>/_hooks/<connection>) are an ordinary Flask view.

A workflow that may wait (definition.may_wait) is not run during the call: the call queues an
asynchronous run and answers 202 with the run's status URL (/e/<org>/_runs/<run>, signed for
that caller, who may hold no API key), which shows how the run ended once it has."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from nectar.core.api_keys.service import Scope, allows
from nectar.core.builder.service import version_of
from nectar.core.contract.plans import Feature
from nectar.core.endpoints import service
from nectar.core.endpoints.fairness import ThreadShares
from nectar.core.endpoints.routing import route_table
from nectar.core.extensions import csrf
from nectar.core.integrations.service import signature_valid
from nectar.core.plans import lacking
from nectar.core.runs.calls import Caller
from nectar.core.runs.queries import run_to_replay
from nectar.core.runs.queue import QueueFull, QuotaReached, queue_run
from nectar.core.runs.rate_window import WINDOW_SECONDS, Admission, current_window, rate_key
from nectar.core.runs.records import FINAL_STATUSES, FinishedRun, RunRequest, checked_idempotency_key
from nectar.core.runs.runner import CollectingEffects, outbound_policy, run_version
from nectar.core.runs.writer import RecordingFailed, RunWriter, run_writer
from nectar.core.usage import QuotaUsedUp, quota_used_up
from nectar.core.workflows import time_limit
from nectar.core.workflows.definition import may_wait
from nectar.core.workflows.engine import SYNC_LIMITS, execute, masked
from nectar.core.workflows.engine import Response as WorkflowResponse
from nectar.core.workflows.expressions import ExpressionError, check_size, json_bytes
from nectar.schema.models import IntegrationConnection, Organization, Workflow, WorkflowRun
from nectar.shared.bad_input import check_address, decode_text, loads_json, text_charset
from nectar.shared.database import db, scope_session
from nectar.shared.ids import random_id
from nectar.shared.observe import ROUTE_KEY
from nectar.shared.rejection import InputRejected
from nectar.shared.throttle import Limit, hit
from nectar.shared.tokens import TokenInvalid, make_token, read_token
from nectar.shared.web import (
    keeps_raw_input,
    limit_reached,
    problem,
    problem_later,
    security_headers,
    unexpected_error_response,
)

PREFIX = "/e/"
tenant_endpoints = Blueprint("tenant_endpoints", __name__, url_prefix=PREFIX.rstrip("/"))
csrf.exempt(tenant_endpoints)
keeps_raw_input(tenant_endpoints)  # bodies may be signed: read raw, then checked by _parsed_body
MAX_BODY_BYTES = 256 * 1024
_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
ENDPOINT_CALL_ROUTE = f"{PREFIX}<org_id>/<path>"
CALL_PATH = re.compile(rf"{PREFIX}({_UUID})(/.*)", re.DOTALL)  # fullmatch
HOOK_PATH = re.compile(rf"/_hooks/{_UUID}")  # fullmatch
RUN_STATUS_PATH = re.compile(rf"/_runs/{_UUID}")  # fullmatch
RUN_STATUS_PURPOSE = "run-status"
RUN_STATUS_SECONDS = 90 * 86400  # a run may wait 30 days, and call runs that wait too
# Queued calls count in the rate limit's windows as recorded runs do (`admit` checks the limit).
_CALL_WINDOW = Limit(events=0, window_seconds=WINDOW_SECONDS)


class TenantEndpointCalls:
    """WSGI middleware: answers /e/<org id>/<path> calls itself and hands every other request
    (incoming webhooks included) to Flask. An organization's calls and webhooks hold at most its
    share of the process's threads (fairness.py)."""

    def __init__(self, app: Flask):
        self.app, self.flask = app, app.wsgi_app
        self.shares = ThreadShares(app.config["NECTAR_SETTINGS"].org_max_threads)

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.flask(environ, start_response)
        request_ = Request(environ)
        match = CALL_PATH.fullmatch(request_.path)
        if match is None:
            return self.flask(environ, start_response)
        org_id = uuid.UUID(match[1])
        environ[ROUTE_KEY] = ENDPOINT_CALL_ROUTE  # metrics count calls by this, never by their path
        if not self.shares.take(org_id):
            with self.app.app_context():
                answer = security_headers(_sandboxed(_busy(self.shares.most)))
            return answer(environ, start_response)
        try:
            if (request_.method == "POST" and HOOK_PATH.fullmatch(match[2])) or (
                request_.method == "GET" and RUN_STATUS_PATH.fullmatch(match[2])
            ):
                del environ[ROUTE_KEY]  # Flask's route names it
                return self.flask(environ, start_response)
            with self.app.app_context():  # its end returns the database session, if a call used one
                answer = _answer(request_, org_id, match[2])
            return answer(environ, start_response)
        finally:
            self.shares.give_back(org_id)


def _busy(share: int) -> Response:
    return problem_later(
        429, f"This organization's calls already hold {share} of this server's threads; try again shortly.", 1
    )


class _AnswerHeaders:
    """Response headers by case-insensitive name, as much of werkzeug's Headers as answers use."""

    def __init__(self, content_type: str):
        self._by_name = {"content-type": ("Content-Type", content_type)}

    def __setitem__(self, name: str, value: str) -> None:
        self._by_name[name.lower()] = (name, value)

    def setdefault(self, name: str, value: str) -> None:
        self._by_name.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()][1]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._by_name

    def items(self):
        return self._by_name.values()


class RunAnswer:
    """A workflow's answer as a WSGI app: plain bytes and a header list, since werkzeug's Response
    and Headers cost more than everything else in answering a call. A Flask view may return it."""

    def __init__(self, status: int, body: bytes, content_type: str):
        self.status_code, self.body, self.headers = status, body, _AnswerHeaders(content_type)

    def __call__(self, environ, start_response):
        # 204 and 304 answers have no body by definition: one sent anyway would be read as the start
        # of the next answer on a kept-alive connection (a proxy could hand it to someone else).
        body = b"" if self.status_code in (204, 304) else self.body
        headers = [*self.headers.items()]
        if body:
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{self.status_code} {HTTP_STATUS_CODES.get(self.status_code, 'UNKNOWN')}", headers)
        return [body]


def _answer(request_: Request, org_id: uuid.UUID, path: str) -> Response | RunAnswer:
    """The call's response, errors included, as Flask's handlers and after_request would give it."""
    try:
        if "//" in path:  # no endpoint's path has an empty segment (Flask would redirect)
            response = problem(404, f"No endpoint {request_.method} {path} here.")
        elif request_.method not in service.METHODS:
            response = problem(405, f"Tenant endpoints answer {', '.join(service.METHODS)}.")
            response.headers["Allow"] = ", ".join(service.METHODS)
        else:
            check_address(request_)
            response = handle_call(org_id, path, request_, _read_body(request_))
    except InputRejected as bad:
        response = _refused(bad)
    except HTTPException as error:
        response = problem(error.code or 500, error.description)
    except Exception as error:  # noqa: BLE001 - a caller gets a problem document, never a traceback
        response = unexpected_error_response(error, request_.method, request_.path)
    return security_headers(_sandboxed(response))


@tenant_endpoints.post("/<uuid:org_id>/_hooks/<uuid:connection_id>")
def incoming_webhook(org_id: uuid.UUID, connection_id: uuid.UUID):
    """An incoming-webhook connection: a signed POST starts its workflow."""
    raw = request.get_data()  # bounded by Flask's MAX_CONTENT_LENGTH; the signature covers it
    body = _parsed_body(request, raw)
    scope_session(db.session, org_id=org_id)
    org = db.session.get(Organization, org_id)
    if org is None or org.status != "active":
        return problem(404, "No such hook here.")
    connection = db.session.get(IntegrationConnection, connection_id)
    keys = current_app.config["NECTAR_KEY_RING"]
    if connection is None or not signature_valid(
        connection, keys, raw, request.headers.get("X-Nectar-Signature")
    ):
        return problem(401, "Unknown hook or a missing or wrong X-Nectar-Signature.")
    workflow = db.session.get(Workflow, uuid.UUID(connection.config["workflow_id"]))
    version = version_of(db.session, workflow.id, workflow.current_version) if workflow else None
    if version is None:
        return problem(404, "The hook's workflow does not exist any more.")
    trigger = {
        "method": "POST",
        "path": request.path,
        "params": {},
        "query": request.args.to_dict(),
        "headers": {},
        "body": body,
    }
    if isinstance(body, _RefusedBody):
        return _refused(body.bad)
    max_age = current_app.config["NECTAR_SETTINGS"].cache_max_age
    if (used_up := quota_used_up(db.engine, org_id, org.plan, max_age=max_age)) is not None:
        return _quota_used_up(used_up)
    limit = service.rate_limit(org.plan, org.plan_overrides)
    with run_writer(db.engine).counts.admitted(org_id, limit) as admission:
        if admission is None:
            return _rate_limited(limit)
        return _run_in_session(
            org_id,
            workflow.id,
            version.id,
            version.definition,
            trigger,
            request.headers.get("Idempotency-Key"),
            admission,
            queued=may_wait(version.definition),
        )


@tenant_endpoints.get("/<uuid:org_id>/_runs/<uuid:run_id>")
def run_status(org_id: uuid.UUID, run_id: uuid.UUID):
    """A queued call's run, for the caller that got its signed URL: its status, and once it has
    ended its output (or the response a respond step gave) or its error."""
    try:
        signed = read_token(
            current_app.secret_key, RUN_STATUS_PURPOSE, request.args.get("token", ""), RUN_STATUS_SECONDS
        )
    except TokenInvalid as invalid:
        return problem(403, str(invalid))
    if signed != {"org": str(org_id), "run": str(run_id)}:
        return problem(403, "This link is not valid. Check that you copied all of it.")
    scope_session(db.session, org_id=org_id)
    run = db.session.get(WorkflowRun, run_id)
    if run is None:
        return problem(404, "This run is not kept any more.")
    body = {"run_id": str(run.id), "status": run.status}
    if run.status in FINAL_STATUSES:
        stored = run.output or {}
        body.update(output=stored.get("output"), error=run.error)
        if "response" in stored:
            body["response"] = stored["response"]
    answer = jsonify(body)
    answer.headers["Cache-Control"] = "no-store"
    return answer


def run_status_url(org_id: uuid.UUID, run_id: uuid.UUID) -> str:
    """The signed address where the caller that queued a run sees how it went."""
    token = make_token(current_app.secret_key, RUN_STATUS_PURPOSE, {"org": str(org_id), "run": str(run_id)})
    return f"{current_app.config['NECTAR_SETTINGS'].public_url}{PREFIX}{org_id}/_runs/{run_id}?token={token}"


class NoSessionForTenantEndpoints(SecureCookieSessionInterface):
    """Incoming webhooks (the /e/ requests Flask handles; TenantEndpointCalls answers the calls)
    neither read nor set the session cookie: they never act as the visitor whose browser sent them."""

    def open_session(self, app, request_):
        if request_.path.startswith(PREFIX):
            return self.make_null_session(app)
        return super().open_session(app, request_)


def _read_body(request_: Request):
    """The call's body: JSON parsed, text decoded, None when empty, or a _RefusedBody."""
    length = request_.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"Request bodies are limited to {MAX_BODY_BYTES // 1024} KiB.")
    return _parsed_body(request_, _read_at_most(request_.stream, MAX_BODY_BYTES))


def _parsed_body(request_: Request, raw: bytes):
    """JSON or text by the rules every service reads bodies by (nectar.shared.bad_input), within
    the size a run's value may have; a _RefusedBody when it breaks them."""
    if len(raw) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"Request bodies are limited to {MAX_BODY_BYTES // 1024} KiB.")
    if not raw:
        return None
    try:
        if request_.mimetype == "application/json":
            text_charset(request_.mimetype_params)  # a declared charset must be one, even if JSON ignores it
            return check_size(loads_json(raw), "The body")
        return decode_text(raw, request_.mimetype_params)
    except InputRejected as bad:
        return _RefusedBody(bad)
    except ExpressionError as error:
        return _RefusedBody(InputRejected(f"{error}.", status=400))


def _read_at_most(stream, limit: int) -> bytes:
    """The body, or its first limit + 1 bytes: a body sent without a length (chunked) is never
    read whole into memory just to be refused."""
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _RefusedBody:
    """A body the call cannot run with (not JSON, not text, too large a value), and why."""

    def __init__(self, bad: InputRejected):
        self.bad = bad


def _refused(bad: InputRejected) -> Response:
    return problem(bad.status, bad.detail, errors=bad.errors())


def handle_call(org_id: uuid.UUID, path: str, request_: Request, body):
    """Everything a call does: find the endpoint (in memory, see routing.py), check the caller, run
    the workflow, record the run."""
    if isinstance(body, _RefusedBody):
        return _refused(body.bad)
    method, headers, engine = request_.method, request_.headers, db.engine
    settings = current_app.config["NECTAR_SETTINGS"]
    bearer = headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
    route = route_table(engine, settings).find(org_id, method, path, bearer)
    refusal = _refusal(route, method, path)
    if refusal is not None:
        return refusal
    # Refused before any tenant-defined work, so calls past a limit cost nothing to refuse.
    if (used_up := quota_used_up(engine, org_id, route.plan, max_age=settings.cache_max_age)) is not None:
        return _quota_used_up(used_up)
    limit, writer = service.rate_limit(route.plan, route.plan_overrides), run_writer(engine)
    with writer.counts.admitted(org_id, limit) as admission:
        if admission is None:
            return _rate_limited(limit)
        return _admitted_call(org_id, path, request_, body, route, admission, writer)


def _admitted_call(org_id, path, request_, body, route, admission: Admission, writer: RunWriter):
    """handle_call's part once the call counts against its organization's rate limit."""
    # The call's time limit starts now: checking its body against the schema is tenant work too.
    deadline = time.monotonic() + SYNC_LIMITS.time_limit_seconds
    mismatch = _body_mismatch(route.endpoint.request_schema, body, deadline)
    if mismatch is not None:
        writer.count_refused(admission)
        return mismatch
    trigger = {
        "method": request_.method,
        "path": path,
        "params": route.params,
        "query": request_.args.to_dict(),
        "headers": _forwarded_headers(request_.environ),
        "body": body,
    }
    key, endpoint = request_.headers.get("Idempotency-Key"), route.endpoint
    if key is not None or endpoint.waits:
        return _run_in_session(
            org_id,
            endpoint.workflow_id,
            endpoint.version_id,
            endpoint.definition,
            trigger,
            key,
            admission,
            deadline,
            queued=endpoint.waits,
        )
    return _call(org_id, route, trigger, admission, writer, deadline)


def _refusal(route, method: str, path: str):
    """Why the call may not run (404, 403, 401), as a response; None when it may."""
    if route is None:
        return problem(404, f"No endpoint {method} {path} here.")
    if route.endpoint.auth == "api_key" and (
        refusal := lacking(route.plan, route.plan_overrides, Feature.API_KEYS)
    ):
        detail = f"This endpoint needs an API key of its organization, and {refusal}"
        return problem(403, detail, **refusal.as_problem_fields())
    if route.endpoint.auth == "api_key" and route.key_scopes is None:
        response = problem(
            401, "This endpoint needs an API key of its organization: Authorization: Bearer nsk_..."
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="nectar-endpoints"'
        return response
    if route.endpoint.auth == "api_key" and not allows(route.key_scopes, Scope.ENDPOINTS_CALL):
        detail = f"This API key lacks the scope “{Scope.ENDPOINTS_CALL}”, which calling endpoints needs."
        return problem(403, detail, required_scope=str(Scope.ENDPOINTS_CALL))
    return None


def _body_mismatch(schema: dict | None, body, deadline: float):
    """A 422 for a body that does not match the endpoint's request schema (504 when checking it
    runs past the call's time limit); None when it matches."""
    if schema is None:
        return None
    try:
        with time_limit.within(deadline, SYNC_LIMITS.time_limit_seconds):
            problems = service.body_problems(schema, body)
    except time_limit.TimeLimitExceeded as stopped:
        return problem(504, f"Checking the body against the endpoint's schema: {stopped}.")
    if not problems:
        return None
    return problem(
        422, "The request body does not match the endpoint's schema.", errors=[p.as_dict() for p in problems]
    )


def _quota_used_up(used_up: QuotaUsedUp) -> Response:
    return limit_reached(str(used_up), used_up.limit, used_up.resets_at.timestamp())


def _rate_limited(limit: int) -> Response:
    resets = current_window() + WINDOW_SECONDS  # the count starts again with the next UTC minute
    return limit_reached(f"This organization's plan allows {limit} calls a minute.", limit, resets)


# Headers a workflow may see: never cookies or credentials (a browser following a link to another
# organization's endpoint must not hand it the visitor's session).
FORWARDED_HEADERS = {
    "accept",
    "accept-language",
    "content-type",
    "user-agent",
    "x-request-id",
    "idempotency-key",
}
# What HTTP/1.1 lets a header be (RFC 9110), as gunicorn checks it before writing an answer.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")
BLOCKED_RESPONSE_HEADERS = {
    "content-length",
    "transfer-encoding",
    "set-cookie",
    "content-security-policy",
    "connection",
    "x-request-id",  # the platform's own (shared/observe.py): the one its logs and support know the call by
}


def _forwarded_headers(environ: dict) -> dict[str, str]:
    """The request headers a workflow sees, by lower-case name, read from the WSGI environ (as
    werkzeug's EnvironHeaders would, at a fraction of its cost)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key == "CONTENT_TYPE" and value:
            name = "content-type"
        else:
            continue
        if name in FORWARDED_HEADERS or name.startswith("x-"):
            headers[name] = value
    return headers


@tenant_endpoints.after_request
def _sandboxed(response):
    """Tenant responses share the app's origin: they may never run script or set cookies there.
    (Flask applies it to incoming webhooks; TenantEndpointCalls to calls.)"""
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _call(
    org_id: uuid.UUID, route: service.Route, trigger: dict, admission: Admission, writer: RunWriter, deadline
):
    """The hot path: no query before the workflow runs (the route is in memory) unless it reads
    the organization's variables or secrets (one), and its run is written with others' in one
    round trip just after the answer (runs/writer.py)."""
    run_id = random_id()
    effects = CollectingEffects(lambda: _scoped_session(org_id), outbound_policy(), Caller(org_id, run_id))
    endpoint = route.endpoint
    request_ = RunRequest(endpoint.workflow_id, endpoint.version_id, "http", trigger)
    # Kept with the routes, and dropped with them on any change: never served stale. None read, no query.
    keys, settings = current_app.config["NECTAR_KEY_RING"], current_app.config["NECTAR_SETTINGS"]
    organization = route_table(db.engine, settings).organization_values(org_id, endpoint, keys)
    outcome = execute(
        endpoint.definition,
        request_.input,
        effects,
        deadline=deadline,
        tenant=org_id,
        organization=organization,
    )
    if organization is not None and organization.masks:  # the trigger is recorded too
        request_ = replace(request_, input=masked(request_.input, organization.masks))
    run = FinishedRun(run_id, org_id, request_, outcome)
    try:
        writer.record(run, effects.emails, admission)
    except RecordingFailed as error:
        current_app.logger.warning("endpoint run %s not recorded: %s", run.id, error)
        return problem_later(503, "The call ran but its run could not be recorded. Try again shortly.", 5)
    return _respond(run.id, outcome.status, outcome.error, outcome.response, outcome.output)


def _scoped_session(org_id: uuid.UUID):
    """The request's session as the organization, for steps that look up its connections."""
    scope_session(db.session, org_id=org_id)
    return db.session


# What a delivery under an Idempotency-Key must repeat to be the same request; its headers may
# differ (a new timestamp, a trace id).
REPEATED_REQUEST = ("method", "path", "params", "query", "body")


def _run_in_session(
    org_id,
    workflow_id,
    version_id,
    definition,
    trigger,
    key,
    admission: Admission,
    deadline=None,
    *,
    queued=False,
):
    """Runs a workflow on the request's session (scoped to `org_id`), counting it in its
    admission's rate window, and answers; with an Idempotency-Key, a delivery seen before gets the
    first one's answer instead of a run. The run ends by `deadline` if given (see engine.execute).
    `queued`: the run is queued (asynchronous) and the answer is 202."""
    response, admission.written = _run_once(
        org_id, workflow_id, version_id, definition, trigger, key, admission.window, deadline, queued
    )
    return response


def _run_once(org_id, workflow_id, version_id, definition, trigger, key, window: int, deadline, queued: bool):
    """_run_in_session's answer, and whether a run was written."""
    checked_idempotency_key(key)
    scope_session(db.session, org_id=org_id)
    if key:
        # Deliveries of one key queue behind each other until the first is recorded, so two at once
        # never both run the workflow (its effects may not be idempotent).
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"{workflow_id}:{key}"}
        )
    if (
        key
        and (
            earlier := run_to_replay(db.session, workflow_id, key, trigger, REPEATED_REQUEST, trigger="http")
        )
        is not None
    ):
        db.session.rollback()
        return _replay(earlier, queued), False
    try:
        if queued:
            try:
                run_id = queue_run(db.session, org_id, workflow_id, version_id, "http", trigger, key=key)
            except QuotaReached as used_up:  # as the quota check before it answers
                db.session.rollback()
                return limit_reached(str(used_up), used_up.limit, used_up.resets_at), False
            except QueueFull as full:
                db.session.rollback()
                return problem_later(429, str(full), full.retry_after), False
            hit(db.session, rate_key(org_id), _CALL_WINDOW, now=window)
        else:
            request_ = RunRequest(workflow_id, version_id, "http", trigger, idempotency_key=key)
            bucket = rate_key(org_id), window
            run_id, outcome = run_version(
                db.session, org_id, request_, definition, rate_bucket=bucket, deadline=deadline
            )
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        scope_session(db.session, org_id=org_id)
        if db.session.get(Workflow, workflow_id) is None:
            # Routed just before its workflow was deleted: the run waited on the deletion's lock of
            # the versions, then met their foreign key gone.
            return problem(404, "This endpoint's workflow does not exist any more."), False
        # The same key arrived twice at once and the other delivery recorded first: answer as it did.
        return (
            _replay(
                run_to_replay(db.session, workflow_id, key, trigger, REPEATED_REQUEST, trigger="http"), queued
            ),
            False,
        )
    if queued:
        return _accepted(org_id, run_id), True
    return _respond(run_id, outcome.status, outcome.error, outcome.response, outcome.output), True


def _accepted(org_id: uuid.UUID, run_id: uuid.UUID) -> Response:
    """202: the run is queued; its status URL (in Location too) shows it once it has ended."""
    status_url = run_status_url(org_id, run_id)
    answer = jsonify(run_id=str(run_id), status_url=status_url)
    answer.status_code = 202
    answer.headers["Location"] = status_url
    answer.headers["X-Nectar-Run-Id"] = str(run_id)
    return answer


def _respond(run_id, status, error, response, output):
    if status != "succeeded":
        timed_out = error and "time limit" in error
        answer = problem(504 if timed_out else 500, f"The workflow failed: {error}", run_id=str(run_id))
    elif response is not None:
        answer = _body_response(response.body, response.status)
        _copy_headers(answer, response.headers)
    else:
        answer = jsonify(run_id=str(run_id), output=output)
    answer.headers["X-Nectar-Run-Id"] = str(run_id)
    return answer


def _copy_headers(answer: RunAnswer, headers: dict) -> None:
    """The workflow's response headers, less those it may not set and any HTTP cannot carry: a name
    that is no token, a value with a line break or other control character or past Latin-1
    (gunicorn would refuse the whole answer)."""
    for name, value in headers.items():
        if (
            name.lower() not in BLOCKED_RESPONSE_HEADERS
            and _HEADER_NAME.fullmatch(name)
            and _HEADER_VALUE.fullmatch(value)
        ):
            answer.headers[name] = value


def _body_response(body, status: int) -> RunAnswer:
    if isinstance(body, dict | list | int | float | bool) or body is None:
        return RunAnswer(status, json_bytes(body), "application/json")
    return RunAnswer(status, str(body).encode(), "text/plain; charset=utf-8")


def _replay(run, queued: bool):
    """The answer the first delivery got: the same key never runs the workflow twice. A run that
    has not ended yet (queued, or waiting) can only be pointed to."""
    if queued or run.status not in FINAL_STATUSES:
        answer = _accepted(run.org_id, run.id)
    else:
        stored = run.output or {}
        response = WorkflowResponse(**stored["response"]) if "response" in stored else None
        answer = _respond(run.id, run.status, run.error, response, stored.get("output"))
    answer.headers["Idempotent-Replayed"] = "true"
    return answer
