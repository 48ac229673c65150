"""`./pants run :dev`: the whole system on one machine, for development.

Starts (or reuses) the embedded PostgreSQL server unless database URLs are set, migrates it, then runs
core, marketing and admin and their workers as child processes, each line of their output prefixed
with the process's name. A child that dies is started again, after 1 s, then twice as long each time
it dies again soon (at most 30 s), with one line saying so; only a child that refuses its settings
(exit status 2) while the stack starts ends the launch. Ctrl-C (or SIGTERM) stops everything it
started. Once all are ready, one banner says where each service is and how to sign in to admin.

`./pants run :dev -- embedded-db stop` stops every embedded server under var/ (the tests' too).
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from nectar.schema.migrate import upgrade
from nectar.shared.cli import embedded_database_command
from nectar.shared.config import (
    ConfigError,
    Role,
    Service,
    database_url,
    embedded_database_dir,
    running_pex,
    service_port,
    uses_embedded_database,
)
from nectar.shared.embedded_postgres import embedded_server_is_running, stop_server, use_embedded_database

READY_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 15
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60  # a child that ran this long before dying starts its backoff afresh
USAGE_ERROR = 2  # the services' exit status for settings a person must fix
COLOURS = {Service.CORE: "\033[36m", Service.MARKETING: "\033[35m", Service.ADMIN: "\033[33m"}
LABEL_WIDTH = 12


# What runs: each service's web process, and the workers of services that have background jobs.
PROCESSES = [
    (Service.CORE, "serve"),
    (Service.MARKETING, "serve"),
    (Service.ADMIN, "serve"),
    (Service.CORE, "worker"),
    (Service.MARKETING, "worker"),
    (Service.ADMIN, "worker"),
]
WORKER_READY = "worker: running jobs"
# Who gets CORE_ADMIN_TOKEN: core checks it, admin calls with it.
ADMIN_TOKEN_HOLDERS = (Service.CORE, Service.ADMIN)


@dataclass
class Child:
    service: Service
    command: str
    port: int
    environ: dict[str, str]
    process: subprocess.Popen | None = None
    started: threading.Event = field(default_factory=threading.Event)  # a worker said it runs
    started_at: float = 0.0
    restart_at: float | None = None  # when a dead child starts again
    restart_delay: float = RESTART_FIRST_SECONDS

    @property
    def label(self) -> str:
        return str(self.service) if self.command == "serve" else f"{self.service}-{self.command}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _say(message: str) -> None:
    print(f"{'dev':<{LABEL_WIDTH}} | {message}", flush=True)


def _self_command() -> list[str]:
    """How to start this same program again: the PEX file when running from one (Pants sets PEX)."""
    pex = running_pex()
    return [sys.executable, pex] if pex else [sys.executable, "-m", "nectar.devstack.main"]


def _relay(child: Child, process: subprocess.Popen) -> None:
    colour = COLOURS[child.service] if sys.stdout.isatty() else ""
    reset = "\033[0m" if colour else ""
    assert process.stdout is not None
    for line in process.stdout:
        if WORKER_READY in line:
            child.started.set()
        sys.stdout.write(f"{colour}{child.label:<{LABEL_WIDTH}}{reset} | {line}")
        sys.stdout.flush()


def _start(service: Service, command: str, environ: dict[str, str]) -> Child:
    port = service_port(service, environ)
    env = {**environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    if service not in ADMIN_TOKEN_HOLDERS:
        env.pop("CORE_ADMIN_TOKEN", None)  # marketing gets only its own, narrower credential
    env.setdefault("WEB_CONCURRENCY", "1")
    child = Child(service, command, port, env)
    _spawn(child)
    return child


def _spawn(child: Child) -> None:
    child.started.clear()
    child.started_at = time.monotonic()
    child.process = subprocess.Popen(
        [*_self_command(), "service", str(child.service), child.command],
        env=child.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches only the launcher, which stops the children in order
    )
    threading.Thread(target=_relay, args=(child, child.process), daemon=True).start()


def _restart_dead(children: list[Child], *, starting: bool) -> None:
    """Starts again each child that died, once its backoff has passed; says so once per death.
    While the stack starts, a child that refuses its settings raises ChildExited: it would refuse
    them again."""
    now = time.monotonic()
    for child in children:
        status = child.process.poll()
        if status is None:
            continue
        if child.restart_at is None:
            if starting and status == USAGE_ERROR:
                raise ChildExited(child)
            if now - child.started_at >= STABLE_SECONDS:
                child.restart_delay = RESTART_FIRST_SECONDS
            child.restart_at = now + child.restart_delay
            _say(
                f"{child.label} exited with status {status}; starting it again in {child.restart_delay:.0f} s"
            )
            child.restart_delay = min(child.restart_delay * 2, RESTART_MAX_SECONDS)
        elif now >= child.restart_at:
            child.restart_at = None
            _spawn(child)


def _ready(child: Child) -> bool:
    if child.process.poll() is not None:
        return False
    if child.command != "serve":
        return child.started.is_set()
    try:
        with urllib.request.urlopen(f"{child.url}/readyz", timeout=2) as response:  # noqa: S310 - our own URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()


def launch() -> int:
    environ = dict(os.environ)
    # The services authenticate to core's contract, each with its own credential; new ones per dev run.
    environ.setdefault("CORE_SERVICE_TOKEN", secrets.token_urlsafe(32))
    environ.setdefault("CORE_ADMIN_TOKEN", secrets.token_urlsafe(32))
    # One signing key for every process of this run: links the marketing worker signs (unsubscribe in
    # a campaign) must open on the marketing site, and admin's test sends must too.
    environ.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    # Every child knows every port, so the URLs each derives for the others (API and public) agree.
    for service in Service:
        environ[f"{service.upper()}_PORT"] = str(service_port(service, environ))
    database_root = embedded_database_dir(environ)
    started_database = uses_embedded_database(environ) and not embedded_server_is_running(database_root)
    server = use_embedded_database(environ)  # sets the URL variables the children inherit
    if server is not None:
        _say(f"database: embedded PostgreSQL at 127.0.0.1:{server.port} (data in {server.root})")
    owner_url = database_url(Role.OWNER, environ)
    upgrade(owner_url)
    _say(f"database: {owner_url.database} migrated to head")
    staff_sign_in = _seed_staff(environ)

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    children = [_start(service, command, environ) for service, command in PROCESSES]
    exit_code = 0
    try:
        pending = list(children)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while pending and not stopping.is_set():
            _restart_dead(children, starting=True)
            pending = [child for child in pending if not _ready(child)]
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"{', '.join(c.service for c in pending)} did not become ready in {READY_TIMEOUT_SECONDS} s"
                )
            time.sleep(0.3)
        if not stopping.is_set():
            _banner(children, staff_sign_in)
        while not stopping.wait(0.5):
            _restart_dead(children, starting=False)
        _say("stopping...")
    except ChildExited as exited:
        _say(f"{exited.child.label} refused its settings (status {USAGE_ERROR}); stopping the others")
        exit_code = 1
    finally:
        _stop(children)
        if started_database:
            stop_server(database_root)
            _say("database: embedded PostgreSQL stopped")
    return exit_code


def _banner(children: list[Child], staff_sign_in: str) -> None:
    """The last thing said before the stack goes quiet: where everything is, and how to get in."""
    _say("Nectar Studio is up:")
    for child in children:
        if child.command == "serve":
            _say(f"  {child.label:<{LABEL_WIDTH}} {child.url}")
    workers = ", ".join(str(child.service) for child in children if child.command != "serve")
    _say(f"  {'workers':<{LABEL_WIDTH}} {workers}: running background jobs")
    _say(staff_sign_in)
    _say("Ctrl-C stops everything.")


def _seed_staff(environ: dict[str, str]) -> str:
    """A first superadmin for the admin service, made once. Returns how to sign in to admin: its
    password on the run that made it (it exists nowhere else), else how to add staff."""
    from nectar.admin.commands import seed_superadmin

    seeded = seed_superadmin(database_url(Role.ADMIN, environ))
    if seeded:
        _say(f"admin: created superadmin {seeded[0]}")
        return (
            f"admin sign-in: {seeded[0]} with password {seeded[1]} (shown this once; "
            "admin asks for a TOTP authenticator at the first sign-in)"
        )
    return (
        "admin sign-in: with your staff account; to add one: ./pants run src/python/nectar/admin:binary -- "
        "create-staff --email you@example.com --role superadmin"
    )


class ChildExited(Exception):
    def __init__(self, child: Child):
        super().__init__(child.service)
        self.child = child


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["service"] and len(argv) >= 2 and argv[1] in set(Service):
        # A child started by `launch`: run that service's own command line.
        return importlib.import_module(f"nectar.{argv[1]}.main").main(argv[2:])
    if argv[:1] == ["embedded-db"]:
        parser = argparse.ArgumentParser(prog="dev embedded-db", description=embedded_database_command.help)
        embedded_database_command.configure(parser)
        return embedded_database_command.run(parser.parse_args(argv[1:])) or 0
    try:
        return launch()
    except ConfigError as error:
        print(f"dev: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
