"""What every service's web process does for each request to be observable (issue 19): a request id
(nectar.shared.logs), a count and duration by route template (nectar.shared.metrics), the route on
the request's span (nectar.shared.tracing), and /metrics itself.

The per-request work is a few dictionary lookups, two clock readings and one histogram observation.
"""

from __future__ import annotations

import time

from flask import Flask, request
from opentelemetry import trace

from nectar.shared import tracing
from nectar.shared.config import Service, Settings
from nectar.shared.database import db
from nectar.shared.logs import REQUEST_ID_HEADER, accepted_request_id, bind_request_id, unbind_request_id
from nectar.shared.metrics import (
    HTTP_REQUEST_SECONDS,
    KNOWN_METHODS,
    METRICS_PATH,
    DatabaseGauges,
    MetricsEndpoint,
    watch_pool,
)

# A view answering outside Flask's routing (core's endpoint calls) names its route template here.
ROUTE_KEY = "nectar.route"
UNMATCHED_ROUTE = "<unmatched>"


class ObservedRequests:
    """WSGI middleware around a service's app: request id in, out and in every log line; the request
    counted by route template, method and status; /metrics answered when metrics are on."""

    def __init__(self, app, metrics: MetricsEndpoint | None):
        self.app, self.metrics = app, metrics  # None: metrics off, nothing counted
        self.traced = False

    def __call__(self, environ, start_response):
        if self.metrics is not None and environ.get("PATH_INFO") == METRICS_PATH:
            return self.metrics(environ, start_response)
        request_id = accepted_request_id(environ.get("HTTP_X_REQUEST_ID"))
        environ["HTTP_X_REQUEST_ID"] = request_id  # what the app sees is what it answers with
        token = bind_request_id(request_id)
        started = time.perf_counter()
        answered = ["500"]  # what gunicorn answers if the app raises

        def start(status, headers, exc_info=None):
            answered[0] = status[:3]
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            route, method = _route(environ), environ.get("REQUEST_METHOD", "")
            method = method if method in KNOWN_METHODS else "OTHER"
            if self.metrics is not None:
                HTTP_REQUEST_SECONDS.labels(route, method, answered[0]).observe(time.perf_counter() - started)
            if self.traced:
                span = trace.get_current_span()
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("nectar.request_id", request_id)
            unbind_request_id(token)


def _route(environ) -> str:
    """The route template that answered (noted by `_note_route`, or by a view outside Flask)."""
    return environ.get(ROUTE_KEY, UNMATCHED_ROUTE)


def _note_route(_endpoint, _values) -> None:
    """Flask's first step of every request it routed (a URL value preprocessor runs before any
    before_request hook can answer): the matched rule, for the metrics."""
    if request.url_rule is not None:
        request.environ[ROUTE_KEY] = request.url_rule.rule


def database_gauges(settings: Settings) -> DatabaseGauges:
    """What this service reports from the database: its own job queue (each queue is named after its
    service), and for marketing, which owns them, the mail outbox and Stripe events."""
    marketing = settings.service is Service.MARKETING
    return DatabaseGauges(
        settings.database_url, (str(settings.service),), mail_outbox=marketing, stripe_events=marketing
    )


def observe_app(app: Flask, settings: Settings) -> None:
    """Makes `app` observable: the last step of create_service_app, so its middleware is outermost.
    Traced when this process traces (start_tracing, or use_tracer_provider in a test)."""
    observability = settings.observability
    metrics = (
        MetricsEndpoint(observability, database_gauges(settings)) if observability.metrics_enabled else None
    )
    app.url_value_preprocessor(_note_route)
    observed = ObservedRequests(app.wsgi_app, metrics)
    app.wsgi_app = observed
    with app.app_context():
        engine = db.engine
    if metrics is not None:
        watch_pool(engine)
    if tracing.tracing() or tracing.start_tracing(settings):
        tracing.instrument_app(app, engine)  # outside the observing middleware: its span holds it
        observed.traced = True
