"""Benchmark: the tenant endpoint of endpoint_throughput.py through PgBouncer in transaction mode
against the same endpoint on direct connections, both under gunicorn with the same settings,
loaded by wrk from a separate process, in one run. The pooled server LISTENs on a direct
connection (DATABASE_LISTEN_URL), as production does.

    apt-get install wrk pgbouncer                  # once; Debian's packages
    ./pants run benchmarks/pooled_endpoint.py      # about 2 minutes (-- --seconds 10 --rounds 5)

Rounds alternate between the two servers, and the ratio reported is the median of the rounds'
ratios (the machine is shared and noisy). Goal: through PgBouncer at least 90% of the direct
requests per second. PostgreSQL runs with production durability (`-- --durability off` otherwise).
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.endpoint_throughput import (
    DATABASE,
    GUNICORN,
    chosen_workflow,
    free_port,
    load_options,
    post_script,
    recorded_runs,
    seed,
    serve,
    wait_for_quiet,
    wait_until_up,
    wrk,
)
from benchmarks.servers import BENCH_SERVER, bench_server, durability
from tests.conftest import DatabaseUnderTest
from tests.pgbouncer import PGBOUNCER, pgbouncer

GOAL = 0.9


def main() -> None:
    parser = load_options(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pool-size", type=int, default=8, help="PgBouncer's server connections per database and role"
    )
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), (PGBOUNCER, "pgbouncer")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install {package}")

    server = bench_server(durable=args.durability == "production")
    path = seed(server, chosen_workflow(args))
    directory = Path(tempfile.mkdtemp(prefix="bench-pgbouncer-", dir=BENCH_SERVER.resolve().parent))
    try:
        with pgbouncer(server, directory, pool_size=args.pool_size) as pooler:
            database = DatabaseUnderTest(server, DATABASE)
            environs = {"direct": database.environ(), "pgbouncer": database.through(pooler).environ()}
            rounds, answered = measure(server, environs, path, args)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    report(rounds, answered, server, args)


def measure(server, environs: dict[str, dict[str, str]], path: str, args) -> tuple[list[dict], int]:
    """Both servers under wrk, round after round; (each round's figures by server, calls answered)."""
    ports = {kind: free_port() for kind in environs}
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=serve, args=("core", ports[kind], environ), daemon=True)
        for kind, environ in environs.items()
    ]
    for process in processes:
        process.start()
    urls = {kind: f"http://127.0.0.1:{port}{path}" for kind, port in ports.items()}
    try:
        for url in urls.values():
            wait_until_up(url)
        script = post_script()
        rounds = []
        for _ in range(args.rounds):  # alternating, so both see the same machine
            result = {}
            for kind, url in urls.items():
                wait_for_quiet(server)
                result[kind] = wrk(url, args.connections, args.seconds, script)
            rounds.append(result)
    finally:
        for process in processes:
            process.terminate()
            process.join(10)
    refused = sum(r[kind]["non_2xx"] for r in rounds for kind in r)
    if refused:
        raise SystemExit(f"{refused} answers were not 2xx: the figures would not measure the same work")
    return rounds, sum(r[kind]["requests"] for r in rounds for kind in r)


def report(rounds: list[dict], answered: int, server, args) -> None:
    print(
        f"\ngunicorn {GUNICORN['workers']} workers x {GUNICORN['threads']} threads each; "
        f"wrk {args.connections} connections, {args.seconds} s a round, {args.rounds} rounds; "
        f"PgBouncer transaction mode, {args.pool_size} server connections; PostgreSQL with {durability(server)}\n"
    )
    print(
        f"{'round':>6} {'direct req/s':>13} {'PgBouncer req/s':>16} {'ratio':>7} {'p99 direct':>11} {'p99 pooled':>11}"
    )
    ratios = []
    for number, result in enumerate(rounds, 1):
        direct, pooled = result["direct"], result["pgbouncer"]
        ratios.append(pooled["rps"] / direct["rps"])
        print(
            f"{number:>6} {direct['rps']:>13.0f} {pooled['rps']:>16.0f} {ratios[-1]:>7.0%} "
            f"{direct['p99_ms']:>9.2f}ms {pooled['p99_ms']:>9.2f}ms"
        )
    ratio = statistics.median(ratios)
    print(
        f"\nthroughput through PgBouncer (median of rounds): {ratio:.0%} of direct connections "
        f"(goal >= {GOAL:.0%}: {'OK' if ratio >= GOAL else 'MISSED'})"
    )
    print(
        f"runs recorded: {recorded_runs(server)} for {answered} calls wrk counted (wrk leaves out those it cut off)"
    )


if __name__ == "__main__":
    main()
