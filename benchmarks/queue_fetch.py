"""Benchmark: the job queue's fetch under one organization's backlog, procrastinate's own
(`procrastinate_fetch_job_v2` as procrastinate 3.x ships it) against core's (migrations 0034 and
0035), on the same jobs in the same run.

    ./pants run benchmarks/queue_fetch.py        # about 2 minutes

A backlog of N runs goes round the organization's lanes (procrastinate locks: ORG_MAX_WORKER_RUNS,
2 by default). The connection has fetched before, as a worker's has (PL/pgSQL then keeps a generic
plan). The statistics are those of the backlog as queued, before any of it ran, and then those
taken before it was queued, while only lock-free jobs of another queue waited: a burst that
autovacuum has not caught up with (tests/core/test_queue_fetch.py also covers a worker's first
fetches then). Measured:
- a fetch that takes a job (a lane is free): a slot that finished asks for its next run;
- a fetch that finds nothing (every lane busy): what each idle slot does every POLL_SECONDS.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from importlib import resources

import psycopg

from benchmarks.servers import bench_server
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role
from tests.conftest import DatabaseUnderTest

DATABASE = "nectar_bench_queue"
PROCRASTINATES = "03.03.00_01_pre_priority_lock_fetch_job.sql"  # its fetch, as its migration made it


def procrastinates_fetch() -> str:
    """procrastinate's own fetch, created as pg_temp.procrastinate_fetch_job_v2 beside core's."""
    sql = resources.files("procrastinate.sql.migrations").joinpath(PROCRASTINATES).read_text()
    body = sql[sql.index("CREATE FUNCTION") :]
    return body.replace(
        "CREATE FUNCTION procrastinate_fetch_job_v2", "CREATE FUNCTION pg_temp.procrastinate_fetch_job_v2"
    )


def queue_backlog(conn: psycopg.Connection, runs: int, lanes: int, *, stale_statistics: bool) -> None:
    """The backlog, with statistics taken once it was queued, or (`stale_statistics`) before: while
    only lock-free jobs of another queue waited (a burst autovacuum has not caught up with)."""
    conn.execute("DELETE FROM procrastinate_jobs")
    if stale_statistics:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'other', 'other.task', '{}' FROM generate_series(1, 2000)"
        )
        conn.execute("ANALYZE procrastinate_jobs")
        conn.execute("DELETE FROM procrastinate_jobs")
    conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, priority, args, status) "
        "SELECT 'core', 'core.run_workflow', 'lane:' || (i %% %s), -i, '{}', 'todo' "
        "FROM generate_series(1, %s) i",
        (lanes, runs),
    )
    if not stale_statistics:
        conn.execute("ANALYZE procrastinate_jobs")


def measure(conn: psycopg.Connection, fetch: str, calls: int) -> tuple[list[float], list[float]]:
    """ms per fetch that took a job, and per fetch that found every lane busy."""
    took, empty = [], []

    def timed(into: list[float]):
        started = time.perf_counter()
        query = f"SELECT id FROM {fetch}(ARRAY['core'], NULL)"  # noqa: S608 - one of two constant names
        job = conn.execute(query).fetchone()[0]
        into.append((time.perf_counter() - started) * 1000)
        return job

    for _ in range(6):  # a worker's connection has fetched before: PL/pgSQL's generic plan from here on
        conn.execute(f"SELECT {fetch}(ARRAY['no-such-queue'], NULL)")  # noqa: S608 - constant
    running = []
    while len(took) < calls:
        while (job := timed(took)) is not None:  # fill every free lane
            running.append(job)
        took.pop()  # that last one found nothing: it counts as an empty fetch
        timed(empty)
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (running.pop(0),))
    return took, empty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", default="1000,10000")
    parser.add_argument("--lanes", default="2,8")
    parser.add_argument("--calls", type=int, default=12, help="fetches that take a job, per case and kind")
    args = parser.parse_args()
    server = bench_server()
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    print("ms per fetch call (median; max): procrastinate's own -> core's (migrations 0034, 0035)")
    with DatabaseUnderTest(server, DATABASE).connect(Role.OWNER) as conn:
        conn.execute(procrastinates_fetch())
        conn.commit()  # each case below is rolled back: the queue is left as it was
        cases = itertools.product(
            (False, True), (int(n) for n in args.backlogs.split(",")), (int(n) for n in args.lanes.split(","))
        )
        for stale, group in itertools.groupby(cases, key=lambda case: case[0]):
            print(
                "  statistics taken before the backlog was queued" if stale else "  statistics of the backlog"
            )
            for _, runs, lanes in group:
                figures = {}
                for name, fetch in (
                    ("procrastinate's", "pg_temp.procrastinate_fetch_job_v2"),
                    ("core's", "procrastinate_fetch_job_v2"),
                ):
                    queue_backlog(conn, runs, lanes, stale_statistics=stale)
                    figures[name] = measure(conn, fetch, args.calls)
                    conn.rollback()
                (their_took, their_empty), (our_took, our_empty) = figures.values()
                print(
                    f"    {runs:>6} runs in {lanes} lanes: takes a job {_ms(their_took)} -> {_ms(our_took)}; "
                    f"finds every lane busy {_ms(their_empty)} -> {_ms(our_empty)} "
                    f"({statistics.median(their_empty) / statistics.median(our_empty):,.0f}x)"
                )


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ms; {max(values):.2f}"


if __name__ == "__main__":
    main()
