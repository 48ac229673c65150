"""Benchmark: admin's users list on a large table (default 1M users in 1,000 organizations), the
whole page through the admin app (staff session, query, capped count, template), against what a
naive full COUNT(*) alone costs on the same table.

    ./pants run benchmarks/admin_lists.py                      # seeds once under var/bench-postgres
    ./pants run benchmarks/admin_lists.py -- --users 200000 --reseed

The list never counts the whole table: LIMIT per_page + 1 says whether there is a next page and the
total is counted up to 10,001 rows ("10,000+"). Goal: a page costs less than one full
COUNT(*), and does not grow with the table.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from benchmarks.servers import bench_server
from nectar.admin.app import create_app
from nectar.admin.staff import service as staff_service
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from nectar.shared.embedded_postgres import EmbeddedServer

DATABASE = "nectar_bench_admin"
ORGS = 1_000
STAFF_EMAIL = "bench@example.com"
STAFF_PASSWORD = "benchmark staff password"  # noqa: S105 - a throwaway benchmark database


def connect(server: EmbeddedServer, role: Role | str, **kwargs) -> psycopg.Connection:
    url = server.url(role, DATABASE)
    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=DATABASE, **kwargs
    )


def seed(server: EmbeddedServer, users: int, reseed: bool) -> None:
    with server.connect_as_superuser() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    if exists and not reseed:
        with connect(server, Role.ADMIN) as conn:
            if conn.execute("SELECT count(*) FROM users").fetchone()[0] == users:
                return
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    started = time.perf_counter()
    with connect(server, Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (name, slug) SELECT 'Org ' || n, 'org-' || n FROM generate_series(1, %s) n",
            (ORGS,),
        )
        # Every 13th deactivated, every 3rd unconfirmed, sign-ups spread over about three years.
        conn.execute(
            """
            INSERT INTO users (email, display_name, is_active, email_verified_at, created_at, last_login_at)
            SELECT 'user-' || n || '@example.com', 'Person ' || n, n %% 13 <> 0,
                   CASE WHEN n %% 3 <> 0 THEN now() END,
                   now() - (n * interval '97 seconds'), now() - (n * interval '13 seconds')
            FROM generate_series(1, %s) n
            """,
            (users,),
        )
        conn.execute(
            """
            INSERT INTO memberships (org_id, user_id, role)
            SELECT o.id, u.id, 'member'
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users) u
            JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM organizations) o ON o.k = u.n %% %s
            """,
            (ORGS,),
        )
        conn.execute("VACUUM ANALYZE")
    with Session(create_engine(server.url(Role.ADMIN, DATABASE))) as session, session.begin():
        staff_service.create_staff(session, STAFF_EMAIL, "support", STAFF_PASSWORD)
    print(f"seeded {users:,} users across {ORGS} organizations in {time.perf_counter() - started:.1f} s")


def environ(server: EmbeddedServer) -> dict[str, str]:
    env = {
        role.url_variable: server.url(role, DATABASE).render_as_string(hide_password=False) for role in Role
    }
    env.update(NECTAR_ENV="test", SECRET_KEY="benchmark-secret-key-long-enough-0123456789")  # noqa: S106
    return env


def timed(action, repeat: int) -> list[float]:
    action()  # warm caches, prepare, compile templates
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    server = bench_server()
    print(f"database: {server.root}")
    seed(server, args.users, args.reseed)
    app = create_app(load_settings(Service.ADMIN, environ(server)))
    browser = app.test_client()
    token = re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', browser.get("/login").get_data(as_text=True)
    )
    signed_in = browser.post(
        "/login", data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token.group(1)}
    )
    assert signed_in.status_code == 302, "staff sign-in failed"
    with connect(server, Role.ADMIN) as conn:
        org_id = conn.execute("SELECT id FROM organizations WHERE slug = 'org-500'").fetchone()[0]

    pages = {
        "newest first (default)": "/users",
        "sorted by email": "/users?sort=email",
        "page 200 (offset 9,950)": "/users?page=200",
        "deactivated only": "/users?status=inactive",
        "members of one organization": f"/users?org={org_id}",
        "search 'user-77777@'": "/users?q=user-77777%40",
    }
    print(f"\n{args.users:,} users; median and max of {args.repeat} requests, whole page (ms)\n")
    for name, url in pages.items():

        def fetch(url=url):
            response = browser.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response

        samples = timed(fetch, args.repeat)
        shown = re.search(r"\d+–\d+ of ([\d,+]+)", fetch().get_data(as_text=True))
        total = shown.group(1) if shown else "(nothing)"
        print(
            f"  {name:<32} p50 {statistics.median(samples):8.1f}   max {max(samples):8.1f}   total shown: {total}"
        )

    with connect(server, Role.ADMIN) as conn:
        full = timed(lambda: conn.execute("SELECT count(*) FROM users").fetchone(), 5)
        filtered = timed(lambda: conn.execute("SELECT count(*) FROM users WHERE NOT is_active").fetchone(), 5)
        capped = timed(
            lambda: conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM users LIMIT 10001) AS capped"
            ).fetchone(),
            5,
        )
        print("\nthe counts alone (ms):")
        print(f"  naive COUNT(*) FROM users                   p50 {statistics.median(full):8.1f}")
        print(f"  naive COUNT(*) of deactivated users         p50 {statistics.median(filtered):8.1f}")
        print(f"  capped count (LIMIT 10001), as the page     p50 {statistics.median(capped):8.1f}")
        plan = conn.execute(
            "EXPLAIN ANALYZE SELECT * FROM users ORDER BY created_at DESC, id LIMIT 51"
        ).fetchall()
        print("\nEXPLAIN ANALYZE of the default page's query:")
        for (line,) in plan:
            print(f"  {line}")


if __name__ == "__main__":
    main()
