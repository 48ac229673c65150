"""The users list's sorts and the dashboard's figures read indexes, not whole tables.

On a test database this small PostgreSQL would scan tables whatever the indexes, so each query is
planned with sequential scans and sorts priced out (enable_seqscan, enable_sort off): the planner
still uses one when nothing else can answer the query, which is what these tests look for.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql

from nectar.admin.analytics.service import RUNS_SQL, TOTALS_SQL
from nectar.admin.listing import MAX_PER_PAGE
from nectar.admin.users.service import UserFilters, list_statement, sort_of
from nectar.shared.config import Role


@pytest.fixture(scope="module")
def plan(database):
    """`plan(sql, params) -> [node, ...]`: the plan's nodes, e.g. "Index Only Scan using ix on users"."""
    engine = create_engine(database.url(Role.ADMIN))

    def explain(sql: str, params: dict | None = None) -> list[str]:
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            conn.execute(text("SET enable_sort = off"))
            lines = [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"), params or {})]
        return [
            line.strip().removeprefix("->").strip().split("  (cost=")[0] for line in lines if "(cost=" in line
        ]

    yield explain
    engine.dispose()


@pytest.mark.parametrize(
    "sort", ["name", "-name", "last_login", "-last_login", "created", "-created", "email"]
)
def test_every_users_sort_reads_an_index_in_order(plan, sort):
    statement = list_statement(UserFilters(), sort_of({"sort": sort})).limit(MAX_PER_PAGE + 1)
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    nodes = plan(sql)
    # An incremental sort only orders rows with equal keys as the index yields them: cheap.
    assert "Sort" not in nodes and not any(node.startswith("Seq Scan") for node in nodes), nodes


def test_the_dashboard_totals_and_runs_read_indexes(plan):
    totals = plan(TOTALS_SQL.text, {"days": 30})
    for table in ("users", "leads", "organizations", "workflow_runs"):
        assert not any(node.startswith(f"Seq Scan on {table}") for node in totals), totals
    runs = plan(RUNS_SQL.text, {"days": 30})
    assert not any(node.startswith("Seq Scan on workflow_runs") for node in runs), runs
