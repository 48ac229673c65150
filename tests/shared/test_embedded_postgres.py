"""The embedded server: created once, safe to start from many processes at once, reused afterwards;
started by commands (never by reading settings), stopped by one command or when idle."""

import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from nectar.devstack import main as devstack_main  # noqa: F401 - the documented `embedded-db stop`
from nectar.shared.config import ConfigError, Role, Service, load_settings
from nectar.shared.embedded_postgres import (
    embedded_server_is_running,
    ensure_embedded_server,
    stop_servers_under,
    use_embedded_database,
)
from tests.conftest import own_server_root


def _start_and_report(root: str, queue) -> None:
    server = ensure_embedded_server(Path(root), durable=False)
    queue.put(server.port)


@pytest.fixture
def fresh_var():
    """A var/ directory of the test's own (see own_server_root), its servers stopped afterwards."""
    var = own_server_root("embedded")
    yield var
    stop_servers_under(var)
    shutil.rmtree(var, ignore_errors=True)


@pytest.fixture
def fresh_root(fresh_var):
    return fresh_var / "postgres"


def test_concurrent_first_starts_share_one_server_and_a_second_run_reuses_it(fresh_root):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    starters = [context.Process(target=_start_and_report, args=(str(fresh_root), queue)) for _ in range(4)]
    for process in starters:
        process.start()
    for process in starters:
        process.join(120)
        assert process.exitcode == 0
    ports = {queue.get(timeout=5) for _ in starters}
    assert len(ports) == 1, f"four starters saw different servers: {ports}"

    again = ensure_embedded_server(fresh_root)
    assert again.port == ports.pop()
    assert (fresh_root / "credentials.json").stat().st_mode & 0o077 == 0, "credentials must be private"

    with psycopg.connect(**_params(again, Role.APP)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            "nectar_app_user",
            "nectarstudio_ai",
        )


def test_passwords_are_checked(pg_server):
    params = _params(pg_server, Role.APP)
    params["password"] = "wrong"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**params)


def test_the_server_listens_on_loopback_only(pg_server):
    with psycopg.connect(**_params(pg_server, "postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"


def _params(server, role) -> dict:
    url = server.url(role)
    return {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "connect_timeout": 5,
    }


def test_role_attributes_follow_design(pg_server):
    with psycopg.connect(**_params(pg_server, "postgres")) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin "
            "FROM pg_roles WHERE rolname LIKE 'nectar%' ORDER BY rolname"
        ).fetchall()
    assert rows == [
        ("nectar_admin", False, True, False, False, True),
        ("nectar_app_user", False, False, False, False, True),
        ("nectar_marketing", False, False, False, False, True),
        ("nectar_owner", False, False, False, False, True),
    ]


def test_the_owner_owns_the_product_database(pg_server):
    with psycopg.connect(**_params(pg_server, "postgres")) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'nectarstudio_ai'"
        ).fetchone()[0]
    assert owner == "nectar_owner"
    assert os.path.isdir(pg_server.root / "data")


def test_reading_settings_starts_nothing_and_a_command_starts_the_embedded_server_first(fresh_var):
    environ = {"NECTAR_VAR_DIR": str(fresh_var)}
    with pytest.raises(
        ConfigError, match="DATABASE_URL is not set and the embedded database was not started"
    ):
        load_settings(Service.CORE, environ)
    assert not (fresh_var / "postgres").exists(), "reading settings made a database directory"

    server = use_embedded_database(environ)  # what each binary's command and the launcher do first
    assert server is not None and embedded_server_is_running(fresh_var / "postgres")
    settings = load_settings(Service.CORE, environ)
    assert (settings.database_url.port, settings.database_url.username) == (server.port, "nectar_app_user")
    assert load_settings(Service.ADMIN, environ).database_url.username == "nectar_admin"


def test_configured_urls_or_production_never_start_the_embedded_server(fresh_var):
    for environ in (
        {"NECTAR_VAR_DIR": str(fresh_var), "DATABASE_URL": "postgresql://u:p@db.example/x"},
        {"NECTAR_VAR_DIR": str(fresh_var), "NECTAR_ENV": "production"},
    ):
        assert use_embedded_database(environ) is None
    assert not (fresh_var / "postgres").exists()


def _launcher(*args: str, var: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NECTAR_VAR_DIR": str(var), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "nectar.devstack.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_command_stops_every_embedded_server_under_var(fresh_var):
    services = ensure_embedded_server(fresh_var / "postgres", durable=False)
    tests = ensure_embedded_server(fresh_var / "test-postgres", durable=False)

    status = _launcher("embedded-db", "status", var=fresh_var)
    assert f"running on 127.0.0.1:{services.port}" in status.stdout
    assert f"running on 127.0.0.1:{tests.port}" in status.stdout

    stopped = _launcher("embedded-db", "stop", var=fresh_var)
    assert stopped.returncode == 0, stopped.stderr
    assert f"({services.root}): stopped" in stopped.stdout and f"({tests.root}): stopped" in stopped.stdout
    assert not embedded_server_is_running(services.root) and not embedded_server_is_running(tests.root)
    again = _launcher("embedded-db", "stop", var=fresh_var)
    assert again.returncode == 0 and "none running" in again.stdout


def _user(root: Path, *, stay: bool) -> subprocess.Popen:
    """A process that uses the server kept in `root` (idle time 1 s), then exits, or waits for its
    standard input to close."""
    code = (
        "import sys; from pathlib import Path; "
        "from nectar.shared.embedded_postgres import ensure_embedded_server; "
        f"ensure_embedded_server(Path({str(root)!r}), durable=False, stop_when_idle=1); "
        "print('using', flush=True); " + ("sys.stdin.read()" if stay else "")
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "using\n"
    return process


def _wait_until_stopped(root: Path) -> None:
    deadline = time.monotonic() + 60
    while embedded_server_is_running(root):
        assert time.monotonic() < deadline, "the idle server was not stopped"
        time.sleep(0.2)


def test_a_server_that_stops_when_idle_runs_while_any_user_lives(fresh_root):
    staying = _user(fresh_root, stay=True)
    _user(fresh_root, stay=False).wait(30)
    time.sleep(4)  # four idle times after the second user left: the first one still holds it
    assert embedded_server_is_running(fresh_root)
    staying.stdin.close()
    staying.wait(30)
    _wait_until_stopped(fresh_root)
    # The next user starts it again, and it stops again after that one.
    _user(fresh_root, stay=False).wait(30)
    _wait_until_stopped(fresh_root)
