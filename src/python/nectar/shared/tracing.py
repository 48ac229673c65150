"""OpenTelemetry traces (issue 19): a span for each request a service answers, for each database
query, and for each call to another service, with the trace context carried across in the call's
headers (W3C traceparent), so one trace follows a request from marketing or admin into core.

Only when OTEL_EXPORTER_OTLP_ENDPOINT is set (`start_tracing`): otherwise nothing is wrapped, no
listener is added, and calls between services send only their request id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from opentelemetry import propagate, trace
from sqlalchemy import event
from sqlalchemy.engine import Engine

from nectar.shared.config import Settings
from nectar.shared.logs import REQUEST_ID_HEADER, current_request_id

_tracing = False


def start_tracing(settings: Settings) -> bool:
    """Sets up export over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, as service nectar-<service>;
    False (and nothing done) when it is not set."""
    endpoint = settings.observability.otlp_endpoint
    if endpoint is None:
        return False
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"nectar-{settings.service}"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    use_tracer_provider(provider)
    return True


def use_tracer_provider(provider) -> None:
    """Makes `provider` the process's (once per process, as OpenTelemetry allows) and turns tracing
    on for what is instrumented afterwards. start_tracing's, or a test's with an in-memory exporter."""
    global _tracing
    trace.set_tracer_provider(provider)
    _tracing = True


def tracing() -> bool:
    """Whether this process traces (start_tracing or use_tracer_provider was called)."""
    return _tracing


def instrument_app(app: Flask, engine: Engine) -> None:
    """Wraps the whole WSGI app (core's endpoint calls are answered before Flask) in a server span
    that continues the caller's trace, and traces the engine's queries. Call it last, so the span
    holds everything else."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, request_hook=_without_query)
    trace_queries(engine)


# Links carry tokens in their query (a password reset's, an invitation's, a run status link's): a
# request's span keeps its path only, as the access log does.
_URL_ATTRIBUTES = ("http.target", "http.url", "url.full")


def _without_query(span, _environ) -> None:
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        if "?" in str(attributes.get(name, "")):
            span.set_attribute(name, str(attributes[name]).split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


def trace_queries(engine: Engine) -> None:
    """A client span per statement the engine runs: its first word as the name, the SQL (never the
    parameters) as db.statement."""
    tracer = trace.get_tracer("nectar.database")

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            verb,
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement[:2000]},
        )
        conn.info.setdefault("nectar_spans", []).append(span)

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn, cursor, statement, parameters, context, executemany):
        spans = conn.info.get("nectar_spans")
        if spans:
            spans.pop().end()

    @event.listens_for(engine, "handle_error")
    def _failed(context):
        spans = context.connection.info.get("nectar_spans") if context.connection is not None else None
        if spans:
            span = spans.pop()
            span.record_exception(context.original_exception)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(context.original_exception).__name__))
            span.end()


@contextmanager
def service_call(name: str) -> Iterator[dict[str, str]]:
    """Around a call to another service: yields the headers to send with it, the current request
    id and, when tracing, the context of a client span named `name` that lasts the call."""
    headers: dict[str, str] = {}
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    if not _tracing:
        yield headers
        return
    with trace.get_tracer("nectar.services").start_as_current_span(name, kind=trace.SpanKind.CLIENT):
        propagate.inject(headers)
        yield headers
