"""Benchmark: a tenant endpoint whose workflow is transform -> condition -> respond, against a bare
Flask route returning the same JSON, both under gunicorn with the same settings, loaded by wrk
from a separate process, in one run; and the same endpoint with metrics off (A/B: their cost).
Also counts database round trips per endpoint call.

    apt-get install wrk                              # once; Debian's package
    ./pants run benchmarks/endpoint_throughput.py    # about 3 minutes (-- --seconds 10 --rounds 5)

The machine is shared and noisy: rounds alternate between the two servers and the ratio reported
is the median of the rounds' ratios.

Goals: at least 60% of the bare route's requests per second (runs metered, metrics on, tracing
off); metrics cost under 5% of an endpoint call; p99 under 15 ms at one connection; at most 5
database round trips per synchronous execution. PostgreSQL runs with
production durability (`-- --durability off` for the flattering figure).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
from flask import Flask, jsonify

from benchmarks.servers import bench_server, cpu_seconds, durability
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from nectar.shared.embedded_postgres import EmbeddedServer
from tests.conftest import DatabaseUnderTest

DATABASE = "nectar_bench_endpoints"
WORKFLOW = {
    "trigger": {"type": "http"},
    "steps": [
        {"id": "total", "type": "transform", "expression": "sum(trigger.body.items[].price)"},
        {
            "id": "check",
            "type": "condition",
            "if": "steps.total > `100`",
            "then": [
                {
                    "id": "big",
                    "type": "respond",
                    "status": 200,
                    "body": {"total": "{{ steps.total }}", "tier": "big"},
                }
            ],
            "else": [
                {
                    "id": "small",
                    "type": "respond",
                    "status": 200,
                    "body": {"total": "{{ steps.total }}", "tier": "small"},
                }
            ],
        },
    ],
}
BODY = {"items": [{"price": 80}, {"price": 30}]}
EXPECTED = {"total": 110, "tier": "big"}
# `--workflow respond`: the least an endpoint's workflow can do, answering the same JSON at once. What
# an endpoint costs beyond the bare route however little its workflow does (routing, limits, the
# run recorded and metered, metrics).
RESPOND_ONLY = {
    "trigger": {"type": "http"},
    "steps": [{"id": "answer", "type": "respond", "status": 200, "body": EXPECTED}],
}
GUNICORN = {
    "workers": 2,
    "worker_class": "gthread",
    "threads": 4,
    "accesslog": None,
    "errorlog": "-",
    "loglevel": "warning",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environ_for(server: EmbeddedServer) -> dict[str, str]:
    return DatabaseUnderTest(server, DATABASE).environ()


def admin_connection(server: EmbeddedServer) -> psycopg.Connection:
    return DatabaseUnderTest(server, DATABASE).connect(Role.ADMIN, autocommit=True)


def seed(server: EmbeddedServer, definition: dict = WORKFLOW) -> str:
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    org = uuid.uuid4()
    with admin_connection(server) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, 'Bench', 'bench', 'enterprise')",
            (org,),
        )
        workflow = conn.execute(
            "INSERT INTO workflows (org_id, name, current_version) VALUES (%s, 'totals', 1) RETURNING id",
            (org,),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, %s)",
            (org, workflow, json.dumps(definition)),
        )
        conn.execute(
            "INSERT INTO endpoints (org_id, method, path, workflow_id, auth) VALUES (%s, 'POST', '/orders/{id}/total', %s, 'public')",
            (org, workflow),
        )
    return f"/e/{org}/orders/A-17/total"


def bare_app() -> Flask:
    app = Flask("bare")

    @app.post("/bare")
    def bare():
        return jsonify(EXPECTED)

    return app


def serve(kind: str, port: int, environ: dict[str, str]) -> None:
    from nectar.shared.cli import _Gunicorn

    if kind.startswith("core"):
        from nectar.core.app import create_app
        from nectar.core.endpoints.service import PLAN_RATE_LIMITS

        # wrk calls faster than enterprise's 60,000 a minute. Each call is still counted against
        # the limit (that work is measured); the limit is only never reached.
        PLAN_RATE_LIMITS["enterprise"] = 10**9
        # One organization is all the load here: it may hold every thread (fairness still counts it).
        environ = {**environ, "ORG_MAX_THREADS": str(GUNICORN["threads"])}
        # Metering is always on (the database counts runs); metrics are on unless measured without.
        environ["METRICS_ENABLED"] = "false" if kind == "core-no-metrics" else "true"
        app = create_app(load_settings(Service.CORE, environ))
    else:
        app = bare_app()
    _Gunicorn(app, {**GUNICORN, "bind": f"127.0.0.1:{port}"}, None).run()


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data, headers = json.dumps(BODY).encode(), {"Content-Type": "application/json"}
            request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
                assert json.loads(response.read()) == EXPECTED, "the two servers must answer the same"
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, connections: int, seconds: int, script: Path) -> dict:
    output = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "requests": requests,
        "p99_ms": float(p99.group(1)) * scale,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def count_round_trips(environ: dict[str, str], path: str) -> int:
    """Network round trips to PostgreSQL for one call, read from libpq's protocol trace."""
    from nectar.core.app import create_app
    from nectar.core.runs.writer import run_writer
    from nectar.shared.database import RoundTrips, db

    app = create_app(load_settings(Service.CORE, environ))
    client = app.test_client()
    client.post(path, json=BODY)
    with app.app_context():
        writer = run_writer(db.engine)
    writer.flush()  # the warm-up call's run is not this call's
    with RoundTrips() as trips:
        assert client.post(path, json=BODY).json == EXPECTED
        writer.flush()  # the run is written just after the answer: count that too
    return trips.count


def load_options(description: str) -> argparse.ArgumentParser:
    """The options of every benchmark that loads endpoints with wrk."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workflow",
        choices=("three-steps", "respond"),
        default="three-steps",
        help="the endpoint's workflow: transform, condition, respond (the goal's), or respond only (the floor)",
    )
    parser.add_argument(
        "--durability",
        choices=("production", "off"),
        default="production",
        help="PostgreSQL's: production (the default), or fsync, synchronous_commit and full_page_writes off",
    )
    return parser


def chosen_workflow(args: argparse.Namespace) -> dict:
    return RESPOND_ONLY if args.workflow == "respond" else WORKFLOW


def post_script() -> Path:
    """wrk's Lua script: every request POSTs BODY as JSON."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(BODY))}\nwrk.headers["Content-Type"] = "application/json"\n'
        )
    return Path(script.name)


def main() -> None:
    args = load_options(__doc__.split("\n\n")[0]).parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    server = bench_server(durable=args.durability == "production")
    path = seed(server, chosen_workflow(args))
    environ = environ_for(server)
    trips = count_round_trips(environ, path)

    ports = {"bare": free_port(), "core": free_port(), "core-no-metrics": free_port()}
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=serve, args=(kind, port, environ), daemon=True) for kind, port in ports.items()
    ]
    for process in processes:
        process.start()
    urls = {
        "bare": f"http://127.0.0.1:{ports['bare']}/bare",
        "core": f"http://127.0.0.1:{ports['core']}{path}",
        "core-no-metrics": f"http://127.0.0.1:{ports['core-no-metrics']}{path}",
    }
    try:
        for url in urls.values():
            wait_until_up(url)
        script_path = post_script()
        rounds = []
        for _ in range(args.rounds):  # alternating, so all three see the same machine
            result = {}
            for (kind, url), process in zip(urls.items(), processes, strict=True):
                wait_for_quiet(server)
                cpu_before = cpu_seconds(process.pid)
                result[kind] = wrk(url, args.connections, args.seconds, script_path)
                result[kind]["cpu_ms"] = (
                    1000 * (cpu_seconds(process.pid) - cpu_before) / result[kind]["requests"]
                )
            rounds.append(result)
        single = {}
        for kind, url in urls.items():
            wait_for_quiet(server)
            single[kind] = wrk(url, 1, max(5, args.seconds // 2), script_path)
    finally:
        for process in processes:
            process.terminate()
            process.join(10)

    refused = sum(r[kind]["non_2xx"] for r in rounds for kind in r) + sum(
        s["non_2xx"] for s in single.values()
    )
    if refused:
        raise SystemExit(f"{refused} answers were not 2xx: the figures would not measure the same work")
    print(
        f"\ngunicorn {GUNICORN['workers']} workers x {GUNICORN['threads']} threads each; "
        f"wrk {args.connections} connections, {args.seconds} s a round, {args.rounds} rounds; "
        f"PostgreSQL with {durability(server)}\n"
    )
    print(
        f"{'round':>6} {'bare req/s':>11} {'endpoint req/s':>15} {'ratio':>7} "
        f"{'without metrics':>16} {'metrics cost':>13}   server CPU per call: bare, endpoint, without metrics"
    )
    ratios, costs, cpu_costs = [], [], []
    for number, result in enumerate(rounds, 1):
        ratios.append(result["core"]["rps"] / result["bare"]["rps"])
        costs.append(1 - result["core"]["rps"] / result["core-no-metrics"]["rps"])
        cpu_costs.append(1 - result["core-no-metrics"]["cpu_ms"] / result["core"]["cpu_ms"])
        print(
            f"{number:>6} {result['bare']['rps']:>11.0f} {result['core']['rps']:>15.0f} {ratios[-1]:>7.0%} "
            f"{result['core-no-metrics']['rps']:>16.0f} {costs[-1]:>13.1%}   "
            + ", ".join(f"{result[kind]['cpu_ms']:.3f} ms" for kind in urls)
        )
    ratio, cost, cpu_cost = statistics.median(ratios), statistics.median(costs), statistics.median(cpu_costs)
    print(
        f"\nthroughput ratio (median of rounds), metered, metrics on, tracing off: {ratio:.0%} of the bare route "
        f"(goal >= 60%: {'OK' if ratio >= 0.6 else 'MISSED'})"
    )
    print(
        f"cost of metrics on an endpoint call (median of rounds, A/B): {cost:.1%} (goal < 5%: {'OK' if cost < 0.05 else 'MISSED'})"
    )
    print(
        f"the same A/B in the endpoint server's CPU time per call (less sensitive to a busy machine): {cpu_cost:.1%}"
    )
    print(
        f"p99 at one connection: bare {single['bare']['p99_ms']:.2f} ms, endpoint {single['core']['p99_ms']:.2f} ms"
    )
    p99 = single["core"]["p99_ms"]
    print(f"endpoint p99 at one connection: {p99:.2f} ms (goal < 15 ms: {'OK' if p99 < 15 else 'MISSED'})")
    print(f"database round trips per call: {trips} (goal <= 5: {'OK' if trips <= 5 else 'MISSED'})")
    endpoints = ("core", "core-no-metrics")
    answered = sum(r[kind]["requests"] for r in rounds for kind in endpoints) + sum(
        single[k]["requests"] for k in endpoints
    )
    print(
        f"runs recorded: {recorded_runs(server)} for {answered} calls wrk counted (wrk leaves out those it cut off)"
    )


def wait_for_quiet(server: EmbeddedServer, limit: float = 60.0) -> None:
    """Waits until PostgreSQL is done with the last round's aftermath (autovacuum of the runs the
    endpoint wrote), so it does not slow the next round, whichever server that is."""
    deadline = time.monotonic() + limit
    with admin_connection(server) as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()[0]
            if not busy:
                break
            time.sleep(0.5)
    time.sleep(1)


def recorded_runs(server: EmbeddedServer) -> int:
    with admin_connection(server) as conn:
        return conn.execute("SELECT count(*) FROM workflow_runs WHERE trigger = 'http'").fetchone()[0]


if __name__ == "__main__":
    main()
