"""What all three services promise alike: they start, answer health checks, say who they are, and
turn bad settings into one line on stderr."""

import re
import socket

import pytest

from nectar.admin import app as admin_app
from nectar.admin import main as admin_main
from nectar.core import app as core_app
from nectar.core import main as core_main
from nectar.marketing import app as marketing_app
from nectar.marketing import main as marketing_main
from nectar.shared.config import SERVICE_ROLES, Role, Service, load_settings
from nectar.shared.jobs import job_statement

SERVICES = list(Service)
MODULES = {
    (Service.CORE, "app"): core_app,
    (Service.CORE, "main"): core_main,
    (Service.MARKETING, "app"): marketing_app,
    (Service.MARKETING, "main"): marketing_main,
    (Service.ADMIN, "app"): admin_app,
    (Service.ADMIN, "main"): admin_main,
}


def _module(service: Service, name: str):
    return MODULES[(service, name)]


@pytest.fixture(params=SERVICES, ids=str)
def service(request) -> Service:
    return request.param


@pytest.fixture
def client(service, settings_for):
    app = _module(service, "app").create_app(settings_for(service))
    return app.test_client()


def test_healthz_says_the_process_is_alive(client, service):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "service": str(service)}


def test_readyz_checks_the_role_and_the_schema_version(client, service):
    from nectar.schema.migrate import head_revision

    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "ready"
    assert response.json["service"] == str(service)
    assert response.json["schema"] == head_revision()


def test_readyz_fails_when_the_schema_is_behind(service, pg_server, database):
    name = f"nectar_empty_{service}"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    try:
        from nectar.shared.config import load_settings

        environ = database.environ()
        environ[Role.APP.url_variable] = pg_server.url(Role.APP, name).render_as_string(hide_password=False)
        environ[Role.MARKETING.url_variable] = pg_server.url(Role.MARKETING, name).render_as_string(
            hide_password=False
        )
        environ[Role.ADMIN.url_variable] = pg_server.url(Role.ADMIN, name).render_as_string(
            hide_password=False
        )
        app = _module(service, "app").create_app(load_settings(service, environ))
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.json["status"] == 503
    finally:
        from nectar.shared.database import db

        with app.app_context():
            db.engine.dispose()
        pg_server.drop_database(name)


def test_only_staff_pages_name_the_service(client, service):
    # Every admin page needs a staff session: its sign-in page is the front door.
    response = client.get("/login" if service == Service.ADMIN else "/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    if service == Service.ADMIN:
        assert 'Nectar Studio <span class="badge">admin</span>' in page
        assert "admin service · test" in page
    else:  # customers meet one product, whichever service answers
        assert 'class="badge"' not in page
        assert f"{service} service" not in page
        assert "· test" not in page
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_service_has_its_icons(client, service):
    page = client.get("/login" if service == Service.ADMIN else "/").get_data(as_text=True)
    linked = re.findall(r'<link rel="((?:apple-touch-)?icon)" href="([^"]+)"', page)
    assert {rel for rel, _ in linked} == {"icon", "apple-touch-icon"}
    kinds = set()
    for _, href in linked:
        response = client.get(href)
        assert response.status_code == 200, href
        kinds.add(response.mimetype)
        if response.mimetype == "image/png":
            assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert kinds == {"image/svg+xml", "image/png"}
    # Browsers ask for /favicon.ico whatever a page links: an ICO holding the 32-pixel PNG.
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 200
    assert favicon.mimetype == "image/vnd.microsoft.icon"
    assert favicon.data[:4] == b"\x00\x00\x01\x00" and b"\x89PNG" in favicon.data
    assert "max-age" in favicon.headers["Cache-Control"]


def test_unknown_api_paths_get_a_problem_document(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["title"] == "Not Found"


def test_unknown_pages_get_an_html_error_page(client):
    response = client.get("/nothing-here", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "404" in response.get_data(as_text=True)


def test_each_service_uses_its_own_session_cookie(client, service):
    assert client.application.config["SESSION_COOKIE_NAME"] == f"nectar_{service}_session"
    assert client.application.config["SESSION_COOKIE_HTTPONLY"] is True
    assert client.application.config["SESSION_COOKIE_SAMESITE"] == "Lax"


# --- the command line: bad input is one line and a non-zero exit -----------------------------------


def _run_main(service, monkeypatch, capsys, environ, argv):
    for role in Role:
        monkeypatch.delenv(role.url_variable, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    code = _module(service, "main").main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _one_line_error(code, err, service, fragment):
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{service}: error: ")
    assert fragment in err


def test_a_malformed_database_url_is_one_line(service, monkeypatch, capsys, database):
    environ = database.environ(
        **{
            Role.APP.url_variable: "postgres//oops",
            Role.MARKETING.url_variable: "::",
            Role.ADMIN.url_variable: "http://x/y",
        }
    )
    code, err = _run_main(service, monkeypatch, capsys, environ, ["serve"])
    _one_line_error(
        code,
        err,
        service,
        "DATABASE_URL is not a database URL" if service == Service.CORE else "DATABASE_URL",
    )


def test_an_unreachable_database_is_one_line(service, monkeypatch, capsys, database):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = f"postgresql://nobody:pw@127.0.0.1:{dead_port}/nectarstudio_ai"
    environ = database.environ(**{role.url_variable: dead for role in Role})
    code, err = _run_main(service, monkeypatch, capsys, environ, ["serve"])
    _one_line_error(code, err, service, "cannot reach the database")


def test_a_port_in_use_is_one_line(service, monkeypatch, capsys, database):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, err = _run_main(
            service, monkeypatch, capsys, database.environ(PORT=str(port), HOST="127.0.0.1"), ["serve"]
        )
    _one_line_error(code, err, service, f"port {port} is already in use")


def test_migrate_is_a_command_of_its_own(service, monkeypatch, capsys, database):
    code = _run_main(service, monkeypatch, capsys, database.environ(), ["migrate"])[0]
    assert code == 0


def test_each_service_and_its_worker_work_through_pgbouncer(service, monkeypatch, capsys, database, pooler):
    """As production runs them: the service's URL through PgBouncer in transaction mode, LISTEN on
    a direct one. The worker runs a job of its queue (its upkeep) until the queue is empty."""
    pooled = database.through(pooler)
    app = _module(service, "app").create_app(load_settings(service, pooled.environ()))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready", ready.json
    role, queue = SERVICE_ROLES[service], str(service)
    with pooled.connect(role, autocommit=True) as conn:
        job = conn.execute(
            *job_statement(f"{queue}.remove_old_jobs", {"timestamp": 0}, queue=queue)
        ).fetchone()[0]
    code, err = _run_main(service, monkeypatch, capsys, pooled.environ(), ["worker", "--once"])
    assert code == 0 and "Traceback" not in err and "ERROR" not in err, err
    with pooled.connect(role) as conn:
        status = conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job[0],)).fetchone()[0]
    assert status == "succeeded", err
