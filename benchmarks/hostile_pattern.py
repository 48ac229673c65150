"""A catastrophic regular expression in a tenant's schema: a public endpoint whose request schema has
`"pattern": "^(a+)+$"`, called with a body of n letters and a "!", while /healthz and another
organization's endpoint are called every 50 ms on the same process (gunicorn, one worker with four
threads, as the dev launcher runs core).

    ./pants run benchmarks/hostile_pattern.py                       # lengths 20, 24, 27
    ./pants run benchmarks/hostile_pattern.py -- --lengths 27 64 200000

With Python's re each letter more doubled the call's time (27 took 6.6 s), and /healthz stalled
as long, since the match held the interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
import uuid

import requests

from benchmarks.endpoint_throughput import free_port
from benchmarks.servers import bench_server
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from nectar.shared.embedded_postgres import EmbeddedServer
from tests.conftest import DatabaseUnderTest

DATABASE = "nectar_bench_hostile"
ECHO = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "body": "{{ trigger.body }}"}]}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}


def seed(server: EmbeddedServer) -> tuple[str, str]:
    """Two organizations, each with a public endpoint: the hostile one checks bodies against
    SCHEMA (stored directly, as an endpoint saved before patterns were checked would be)."""
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    paths = []
    with DatabaseUnderTest(server, DATABASE).connect(Role.ADMIN, autocommit=True) as conn:
        for name, schema in (("hostile", SCHEMA), ("other", None)):
            org = uuid.uuid4()
            conn.execute(
                "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, %s, %s, 'enterprise')",
                (org, name, name),
            )
            workflow = conn.execute(
                "INSERT INTO workflows (org_id, name, current_version) VALUES (%s, 'echo', 1) RETURNING id",
                (org,),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, %s)",
                (org, workflow, json.dumps(ECHO)),
            )
            conn.execute(
                "INSERT INTO endpoints (org_id, method, path, workflow_id, auth, request_schema) "
                "VALUES (%s, 'POST', '/echo', %s, 'public', %s)",
                (org, workflow, json.dumps(schema) if schema else None),
            )
            paths.append(f"/e/{org}/echo")
    return paths[0], paths[1]


def serve(port: int, environ: dict[str, str]) -> None:
    from nectar.core.app import create_app
    from nectar.shared.cli import _Gunicorn

    app = create_app(load_settings(Service.CORE, environ))
    options = {"bind": f"127.0.0.1:{port}", "workers": 1, "worker_class": "gthread", "threads": 4}
    _Gunicorn(
        app, {**options, "accesslog": None, "errorlog": "-", "loglevel": "warning", "timeout": 120}, None
    ).run()


def time_answers(base: str, other_path: str, stop: threading.Event, slowest: dict[str, float]) -> None:
    """Calls /healthz and the other organization's endpoint every 50 ms until `stop`, keeping the
    slowest answer of each (seconds) in `slowest`."""
    slowest.update(healthz=0.0, other=0.0)
    while not stop.is_set():
        for name, call in (
            ("healthz", lambda: requests.get(base + "/healthz", timeout=300)),
            ("other", lambda: requests.post(base + other_path, json={"hi": 1}, timeout=300)),
        ):
            started = time.monotonic()
            assert call().status_code == 200
            slowest[name] = max(slowest[name], time.monotonic() - started)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 24, 27])
    args = parser.parse_args()
    server = bench_server()
    hostile_path, other_path = seed(server)
    environ = DatabaseUnderTest(server, DATABASE).environ()
    port = free_port()
    process = multiprocessing.get_context("fork").Process(target=serve, args=(port, environ), daemon=True)
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.post(base + other_path, json={}, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        print(
            f"{'letters':>8} {'status':>7} {'call s':>8} {'slowest /healthz s':>19} {'slowest other org s':>20}"
        )
        for length in args.lengths:
            stop, result = threading.Event(), {}
            poller = threading.Thread(target=time_answers, args=(base, other_path, stop, result))
            poller.start()
            time.sleep(0.2)
            started = time.monotonic()
            answer = requests.post(base + hostile_path, json={"name": "a" * length + "!"}, timeout=300)
            seconds = time.monotonic() - started
            time.sleep(0.2)
            stop.set()
            poller.join()
            print(
                f"{length:>8} {answer.status_code:>7} {seconds:>8.3f} {result['healthz']:>19.3f} {result['other']:>20.3f}"
            )
    finally:
        process.terminate()
        process.join(10)


if __name__ == "__main__":
    main()
