"""The embedded server: created once, safe to start from many processes at once, reused afterwards."""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from nectar.shared.config import Role
from nectar.shared.embedded_postgres import embedded_server_is_running, ensure_embedded_server


def _start_and_report(root: str, queue) -> None:
    server = ensure_embedded_server(Path(root), durable=False)
    queue.put(server.port)


@pytest.fixture
def fresh_root():
    base = Path(tempfile.mkdtemp(prefix="nectar-embedded-"))  # not under pytest's root: see own_server
    root = base / "postgres"
    yield root
    if embedded_server_is_running(root):
        ensure_embedded_server(root).stop()
    shutil.rmtree(base, ignore_errors=True)


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
