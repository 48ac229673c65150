"""Benchmark: admin's leads list on 1,000,000 leads. Times the list page (through the real Flask app,
signed in as staff) and its queries for the first page, filtered pages, searches and a deep page,
against a naive full COUNT(*), in one run.

    ./pants run benchmarks/admin_leads_list.py            # seeds once under var/bench-postgres, then measures
    ./pants run benchmarks/admin_leads_list.py -- --reseed --rounds 30

The seed lives in its own database (nectar_bench_admin_leads) on the benchmark server, so it never
mixes with the development or test data. "whole page" is a GET of /leads/ through the Flask app
(gate, filters, rows, capped count, stage tabs, template), with no network in between. The page's
queries are what admin's `paginate` runs: LIMIT per_page + 1 at an OFFSET, plus a count capped at
10,001 rows, never a full COUNT(*).

Substring search (email, name, company) uses the pg_trgm indexes of migration 0007.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import psycopg

from benchmarks.servers import bench_server
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from nectar.shared.embedded_postgres import EmbeddedServer

DATABASE = "nectar_bench_admin_leads"
LEADS = 1_000_000
STAFF_EMAIL = "bench@staff.example.com"
STAFF_PASSWORD = "benchmark password long enough 42"  # noqa: S105 - a throwaway benchmark database
# (label, query string of the list page)
PAGES = [
    ("first page, no filter", ""),
    ("stage = won", "stage=won"),
    ("stage = won, page 20", "stage=won&page=20"),
    ("source = pricing", "source=pricing"),
    ("created in one week", "created_from={week_start}&created_to={week_end}"),
    ("search, common (company 42)", "q=Company+42"),
    ("search, one match", "q=needle"),
    ("deep page 1,000 (offset 49,950)", "page=1000"),
]


def connect(server: EmbeddedServer, role: Role | str, **kwargs) -> psycopg.Connection:
    url = server.url(role, DATABASE)
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=DATABASE, **kwargs
    )


def seed(server: EmbeddedServer, reseed: bool) -> None:
    with server.connect_as_superuser() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    if exists and not reseed:
        with connect(server, Role.ADMIN) as conn:
            if conn.execute("SELECT count(*) FROM leads").fetchone()[0] == LEADS + 1:
                return
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    started = time.perf_counter()
    with connect(server, Role.ADMIN, autocommit=True) as conn:
        # One lead every 30 seconds back from now (about 347 days); stages, sources and 5,000
        # company names spread evenly; one lead only the "one match" search finds.
        conn.execute(
            """
            INSERT INTO leads (email, name, company, status, source, created_at, last_inquiry_at)
            SELECT 'lead' || n || '@example.com', 'Person ' || n, 'Company ' || (n %% 5000),
                   (ARRAY['new', 'contacted', 'qualified', 'won', 'lost'])[1 + n %% 5],
                   (ARRAY['pricing', 'blog', 'ads', 'contact', 'newsletter', NULL])[1 + n %% 6],
                   now() - n * interval '30 seconds', now() - n * interval '30 seconds'
            FROM generate_series(1, %s) n
            """,
            (LEADS,),
        )
        conn.execute(
            "INSERT INTO leads (email, name, company, created_at) "
            "VALUES ('needle@rare.example', 'Nee Dle', 'Haystack', now() - interval '200 days')"
        )
        conn.execute("VACUUM ANALYZE leads")
    print(f"seeded {LEADS + 1:,} leads in {time.perf_counter() - started:.1f} s")


def signed_in_client(app):
    """A test client signed in through the real form as a support staff member (no TOTP needed)."""
    from sqlalchemy.orm import Session

    from nectar.admin.staff import service as staff_service
    from nectar.shared.database import db

    with app.app_context(), Session(db.engine) as session, session.begin():
        if staff_service.find_staff(session, STAFF_EMAIL) is None:
            staff_service.create_staff(session, STAFF_EMAIL, "support", STAFF_PASSWORD, "Benchmark")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/login", data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token}
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
    return client


def page_queries(app, query_string: str) -> tuple[str, dict, str, dict]:
    """The two statements the list page runs for `query_string`, compiled for PostgreSQL."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects import postgresql
    from werkzeug.datastructures import MultiDict

    from nectar.admin.leads.forms import FilterForm
    from nectar.admin.leads.service import leads_statement
    from nectar.admin.listing import MAX_PAGE, TOTAL_CAP

    args = MultiDict(re.findall(r"([^&=]+)=([^&]*)", query_string.replace("+", " ")))
    with app.test_request_context():
        form = FilterForm(formdata=args, staff=())
        form.validate()
        statement = leads_statement(form.filters())
    page = min(int(args.get("page", 1)), MAX_PAGE)
    rows = statement.limit(51).offset((page - 1) * 50)
    capped = select(func.count()).select_from(statement.order_by(None).limit(TOTAL_CAP + 1).subquery())
    compiled = [q.compile(dialect=postgresql.psycopg.dialect()) for q in (rows, capped)]
    return str(compiled[0]), compiled[0].params, str(compiled[1]), compiled[1].params


def stage_counts_sql(app) -> tuple[str, dict]:
    """The one statement the list and the board run for their stage tabs."""
    from sqlalchemy.dialects import postgresql

    from nectar.admin.listing import capped_counts_statement
    from nectar.schema.models import Lead
    from nectar.schema.models.marketing import LEAD_STAGES

    compiled = capped_counts_statement(Lead.status, LEAD_STAGES).compile(dialect=postgresql.psycopg.dialect())
    return str(compiled), compiled.params


def timed(samples: list[float], action) -> None:
    started = time.perf_counter()
    action()
    samples.append(time.perf_counter() - started)


def brief(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ({statistics.mean(samples) * 1000:.1f})"


def summary(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:8.2f} ms   mean {statistics.mean(samples) * 1000:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--rounds", type=int, default=20, help="timed runs per case (after one warm-up)")
    args = parser.parse_args()

    server = bench_server()
    print(f"database: {server.root} / {DATABASE}")
    seed(server, args.reseed)

    from datetime import UTC, datetime, timedelta

    from nectar.admin.app import create_app

    environ = {
        role.url_variable: server.url(role, DATABASE).render_as_string(hide_password=False) for role in Role
    }
    secret = "benchmark-secret-key-long-enough-for-anything"  # noqa: S105 - a throwaway benchmark database
    environ.update(NECTAR_ENV="test", SECRET_KEY=secret)
    app = create_app(load_settings(Service.ADMIN, environ))
    client = signed_in_client(app)
    week_end = (datetime.now(UTC) - timedelta(days=100)).date()
    week_start = week_end - timedelta(days=6)

    print(f"\n{LEADS + 1:,} leads; {args.rounds} timed runs per case after a warm-up\n")
    print(f"{'p50 (mean) in ms':36} {'whole page':>18} {'rows query':>18} {'capped count':>18}   page shows")
    with connect(server, Role.ADMIN) as conn:
        for label, query in PAGES:
            query = query.format(week_start=week_start, week_end=week_end)
            url = f"/leads/?{query}" if query else "/leads/"
            rows_sql, rows_params, count_sql, count_params = page_queries(app, query)
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            shown = re.search(r"(\d[\d,]*)–(\d[\d,]*) of ([\d,+]+)", response.get_data(as_text=True))
            page_samples: list[float] = []
            row_samples: list[float] = []
            count_samples: list[float] = []
            conn.execute(rows_sql, rows_params).fetchall()
            for _ in range(args.rounds):
                timed(page_samples, lambda url=url: client.get(url).get_data())
                timed(
                    row_samples, lambda sql=rows_sql, params=rows_params: conn.execute(sql, params).fetchall()
                )
                timed(
                    count_samples,
                    lambda sql=count_sql, params=count_params: conn.execute(sql, params).fetchall(),
                )
            conn.rollback()
            cells = "".join(f"{brief(samples):>19}" for samples in (page_samples, row_samples, count_samples))
            print(f"{label:36}{cells}   {shown.group(0) if shown else 'no rows'}")

        naive: list[float] = []
        naive_filtered: list[float] = []
        naive_stages: list[float] = []
        capped_stages: list[float] = []
        stage_sql = stage_counts_sql(app)
        for _ in range(max(3, args.rounds // 2)):
            timed(naive, lambda: conn.execute("SELECT count(*) FROM leads").fetchall())
            timed(
                naive_filtered,
                lambda: conn.execute("SELECT count(*) FROM leads WHERE status = 'won'").fetchall(),
            )
            timed(
                naive_stages,
                lambda: conn.execute("SELECT status, count(*) FROM leads GROUP BY status").fetchall(),
            )
            timed(capped_stages, lambda: conn.execute(*stage_sql).fetchall())
        conn.rollback()
        print(f"\n{'naive full COUNT(*)':36} {summary(naive)}")
        print(f"{'naive COUNT(*) WHERE stage = won':36} {summary(naive_filtered)}")
        print(f"{'naive stage counts (GROUP BY)':36} {summary(naive_stages)}")
        print(f"{'stage tabs as the page counts them':36} {summary(capped_stages)}   (each capped at 10,001)")

        board: list[float] = []
        for _ in range(max(3, args.rounds // 4)):
            timed(board, lambda: client.get("/leads/board").get_data())
        print(f"{'board page (HTTP through Flask)':36} {summary(board)}")
        dashboard: list[float] = []
        for _ in range(max(3, args.rounds // 4)):
            timed(dashboard, lambda: client.get("/").get_data())
        print(f"{'dashboard (exact lead totals)':36} {summary(dashboard)}")

        for label, query in (("first page", ""), ("search, one match", "q=needle")):
            rows_sql, rows_params, _, _ = page_queries(app, query)
            plan = conn.execute(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + rows_sql, rows_params
            ).fetchall()
            conn.rollback()
            print(f"\nEXPLAIN ANALYZE, rows query, {label}:")
            for (line,) in plan:
                print(f"  {line}")
    with app.app_context():
        from nectar.shared.database import db

        db.engine.dispose()


if __name__ == "__main__":
    main()
