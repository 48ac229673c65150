"""Benchmark: a tenant-scoped query through row-level security versus the same query with an explicit
`WHERE org_id = ...`, on about 1M workflow runs across 100 organizations, in one run; plus the cost
of setting the tenant at the start of each transaction.

    ./pants run benchmarks/rls_overhead.py            # seeds once under var/bench-postgres, then measures
    ./pants run benchmarks/rls_overhead.py -- --reseed

Both sides use the same table, the same index (org_id, queued_at) and prepared statements. The RLS
side runs as nectar_app_user with the tenant set; the explicit side as nectar_admin (BYPASSRLS), so
no policy applies there. Batches alternate between the two to spread machine noise evenly.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg

from benchmarks.servers import bench_server
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role
from nectar.shared.database import SET_TENANT_SQL
from nectar.shared.embedded_postgres import EmbeddedServer

DATABASE = "nectar_bench"
ORGS = 100
RUNS_PER_ORG = 10_000
QUERIES = {
    "latest 50 runs": (
        "SELECT id, status, queued_at FROM workflow_runs {where} ORDER BY queued_at DESC LIMIT 50",
        "WHERE org_id = %s",
    ),
    "runs per status, last 7 days": (
        "SELECT status, count(*) FROM workflow_runs WHERE {where} queued_at > now() - interval '7 days' GROUP BY status",
        "org_id = %s AND",
    ),
}


def connect(server: EmbeddedServer, role: Role | str, **kwargs) -> psycopg.Connection:
    url = server.url(role, DATABASE)
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=DATABASE, **kwargs
    )


def seed(server: EmbeddedServer, reseed: bool) -> list[uuid.UUID]:
    with server.connect_as_superuser() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    if exists and not reseed:
        with connect(server, Role.ADMIN) as conn:
            if conn.execute("SELECT count(*) FROM workflow_runs").fetchone()[0] == ORGS * RUNS_PER_ORG:
                return [row[0] for row in conn.execute("SELECT id FROM organizations ORDER BY id")]
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    started = time.perf_counter()
    with connect(server, Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (name, slug) SELECT 'Org ' || n, 'org-' || n FROM generate_series(1, %s) n",
            (ORGS,),
        )
        conn.execute(
            "INSERT INTO workflows (org_id, name, current_version) SELECT id, 'main', 1 FROM organizations"
        )
        conn.execute(
            "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) "
            "SELECT org_id, id, 1, '{}' FROM workflows"
        )
        conn.execute(
            """
            INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, queued_at)
            SELECT v.org_id, v.workflow_id, v.id, 'http',
                   (ARRAY['succeeded', 'succeeded', 'succeeded', 'failed', 'running'])[1 + (n %% 5)],
                   now() - (n * interval '37 seconds')
            FROM workflow_versions v CROSS JOIN generate_series(1, %s) n
            """,
            (RUNS_PER_ORG,),
        )
        conn.execute("VACUUM ANALYZE")
    print(
        f"seeded {ORGS * RUNS_PER_ORG:,} runs across {ORGS} organizations in {time.perf_counter() - started:.1f} s"
    )
    with connect(server, Role.ADMIN) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM organizations ORDER BY id")]


def time_queries(conn: psycopg.Connection, sql: str, orgs: list[uuid.UUID], *, rls: bool) -> list[float]:
    """Seconds per execution (execute + fetch), one transaction per organization visited."""
    samples = []
    for org in orgs:
        with conn.transaction():
            if rls:
                conn.execute(SET_TENANT_SQL, (str(org),))
            params = () if rls else (org,)
            started = time.perf_counter()
            conn.execute(sql, params, prepare=True).fetchall()
            samples.append(time.perf_counter() - started)
    return samples


def time_transactions(conn: psycopg.Connection, orgs: list[uuid.UUID], *, set_tenant: bool) -> float:
    """Mean seconds per transaction of `SELECT 1`, with or without setting the tenant first."""
    started = time.perf_counter()
    for org in orgs:
        with conn.transaction():
            if set_tenant:
                conn.execute(SET_TENANT_SQL, (str(org),), prepare=True)
            conn.execute("SELECT 1", prepare=True).fetchall()
    return (time.perf_counter() - started) / len(orgs)


def server_side_cost(conn: psycopg.Connection, org: uuid.UUID, calls: int = 100_000) -> float:
    """Milliseconds PostgreSQL itself spends per set_config call, with no network in between."""
    with conn.transaction():
        started = time.perf_counter()
        conn.execute(
            "SELECT count(set_config('nectar.org_id', %s, true)) FROM generate_series(1, %s)",
            (str(org), calls),
        )
        with_call = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("SELECT count(%s::text) FROM generate_series(1, %s)", (str(org), calls))
        without = time.perf_counter() - started
    return (with_call - without) / calls * 1000


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=20, help="alternating batches per query (each visits all orgs)"
    )
    args = parser.parse_args()

    server = bench_server()
    print(f"database: {server.root}")
    orgs = seed(server, args.reseed)
    with connect(server, Role.APP) as app, connect(server, Role.ADMIN) as admin:
        print(
            f"\n{ORGS * RUNS_PER_ORG:,} workflow runs, {ORGS} organizations; {args.rounds} rounds x {ORGS} queries per side\n"
        )
        for name, (template, explicit_where) in QUERIES.items():
            rls_sql = template.format(where="")
            explicit_sql = template.format(where=explicit_where)
            rls_samples: list[float] = []
            explicit_samples: list[float] = []
            time_queries(app, rls_sql, orgs[:10], rls=True)  # warm caches and prepare
            time_queries(admin, explicit_sql, orgs[:10], rls=False)
            for round_number in range(args.rounds):
                # Alternate which side goes first, so neither always meets the other's cache state.
                sides = [(rls_samples, app, rls_sql, True), (explicit_samples, admin, explicit_sql, False)]
                for samples, conn, sql, rls in sides if round_number % 2 == 0 else reversed(sides):
                    samples += time_queries(conn, sql, orgs, rls=rls)
            ratio = p50(rls_samples) / p50(explicit_samples)
            mean_ratio = statistics.mean(rls_samples) / statistics.mean(explicit_samples)
            print(f"{name}:")
            print(
                f"  through RLS        p50 {p50(rls_samples):.3f} ms   mean {statistics.mean(rls_samples) * 1000:.3f} ms"
            )
            print(
                f"  explicit WHERE     p50 {p50(explicit_samples):.3f} ms   mean {statistics.mean(explicit_samples) * 1000:.3f} ms"
            )
            print(
                f"  ratio (p50)        {ratio:.3f}x   goal <= 1.10x   {'OK' if ratio <= 1.10 else 'MISSED'}"
            )
            print(f"  ratio (mean)       {mean_ratio:.3f}x\n")

        with app.transaction():
            app.execute(SET_TENANT_SQL, (str(orgs[0]),))
            plan = app.execute("EXPLAIN " + QUERIES["latest 50 runs"][0].format(where="")).fetchall()
        print("EXPLAIN (through RLS, as nectar_app_user):")
        for (line,) in plan:
            print(f"  {line}")

        tenant_orgs = orgs * 50
        time_transactions(app, orgs, set_tenant=True)
        plain = min(time_transactions(app, tenant_orgs, set_tenant=False) for _ in range(3)) * 1000
        scoped = min(time_transactions(app, tenant_orgs, set_tenant=True) for _ in range(3)) * 1000
        round_trip = scoped - plain
        server = server_side_cost(app, orgs[0])
        print(
            f"\nsetting the tenant per transaction ({len(tenant_orgs):,} transactions of SELECT 1, best of 3):"
        )
        print(f"  BEGIN; SELECT 1; COMMIT                    {plain:.3f} ms")
        print(f"  BEGIN; set_config; SELECT 1; COMMIT        {scoped:.3f} ms")
        print(
            f"  wall cost per transaction (one round trip) {round_trip:.3f} ms   goal < 0.05 ms   {'OK' if round_trip < 0.05 else 'MISSED'}"
        )
        print(f"  PostgreSQL's own cost per set_config       {server:.4f} ms")


if __name__ == "__main__":
    main()
