"""Benchmark: durable asynchronous runs through the job queue, against procrastinate's own no-op job
throughput on the same database in the same run.

    ./pants run benchmarks/async_runs.py                       # about 10 minutes
    ./pants run benchmarks/async_runs.py -- --runs 2000 --workers 1

Measured, each with one and with two worker processes (`core.pex worker`, as deployed):
- throughput: N runs of a three-step asynchronous workflow, queued at once (in lanes and priorities
  as the API queues them), until all finished, against N no-op procrastinate jobs run by workers
  with the same settings (goal: at least 50%), in alternating rounds (no-op jobs, runs, no-op jobs,
  ...) after a warm-up round, so a change in the shared machine's load falls on both; the median of
  the rounds' ratios is the figure; and the CPU time per job of the workers (from when they are
  ready: starting one is not a job's cost) and PostgreSQL together, for each kind (a figure other
  load on the machine moves less);
- resume latency: from a wait's due time to the next step starting, p50 and p99 (goal: p99 < 1 s);
- a 40-step run, queued to finished, on idle workers (goal: under 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import procrastinate
import psycopg

from benchmarks.servers import bench_server, cpu_seconds, postgres_cpu_seconds
from nectar.core import main as core_binary
from nectar.core.contract.runs import QUEUE, RUN_TASK
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role
from nectar.shared.embedded_postgres import EmbeddedServer
from nectar.shared.jobs import job_app
from tests.conftest import DatabaseUnderTest

DATABASE = "nectar_bench_runs"
THREE_STEPS = {
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "total", "type": "transform", "expression": "sum(trigger.items[].price)"},
        {"id": "remember", "type": "set", "values": {"total": "{{ steps.total }}"}},
        {"id": "answer", "type": "transform", "expression": "vars.total"},
    ],
}
WAIT_THEN_STEP = {
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "pause", "type": "wait", "until": "{{ trigger.until }}"},
        {"id": "after", "type": "set", "values": {"a": 1}},
    ],
}
FORTY_STEPS = {
    "trigger": {"type": "manual"},
    "steps": [{"id": f"s{i}", "type": "transform", "expression": f"`{i}`"} for i in range(40)],
}
NOOP_QUEUE = "bench"
ORG_LANES = 8  # the organization's share of the workers' slots: all of them (two workers of four)


def noop_tasks() -> procrastinate.Blueprint:
    tasks = procrastinate.Blueprint()

    @tasks.task(name="bench.noop", queue=NOOP_QUEUE)
    def noop() -> None:
        pass

    return tasks


def environ_for(server: EmbeddedServer) -> dict[str, str]:
    # One organization runs everything here: its share of the workers' slots (a fairness limit,
    # not what is measured) is set to all of them.
    return DatabaseUnderTest(server, DATABASE).environ(
        WORKER_CONCURRENCY="4", ORG_MAX_WORKER_RUNS=str(ORG_LANES)
    )


def admin(server: EmbeddedServer) -> psycopg.Connection:
    return DatabaseUnderTest(server, DATABASE).connect(Role.ADMIN, autocommit=True)


def seed(server: EmbeddedServer) -> dict[str, tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """A fresh database with one organization and the three workflows: name -> (org, workflow, version)."""
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    org, made = uuid.uuid4(), {}
    with admin(server) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, 'Bench', 'bench', 'pro')", (org,)
        )
        for name, definition in (("three", THREE_STEPS), ("wait", WAIT_THEN_STEP), ("forty", FORTY_STEPS)):
            workflow = conn.execute(
                "INSERT INTO workflows (org_id, name, current_version) VALUES (%s, %s, 1) RETURNING id",
                (org, name),
            ).fetchone()[0]
            version = conn.execute(
                "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) "
                "VALUES (%s, %s, 1, %s) RETURNING id",
                (org, workflow, json.dumps(definition)),
            ).fetchone()[0]
            made[name] = (org, workflow, version)
    return made


def vacuum_analyze(server: EmbeddedServer) -> None:
    """Fresh statistics and no dead rows before a round: right after thousands of rows were
    deleted, the planner would otherwise pick plans for the wrong table sizes until autovacuum
    came by, and whichever phase ran first would pay for it."""
    with DatabaseUnderTest(server, DATABASE).connect(Role.OWNER, autocommit=True) as conn:
        for table in ("procrastinate_jobs", "workflow_runs", "workflow_run_checkpoints"):
            conn.execute(f"VACUUM ANALYZE {table}")  # noqa: S608 - constant names


def queue_runs(server: EmbeddedServer, workflow: tuple, count: int, run_input: dict | list[dict]) -> float:
    """Queues `count` runs (with one input, or each with its own) and their activation jobs in one
    transaction, as queue_run would one by one: each run in its organization's lane (a
    procrastinate lock) with a priority behind the runs queued before it. Returns when it committed."""
    org, workflow_id, version_id = workflow
    inputs = run_input if isinstance(run_input, list) else [run_input] * count
    run_ids = [uuid.uuid4() for _ in range(count)]
    with admin(server) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO workflow_runs (id, org_id, workflow_id, version_id, trigger, status, input) "
            "SELECT r.id, %(org)s, %(workflow)s, %(version)s, 'manual', 'queued', r.input "
            "FROM unnest(%(ids)s::uuid[], %(inputs)s::jsonb[]) AS r(id, input)",
            {
                "org": org,
                "workflow": workflow_id,
                "version": version_id,
                "ids": run_ids,
                "inputs": [json.dumps(i) for i in inputs],
            },
        )
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, priority, args) "
            "SELECT %(queue)s, %(task)s, j.lock, j.priority, "
            "jsonb_build_object('org_id', %(org)s::text, 'run_id', j.run_id::text) "
            "FROM unnest(%(ids)s::uuid[], %(locks)s::text[], %(priorities)s::int[]) AS j(run_id, lock, priority)",
            {
                "queue": QUEUE,
                "task": RUN_TASK,
                "org": str(org),
                "ids": run_ids,
                "locks": [f"{RUN_TASK}:{org}:{run_id.int % ORG_LANES}" for run_id in run_ids],
                "priorities": [-n for n in range(count)],
            },
        )
    return time.time()


def queue_noops(server: EmbeddedServer, count: int) -> float:
    with admin(server) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT %s, 'bench.noop', '{}'::jsonb FROM generate_series(1, %s)",
            (NOOP_QUEUE, count),
        )
    return time.time()


def finished_runs(server: EmbeddedServer, workflow_id: uuid.UUID) -> tuple[int, float | None]:
    with admin(server) as conn:
        done, last = conn.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at)) FROM workflow_runs "
            "WHERE workflow_id = %s AND status IN ('succeeded', 'failed')",
            (workflow_id,),
        ).fetchone()
    return done, float(last) if last is not None else None


def finished_noops(server: EmbeddedServer) -> int:
    with admin(server) as conn:
        return conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'bench.noop' AND status = 'succeeded'"
        ).fetchone()[0]


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark: timed out")
        time.sleep(0.05)


class Workers:
    """`count` worker processes of one kind, started and ready before anything is queued."""

    def __init__(self, environ: dict[str, str], count: int, noop: bool):
        command = (
            [sys.executable, "-m", "benchmarks.async_runs", "--noop-worker"]
            if noop
            else [sys.executable, "-m", core_binary.__name__, "worker"]
        )
        env = {**os.environ, **environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.processes = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(count)
        ]
        for process in self.processes:
            said = []
            for line in process.stdout:
                said.append(line)
                if "worker: running jobs" in line:
                    break
            else:
                raise SystemExit("benchmark: a worker did not start:\n" + "".join(said[-20:]))
            # Keep reading what it says, or a full pipe would stop the worker mid-log.
            threading.Thread(target=process.stdout.read, daemon=True).start()
        # Starting (imports, the app, the pool) is not a job's cost: CPU is counted from here.
        self.started_cpu_seconds = self._cpu_seconds()

    def _cpu_seconds(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cpu_seconds = self._cpu_seconds() - self.started_cpu_seconds
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(30)


def run_noop_worker() -> None:
    from nectar.shared.config import Service, load_settings
    from nectar.shared.jobs import worker_command

    settings = load_settings(Service.CORE)

    def noop_worker():  # as core's worker (main._worker): WORKER_CONCURRENCY jobs at once
        app = job_app(settings.database_url, noop_tasks())
        app.worker_defaults["concurrency"] = settings.worker_concurrency
        return app, [NOOP_QUEUE]

    command = worker_command(noop_worker)
    command.run(argparse.Namespace(once=False))


class Round(NamedTuple):
    """One round's figures for each kind of job: jobs per second, and CPU milliseconds per job of
    the worker processes and of PostgreSQL (a figure other load on the machine moves less)."""

    noop_rate: float
    run_rate: float
    noop_cpu_ms: tuple[float, float]  # workers, PostgreSQL
    run_cpu_ms: tuple[float, float]


def throughput(server, environ, made, runs: int, workers: int) -> Round:
    """One round: `runs` no-op jobs, then `runs` runs, each drained by fresh workers."""
    with admin(server) as conn:  # each round counts only its own jobs and runs
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute("DELETE FROM workflow_runs")
    vacuum_analyze(server)
    with Workers(environ, workers, noop=True) as noop_workers:
        database_before = postgres_cpu_seconds(server)
        started = queue_noops(server, runs)
        wait_until(lambda: finished_noops(server) >= runs, 600)
        noop_rate = runs / (time.time() - started)
        noop_database = postgres_cpu_seconds(server) - database_before
    with Workers(environ, workers, noop=False) as run_workers:
        database_before = postgres_cpu_seconds(server)
        workflow = made["three"]
        items = {"items": [{"price": 3}, {"price": 4}]}
        started = queue_runs(server, workflow, runs, items)
        wait_until(lambda: finished_runs(server, workflow[1])[0] >= runs, 900)
        run_rate = runs / (finished_runs(server, workflow[1])[1] - started)
        run_database = postgres_cpu_seconds(server) - database_before
    return Round(
        noop_rate,
        run_rate,
        (1000 * noop_workers.cpu_seconds / runs, 1000 * noop_database / runs),
        (1000 * run_workers.cpu_seconds / runs, 1000 * run_database / runs),
    )


def resume_latencies(server, environ, made, runs: int) -> list[float]:
    """Waits due one after another over ten seconds, from three seconds on: what a wake-up costs,
    not how fast a burst of them drains (that is throughput)."""
    workflow = made["wait"]
    with Workers(environ, 2, noop=False):
        start = datetime.now(UTC) + timedelta(seconds=3)
        due = [{"until": (start + timedelta(seconds=10 * i / runs)).isoformat()} for i in range(runs)]
        queue_runs(server, workflow, runs, due)
        wait_until(lambda: finished_runs(server, workflow[1])[0] >= runs, 300)
    with admin(server) as conn:
        rows = conn.execute(
            "SELECT steps FROM workflow_runs WHERE workflow_id = %s AND status = 'succeeded'", (workflow[1],)
        ).fetchall()
    latencies = []
    for (steps,) in rows:
        due = datetime.fromisoformat(steps[0]["input"]["until"])
        latencies.append((datetime.fromisoformat(steps[1]["started_at"]) - due).total_seconds())
    return latencies


def forty_steps(server, environ, made, tries: int) -> list[float]:
    workflow, times = made["forty"], []
    with Workers(environ, 1, noop=False):
        time.sleep(1)  # idle, as a worker waiting for work is
        for _ in range(tries):
            before = finished_runs(server, workflow[1])[0]
            queued = queue_runs(server, workflow, 1, {})
            wait_until(lambda before=before: finished_runs(server, workflow[1])[0] > before, 30)
            times.append(finished_runs(server, workflow[1])[1] - queued)
            time.sleep(0.2)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2", help="worker process counts to measure")
    parser.add_argument("--rounds", type=int, default=5, help="no-op and run rounds, alternating")
    parser.add_argument("--noop-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_worker:
        run_noop_worker()
        return
    server = bench_server()
    made, environ = seed(server), environ_for(server)
    print(
        f"async runs: {args.runs} runs of a three-step workflow vs {args.runs} procrastinate no-op jobs, "
        f"in {args.rounds} alternating rounds of {args.runs // args.rounds} (the machine's load drifts)"
    )
    # Not counted: on a fresh database procrastinate's table has no column statistics until
    # autovacuum gathers them mid-round, and its job fetch is planned blind meanwhile (several
    # times slower for jobs with locks); a database in service has them.
    warm_up = throughput(server, environ, made, args.runs // args.rounds, 1)
    print(
        f"  warm-up round, not counted: no-op jobs {warm_up.noop_rate:,.0f}/s, runs {warm_up.run_rate:,.0f}/s"
    )
    for count in (int(n) for n in args.workers.split(",")):
        rounds = [
            throughput(server, environ, made, args.runs // args.rounds, count) for _ in range(args.rounds)
        ]
        noop_rate = statistics.mean(r.noop_rate for r in rounds)
        run_rate = statistics.mean(r.run_rate for r in rounds)
        ratios = sorted(r.run_rate / r.noop_rate for r in rounds)
        print(
            f"  {count} worker(s): no-op jobs {noop_rate:,.0f}/s, runs {run_rate:,.0f}/s (means of the rounds); "
            f"ratio per round {', '.join(f'{x:.0%}' for x in ratios)}, median {statistics.median(ratios):.0%} (goal 50%)"
        )
        noop_cpu = [statistics.median(r.noop_cpu_ms[part] for r in rounds) for part in (0, 1)]
        run_cpu = [statistics.median(r.run_cpu_ms[part] for r in rounds) for part in (0, 1)]
        print(
            f"    CPU per job (medians, workers + PostgreSQL): no-op {sum(noop_cpu):.2f} ms "
            f"({noop_cpu[0]:.2f} + {noop_cpu[1]:.2f}), run {sum(run_cpu):.2f} ms ({run_cpu[0]:.2f} + "
            f"{run_cpu[1]:.2f}); the ratio in CPU {sum(noop_cpu) / sum(run_cpu):.0%}"
        )
    latencies = resume_latencies(server, environ, made, 200)
    print(
        f"resume latency (200 waits due over 10 s, 2 workers): p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms (goal p99 < 1000 ms)"
    )
    times = forty_steps(server, environ, made, 10)
    print(
        f"40-step run, queued to finished (10 tries, 1 idle worker): median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms (goal < 500 ms)"
    )


if __name__ == "__main__":
    main()
