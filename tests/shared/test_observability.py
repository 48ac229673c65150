"""Metrics, request ids and log lines (issue 19, parts 1 and 3), through the services' own apps and
binaries on the real database."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from prometheus_client import generate_latest

from nectar.core.app import create_app as create_core
from nectar.core.runs.metrics import count_run
from nectar.marketing.app import create_app as create_marketing
from nectar.shared.config import ConfigError, Service, load_observability, load_settings
from nectar.shared.jobs import WorkerLogFilter, enqueue
from nectar.shared.logs import (
    REQUEST_ID_PATTERN,
    JsonFormatter,
    RequestIdFilter,
    bind_request_id,
    log_handler,
    unbind_request_id,
)
from nectar.shared.metrics import serve_worker_metrics
from nectar.shared.observe import ObservedRequests
from nectar.shared.tracing import service_call, tracing
from tests.serving import free_port, service_process

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def core(settings_for):
    return create_core(settings_for(Service.CORE, METRICS_TOKEN=TOKEN))


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus' text format, or None."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(key) == value for key, value in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}]
)
def test_a_scrape_without_the_token_is_a_401_problem(core, headers):
    response = core.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 401 and "METRICS_TOKEN" in response.json["detail"]
    assert "nectar_" not in response.get_data(as_text=True)


def test_requests_are_counted_by_route_template_not_by_path(core):
    client = core.test_client()
    org = uuid.uuid4()
    for _ in range(3):
        client.post(f"/e/{org}/orders/{uuid.uuid4()}", json={})
    client.get(f"/no/such/page/{uuid.uuid4()}")
    client.get("/healthz")
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    name = "nectar_http_request_duration_seconds_count"
    assert _sample(text, name, route="/e/<org_id>/<path>", method="POST") >= 3
    assert _sample(text, name, route="/healthz", method="GET", status="200") >= 1
    assert _sample(text, name, route="<unmatched>", method="GET", status="404") >= 1
    assert str(org) not in text  # a tenant's URLs never become label values
    assert _sample(text, "nectar_http_request_duration_seconds_bucket", route="/healthz", le="+Inf") >= 1


def test_a_made_up_method_does_not_add_label_values(core):
    core.test_client().open("/healthz", method="BREW")
    text = core.test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
    assert "BREW" not in text and 'method="OTHER"' in text


def test_the_database_gauges_are_read_at_scrape_time(settings_for, database):
    marketing = create_marketing(settings_for(Service.MARKETING, METRICS_TOKEN=TOKEN))
    from nectar.shared.database import db

    with marketing.app_context():
        enqueue(db.session, "observability.test_job", {}, queue="marketing")
        db.session.commit()
    with database.connect("nectar_marketing", autocommit=True) as connection:
        connection.execute(
            "INSERT INTO email_outbox (id, to_address, subject, body_text, category, created_at) "
            "VALUES (%s, 'a@example.com', 's', 'b', 'test', now() - interval '1 hour')",
            (uuid.uuid4(),),
        )
        connection.execute(
            "INSERT INTO stripe_events (id, type, payload, stripe_created) VALUES (%s, 'invoice.paid', '{}', 0)",
            (f"evt_{uuid.uuid4().hex}",),
        )
    text = marketing.test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
    assert _sample(text, "nectar_metrics_database_up") == 1
    assert _sample(text, "nectar_job_queue_depth", queue="marketing") >= 1
    assert _sample(text, "nectar_job_queue_oldest_age_seconds", queue="marketing") >= 0
    assert _sample(text, "nectar_mail_outbox_waiting") >= 1
    assert _sample(text, "nectar_mail_outbox_oldest_age_seconds") >= 3000
    assert _sample(text, "nectar_stripe_events_waiting") >= 1
    assert _sample(text, "nectar_db_pool_connections", state="idle") is not None


@pytest.mark.parametrize("database_is", ["refusing", "silent"])
def test_a_scrape_answers_while_the_database_is_down(database, database_is):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1] if database_is == "silent" else free_port()
        environ = database.environ(METRICS_TOKEN=TOKEN)
        environ["DATABASE_URL"] = f"postgresql://nectar_app_user:x@127.0.0.1:{port}/nectarstudio_ai"
        app = create_core(load_settings(Service.CORE, environ))
        response = app.test_client().get("/metrics", headers=AUTH)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert _sample(text, "nectar_metrics_database_up") == 0
    assert "nectar_job_queue_depth" not in text
    assert "# TYPE nectar_http_request_duration_seconds histogram" in text  # the rest is served


def test_metrics_are_off_in_production_without_a_token(database):
    environ = database.environ(
        NECTAR_ENV="production",
        SECRET_KEY="x" * 40,
        NECTAR_ENCRYPTION_KEYS=f"k1:{Fernet.generate_key().decode()}",
    )
    app = create_core(load_settings(Service.CORE, environ))
    assert app.test_client().get("/metrics").status_code == 404
    with pytest.raises(ConfigError, match="METRICS_TOKEN is too short"):
        load_observability({"METRICS_TOKEN": "short"})
    with pytest.raises(ConfigError, match="METRICS_ENABLED needs METRICS_TOKEN"):
        load_observability({"NECTAR_ENV": "production", "METRICS_ENABLED": "true"})


def test_metrics_turned_off_count_nothing_and_serve_nothing(settings_for):
    app = create_core(settings_for(Service.CORE, METRICS_ENABLED="false"))
    client = app.test_client()
    assert client.get("/metrics").status_code == 404

    def healthz_counted():
        text = generate_latest().decode()
        return _sample(text, "nectar_http_request_duration_seconds_count", route="/healthz", status="200")

    before = healthz_counted()
    assert client.get("/healthz", headers={"X-Request-ID": "still-42"}).headers["X-Request-ID"] == "still-42"
    assert healthz_counted() == before  # not counted; the request id still works


def test_a_sane_request_id_is_kept_and_a_hostile_one_replaced(core):
    client = core.test_client()
    assert (
        client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc:7"}).headers["X-Request-ID"]
        == "lb-1234.abc:7"
    )
    for hostile in ("x" * 500, "a b", "<script>", "id\u00e9", "../../etc", "-leading-dash", ""):
        given = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert given != hostile and REQUEST_ID_PATTERN.fullmatch(given)
    first, second = (client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert first != second


def test_every_line_of_a_request_carries_its_id(database):
    environ = database.environ(LOG_FORMAT="json")
    environ["DATABASE_URL"] = f"postgresql://nectar_app_user:x@127.0.0.1:{free_port()}/nectarstudio_ai"
    settings = load_settings(Service.CORE, environ)
    app = create_core(settings)
    handler = log_handler("core", settings.observability)
    handler.stream = io.StringIO()
    app.logger.addHandler(handler)
    try:
        # /readyz with the database down logs a warning while it answers.
        response = app.test_client().get("/readyz", headers={"X-Request-ID": "trace-me-42"})
    finally:
        app.logger.removeHandler(handler)
    assert response.status_code == 503
    lines = [json.loads(line) for line in handler.stream.getvalue().splitlines()]
    assert lines and all(line["request_id"] == "trace-me-42" for line in lines)
    assert {"time", "level", "service", "logger", "message"} <= lines[0].keys()


def test_json_lines_hold_tracebacks_and_gunicorn_access_fields():
    formatter, request_filter = JsonFormatter("admin"), RequestIdFilter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=True)
        import sys

        record.exc_info = sys.exc_info()
    request_filter.filter(record)
    line = formatter.format(record)
    assert "\n" not in line and json.loads(line)["exception"].endswith("ValueError: bad\nthing")
    atoms = {"m": "GET", "U": "/x", "s": "200", "D": 12, "h": "10.0.0.1", "{x-request-id}o": "abc-1"}
    access = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(m)s %(U)s", (atoms,), None)
    request_filter.filter(access)
    parsed = json.loads(formatter.format(access))
    assert parsed["request_id"] == "abc-1" and parsed["path"] == "/x" and parsed["status"] == "200"


def test_a_worker_logs_a_jobs_routine_only_at_debug():
    quiet = WorkerLogFilter(periodic_tasks={"core.retry_stalled_jobs"})
    record = logging.LogRecord("procrastinate.worker", logging.INFO, __file__, 1, "Job started", (), None)
    record.action, record.job = "start_job", {"task_name": "core.activate_run"}
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert quiet.filter(record) is False
        root.setLevel(logging.DEBUG)
        assert quiet.filter(record) is True and record.levelname == "DEBUG"
    finally:
        root.setLevel(level)


def test_a_worker_serves_its_own_metrics_behind_the_token():
    observability = load_observability(
        {"METRICS_TOKEN": TOKEN, "WORKER_METRICS_PORT": str(free_port()), "HOST": "127.0.0.1"}
    )
    server = serve_worker_metrics(observability)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert requests.get(url, timeout=5).status_code == 401
        answer = requests.get(url, headers=AUTH, timeout=5)
        assert answer.status_code == 200 and "nectar_http_request_duration_seconds" in answer.text
        assert requests.get(url.replace("/metrics", "/other"), headers=AUTH, timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
    assert serve_worker_metrics(load_observability({})) is None


def test_gunicorn_workers_share_one_metrics_directory_made_and_emptied_at_start(database, tmp_path: Path):
    metrics_dir = tmp_path / "metrics" / "admin"  # each service its own, under the one given
    metrics_dir.mkdir(parents=True)
    (metrics_dir / "counter_999999.db").write_bytes(b"left over from an earlier run")
    environ = database.environ(
        METRICS_TOKEN=TOKEN,
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir.parent),
        LOG_FORMAT="json",
    )
    output = tmp_path / "admin.log"
    with service_process("nectar.admin.main", environ, output=output) as url:
        for _ in range(6):
            requests.get(f"{url}/healthz", timeout=5, headers={"X-Request-ID": "probe-1"})
        text = requests.get(f"{url}/metrics", headers=AUTH, timeout=5).text
        assert not (metrics_dir / "counter_999999.db").exists()
        assert any(metrics_dir.glob("histogram_*.db"))
    # At least the six calls and the start-up check, whichever worker answered each.
    assert _sample(text, "nectar_http_request_duration_seconds_count", route="/healthz", status="200") >= 6
    assert _sample(text, "nectar_metrics_database_up") == 1
    # LOG_FORMAT=json: every line gunicorn and the app wrote is one JSON object; the access lines
    # carry the request id the response did.
    lines = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    assert any(line["message"].startswith("admin: serving on") for line in lines)
    access = [
        line for line in lines if line["logger"] == "gunicorn.access" and line.get("path") == "/healthz"
    ]
    assert any(line.get("request_id") == "probe-1" for line in access)


def test_without_an_otlp_endpoint_nothing_is_traced(core):
    assert not tracing()
    assert isinstance(core.wsgi_app, ObservedRequests) and not core.wsgi_app.traced
    token = bind_request_id("job-42")
    try:
        with service_call("core POST accounts") as headers:
            assert headers == {"X-Request-ID": "job-42"}  # no traceparent: no span was started
    finally:
        unbind_request_id(token)


def test_the_example_dashboard_shows_only_metrics_the_services_expose(settings_for):
    dashboard = json.loads(Path("deploy/grafana/nectar-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    shown = set(re.findall(r"\bnectar_\w+", " ".join(queries)))
    count_run("api", "succeeded")
    marketing = create_marketing(settings_for(Service.MARKETING))
    marketing.test_client().get("/healthz")
    exposed = set(
        re.findall(r"^(nectar_\w+)", marketing.test_client().get("/metrics").get_data(as_text=True), re.M)
    )
    assert shown and shown <= exposed, shown - exposed


def test_the_pool_gauge_follows_connections_in_use(core):
    from nectar.shared.database import db

    def in_use() -> float:
        text = core.test_client().get("/metrics", headers=AUTH).get_data(as_text=True)
        return _sample(text, "nectar_db_pool_connections", state="in_use")

    with core.app_context():
        held = [db.engine.connect() for _ in range(2)]
        busy = in_use()
        for connection in held:
            connection.close()
        assert in_use() == busy - 2
