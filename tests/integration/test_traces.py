"""One trace across two services (issue 19, part 2): a call from marketing's side into core's service
contract, over real HTTP, carries the trace context and the request id in its headers; core's
request span and its database queries join the caller's trace."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from nectar.core.app import create_app as create_core
from nectar.core.contract.client import CoreClient
from nectar.shared.config import Service
from nectar.shared.logs import bind_request_id, unbind_request_id
from nectar.shared.tracing import use_tracer_provider
from tests.core.conftest import SERVICE_TOKEN
from tests.serving import served, service_process

exported = InMemorySpanExporter()


@pytest.fixture(scope="module")
def core_url(settings_for):
    # As start_tracing does with OTLP, once per process, before the app is made.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    use_tracer_provider(provider)
    with served(create_core(settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN))) as url:
        yield url


def test_a_call_into_core_is_one_trace_with_the_callers_request_id(core_url):
    exported.clear()
    token = bind_request_id("checkout-7f3a")  # the request marketing is answering
    try:
        CoreClient(core_url, SERVICE_TOKEN).create_account(
            email=f"trace-{uuid.uuid4().hex[:8]}@example.com",
            organization_name="Traced",
            request_id=str(uuid.uuid4()),
        )
    finally:
        unbind_request_id(token)
    spans = _spans_once_core_answered()
    (call,) = [span for span in spans if span.kind is SpanKind.CLIENT and span.name.startswith("core POST")]
    (served_call,) = [span for span in spans if span.kind is SpanKind.SERVER]
    assert served_call.context.trace_id == call.context.trace_id
    assert served_call.parent.span_id == call.context.span_id  # it came in the traceparent header
    assert served_call.name == "POST /internal/v1/accounts"  # the route template, not the path
    assert served_call.attributes["nectar.request_id"] == "checkout-7f3a"
    queries = [span for span in spans if span.attributes.get("db.system") == "postgresql"]
    assert queries and all(query.context.trace_id == call.context.trace_id for query in queries)
    assert any(query.name == "INSERT" for query in queries)


def _spans_once_core_answered(wait_seconds: float = 10):
    """The finished spans, once core's request span is among them: the server ends it after the
    answer's last byte is sent, which may be a moment after the client has read it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        spans = exported.get_finished_spans()
        if any(span.kind is SpanKind.SERVER for span in spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def test_a_service_exports_its_spans_over_otlp_when_an_endpoint_is_set(database, tmp_path):
    """core as deployed (gunicorn, a subprocess) with OTEL_EXPORTER_OTLP_ENDPOINT: its spans arrive
    at the collector over OTLP/HTTP, as nectar-core, named by route."""
    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    environ = database.environ(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_port}")
    try:
        with service_process("nectar.core.main", environ) as url:
            requests.get(f"{url}/healthz", timeout=5)
            deadline = time.monotonic() + 30  # spans are sent in batches, every few seconds
            while not any(b"GET /healthz" in body for _, _, body in received) and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        collector.shutdown()
        collector.server_close()
    exported = [
        body for path, kind, body in received if path == "/v1/traces" and kind == "application/x-protobuf"
    ]
    assert any(b"GET /healthz" in body and b"nectar-core" in body for body in exported)


def test_a_request_span_keeps_no_query_string(core_url):
    # Links carry their tokens in the query (a password reset's, a run status link's): a trace
    # backend is no place for them.
    exported.clear()
    requests.get(f"{core_url}/reset-password?token=secret-reset-token&x=1", timeout=5)
    (served_call,) = [span for span in _spans_once_core_answered() if span.kind is SpanKind.SERVER]
    assert served_call.attributes.get("http.target", "/reset-password") == "/reset-password"
    assert not any("secret-reset-token" in str(value) for value in served_call.attributes.values())
