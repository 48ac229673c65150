"""The command line every service binary has: `serve` (the default), `migrate`, and what a service adds.

Errors a person can fix (bad settings, unreachable database, port taken) end as one line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import gc
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flask import Flask
from gunicorn.app.base import Application

from nectar.shared.config import (
    ConfigError,
    Service,
    Settings,
    embedded_database_dir,
    load_observability,
    load_serve_settings,
    load_settings,
    var_dir,
)
from nectar.shared.database import check_connection
from nectar.shared.embedded_postgres import (
    ensure_embedded_server,
    running_port,
    servers_under,
    stop_servers_under,
    use_embedded_database,
)
from nectar.shared.logs import announce, configure_logging, gunicorn_log_config
from nectar.shared.metrics import mark_worker_dead, use_multiprocess_dir

USAGE_ERROR = 2


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[argparse.Namespace], int | None]
    configure: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # With no database URL set, the embedded server is started before the command reads settings.
    uses_database: bool = True


class _Gunicorn(Application):
    """Gunicorn serving an app object built here, so settings are validated once, before any fork."""

    def __init__(self, app: Flask, options: dict, config_file: str | None):
        self._app, self._options, self._config_file = app, options, config_file
        super().__init__()

    def init(self, parser, opts, args):  # gunicorn's own argv parsing is not used
        return None

    def load_config(self):
        # Built-in defaults first, so a deploy/gunicorn/*.py file can override any of them.
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if self._config_file:
            self.load_config_from_file(self._config_file)

    def load(self):
        return self._app

    def run(self):
        # What exists now (the app, its modules and settings) lives as long as the process. Frozen,
        # the garbage collector stops walking it again on every pass (a full pass over it took
        # longer than a whole endpoint call under load), and forked workers keep sharing its pages.
        gc.freeze()
        super().run()


def ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} is already in use on {host}; stop what holds it or set PORT"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def serve(service: Service, create_app: Callable[[Settings], Flask], args: argparse.Namespace) -> int:
    settings = load_settings(service)
    check_connection(settings.database_url)
    serving = load_serve_settings()
    host = serving.host
    ensure_port_free(host, settings.port)
    options = {
        "bind": f"{host}:{settings.port}",
        "workers": serving.workers,
        "worker_class": "gthread",
        "threads": settings.web_threads,  # ORG_MAX_THREADS is a share of these
        "timeout": 30,
        "graceful_timeout": 20,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": f"nectar-{service}",
        "forwarded_allow_ips": serving.forwarded_allow_ips,
        "child_exit": lambda _server, worker: mark_worker_dead(worker.pid),
    }
    log_config = gunicorn_log_config(str(service), settings.observability)
    if log_config is not None:
        options["logconfig_dict"] = log_config
    if args.config and not os.path.isfile(args.config):
        raise ConfigError(f"gunicorn configuration file {args.config} does not exist")
    # Before the app exists: its metrics' values go to files its forked workers share.
    use_multiprocess_dir(settings.observability, str(service))
    app = create_app(settings)
    announce(f"{service}: serving on http://{host}:{settings.port} ({settings.environment})", file=sys.stderr)
    _Gunicorn(app, options, args.config).run()
    return 0


def _embedded_database(args: argparse.Namespace) -> int:
    var = var_dir()
    if args.action == "start":  # the services' server, as `serve` would start it
        server = ensure_embedded_server(embedded_database_dir())
        print(f"embedded PostgreSQL ({server.root}): running on 127.0.0.1:{server.port}")
        return 0
    if args.action == "stop":
        stopped = stop_servers_under(var)
        for root in stopped:
            print(f"embedded PostgreSQL ({root}): stopped")
        if not stopped:
            print(f"embedded PostgreSQL: none running under {var}")
        return 0
    roots = servers_under(var)
    for root in roots:
        port = running_port(root)
        print(f"embedded PostgreSQL ({root}): {f'running on 127.0.0.1:{port}' if port else 'not running'}")
    if not roots:
        print(f"embedded PostgreSQL: none under {var}")
    return 0


embedded_database_command = Command(
    help="start the services' embedded PostgreSQL (var/postgres), or the status or stop of every one "
    "under NECTAR_VAR_DIR (default ./var): the services', the tests' (var/test-postgres) and the benchmarks'",
    run=_embedded_database,
    configure=lambda parser: parser.add_argument("action", choices=["start", "status", "stop"]),
    uses_database=False,
)


def run_service_cli(
    service: Service,
    create_app: Callable[[Settings], Flask],
    commands: dict[str, Command],
    argv: Sequence[str] | None = None,
) -> int:
    """Parses `argv` and runs the chosen command; `serve` is the default."""
    parser = argparse.ArgumentParser(prog=str(service), description=f"Nectar Studio {service} service")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = sub.add_parser(
        "serve", help=f"serve under gunicorn on PORT (default {service.default_port})"
    )
    serve_parser.add_argument("--config", help="a gunicorn configuration file (see deploy/gunicorn/)")
    commands = {**commands, "embedded-db": embedded_database_command}
    for name, command in commands.items():
        command.configure(sub.add_parser(name, help=command.help))
    args = parser.parse_args(argv)
    try:
        configure_logging(str(service), load_observability())
        if args.command in (None, "serve"):
            if args.command is None:
                args.config = None
            use_embedded_database()
            return serve(service, create_app, args)
        command = commands[args.command]
        if command.uses_database:
            use_embedded_database()
        return command.run(args) or 0
    except ConfigError as error:
        print(f"{service}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
