"""A real PgBouncer in transaction mode in front of an embedded PostgreSQL server, as production runs
one: Debian's pgbouncer (`./pants test` installs it), on a free loopback port, for tests and
benchmarks. No `ignore_startup_parameters`: a connection that sends a startup option the pooler does
not know is refused, as it would be in production."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from nectar.shared.embedded_postgres import OS_USER, EmbeddedServer
from tests.serving import free_port

PGBOUNCER = "/usr/sbin/pgbouncer"
START_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Pooler:
    """A running PgBouncer: `through(url)` is `url` (to its server) by way of the pooler."""

    host: str
    port: int
    log: Path

    def through(self, url: URL) -> URL:
        return url.set(host=self.host, port=self.port)


def _config(server: EmbeddedServer, directory: Path, port: int, pool_size: int) -> str:
    return f"""[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""


@contextmanager
def pgbouncer(server: EmbeddedServer, directory: Path, *, pool_size: int = 4) -> Iterator[Pooler]:
    """PgBouncer in transaction mode for every role and database of `server`, its files in
    `directory`, at most `pool_size` server connections per database and role (few, so that
    clients share them, as they do under load); stopped when the block ends."""
    port = free_port()
    (directory / "pgbouncer.ini").write_text(_config(server, directory, port, pool_size))
    userlist = directory / "userlist.txt"
    userlist.write_text("".join(f'"{name}" "{password}"\n' for name, password in server.passwords.items()))
    user = OS_USER if os.geteuid() == 0 else None  # PgBouncer refuses to run as root
    if user is not None:
        account = pwd.getpwnam(user)
        for path in (directory, userlist, directory / "pgbouncer.ini"):
            os.chown(path, account.pw_uid, account.pw_gid)
    userlist.chmod(0o600)
    process = subprocess.Popen(
        [PGBOUNCER, str(directory / "pgbouncer.ini")],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    log = directory / "pgbouncer.log"
    try:
        _wait_until_listening(process, port, log)
        yield Pooler("127.0.0.1", port, log)
    finally:
        process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"pgbouncer exited ({process.returncode}): {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"pgbouncer did not listen within {START_TIMEOUT_SECONDS} s"
            time.sleep(0.05)
