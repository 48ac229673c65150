"""The schema can be distributed by organization on Citus: proven on the live migrated database,
and the `citus-sql` command prints calls that place every table as its model declares."""

from __future__ import annotations

import re

import pytest

from nectar.admin.main import main as admin_main
from nectar.core.main import main as core_main
from nectar.marketing.main import main as marketing_main
from nectar.schema import models  # noqa: F401 - registers every table
from nectar.schema.distribution import Placement, placement_of
from nectar.schema.migrate import head_revision
from nectar.shared.database import Base
from tests.schema.catalog import citus_offences, schema_tables

DECLARED = {table.name: placement_of(table) for table in Base.metadata.sorted_tables}
DISTRIBUTED = {name for name, placement in DECLARED.items() if placement.column is not None}
REFERENCE = set(DECLARED) - DISTRIBUTED


def test_every_model_declares_its_placement_and_tenant_tables_are_distributed_by_their_tenant_column():
    for table in Base.metadata.sorted_tables:
        tenant_column = table.info.get("tenant_column")
        placement = DECLARED[table.name]
        if placement.column is None:
            # organizations is the one tenant table that is not distributed, and it says why.
            assert tenant_column is None or placement.platform_reason, table.name
        else:
            assert placement.column == tenant_column == "org_id", table.name
    assert {"organizations", "users", "subscriptions", "usage_reports", "workflow_schedules"} <= REFERENCE
    assert {"workflows", "workflow_runs", "api_keys", "memberships", "usage_daily"} <= DISTRIBUTED


def test_the_live_schema_has_only_keys_citus_can_enforce(database):
    with database.connect("postgres") as conn:
        assert set(schema_tables(conn)) == set(DECLARED), "every table of the schema has a model"
        assert citus_offences(conn, DECLARED) == []


def test_a_new_table_that_breaks_the_rules_is_named_with_each_offence(database):
    with database.connect("postgres") as conn:
        conn.execute(
            "CREATE TABLE citus_intruders (id uuid PRIMARY KEY, org_id uuid NOT NULL, name text UNIQUE, "
            "run_id uuid, FOREIGN KEY (org_id, run_id) REFERENCES workflow_runs (org_id, id))"
        )
        # With org_id, a unique index on an expression is no offence.
        conn.execute("CREATE UNIQUE INDEX citus_intruders_name_org ON citus_intruders (lower(name), org_id)")
        conn.execute(
            "CREATE TABLE citus_index (run_org uuid, run_id uuid, organization_id uuid, "
            "FOREIGN KEY (run_org, run_id) REFERENCES workflow_runs (org_id, id))"
        )
        # A declared tenant table that lost its key's org_id, and a platform table without a reason.
        conn.execute("ALTER TABLE api_keys ADD CONSTRAINT api_keys_prefix UNIQUE (prefix)")
        declared = {
            **DECLARED,
            "subscriptions": Placement("subscriptions", column=None, platform_reason=None),
        }
        offences = citus_offences(conn, declared)
        conn.rollback()
    assert sorted(offences) == sorted(
        [
            "api_keys: UNIQUE constraint api_keys_prefix (prefix) lacks org_id",
            "citus_index: declares no Citus placement (tenant_table() or global_table())",
            "citus_index: reference table with foreign key citus_index_run_org_run_id_fkey to distributed "
            "workflow_runs",
            "citus_intruders: declares no Citus placement (tenant_table() or global_table())",
            "citus_intruders: distributed by org_id, but its tenant_isolation policy does not compare it",
            "citus_intruders: PRIMARY KEY citus_intruders_pkey (id) lacks org_id",
            "citus_intruders: UNIQUE constraint citus_intruders_name_key (name) lacks org_id",
            "subscriptions: carries an organization (organization_id) but is a reference table without a "
            "platform_reason",
        ]
    )


def test_a_foreign_key_that_does_not_join_on_the_distribution_column_is_an_offence(database):
    with database.connect("postgres") as conn:
        conn.execute("ALTER TABLE workflow_runs ADD CONSTRAINT citus_runs_id UNIQUE (id, org_id)")
        conn.execute(
            "ALTER TABLE workflow_run_events ADD CONSTRAINT citus_crossed FOREIGN KEY (run_id, org_id) "
            "REFERENCES workflow_runs (org_id, id) NOT VALID"
        )
        offences = citus_offences(conn, DECLARED)
        conn.rollback()
    # The unique constraint has org_id (in any position); the key joins run_id to org_id.
    assert offences == [
        "workflow_run_events: foreign key citus_crossed (run_id, org_id) -> workflow_runs (org_id, id) "
        "does not join org_id to org_id"
    ]


# --- the command ------------------------------------------------------------------------------------


def _citus_sql(capsys) -> str:
    assert core_main(["citus-sql"]) == 0
    return capsys.readouterr().out


def test_citus_sql_places_every_table_once_reference_tables_first(capsys):
    out = _citus_sql(capsys)
    assert f"schema revision {head_revision()}" in out
    lines = out.splitlines()
    assert lines[lines.index("BEGIN;") + 1].startswith("SET LOCAL citus.multi_shard_modify_mode")
    assert lines[-1] == "COMMIT;"
    calls = re.findall(
        r"^SELECT (create_\w+)\('(\w+)'(?:, '(\w+)')?(?:, colocate_with => '(\w+)')?\);$", out, re.M
    )
    placed = [table for _, table, _, _ in calls]
    assert sorted(placed) == sorted(DECLARED), "each table exactly once"
    references = [table for function, table, _, _ in calls if function == "create_reference_table"]
    distributed = [
        (table, column, anchor)
        for function, table, column, anchor in calls
        if function == "create_distributed_table"
    ]
    assert set(references) == REFERENCE
    assert placed[: len(references)] == references, "reference tables come before distributed ones"
    anchor = distributed[0][0]
    assert distributed[0] == (anchor, "org_id", "")
    assert all(column == "org_id" and colocated == anchor for _, column, colocated in distributed[1:])


def test_citus_sql_runs_in_order_against_the_live_schema(database, capsys):
    """The printed script, run on the migrated database with stand-ins for Citus's two functions
    that check what Citus checks: each table exists with the named column, and every foreign key's
    target is placed before the table that refers to it."""
    script = _citus_sql(capsys)
    body = [line for line in script.splitlines() if line.startswith(("SELECT", "SET LOCAL"))]
    with database.connect("postgres") as conn:
        conn.execute("CREATE TEMPORARY TABLE placed (seq serial, placed_table regclass, kind text)")
        conn.execute("""
            CREATE FUNCTION public.create_reference_table(table_name regclass) RETURNS void LANGUAGE sql AS
            $$ INSERT INTO placed (placed_table, kind) VALUES (table_name, 'reference') $$;
            CREATE FUNCTION public.create_distributed_table(
                table_name regclass, distribution_column text, colocate_with text DEFAULT 'default'
            ) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM 1 FROM pg_attribute
                WHERE attrelid = table_name AND attname = distribution_column AND NOT attisdropped;
                IF NOT FOUND THEN RAISE EXCEPTION '% has no column %', table_name, distribution_column; END IF;
                IF colocate_with <> 'default'
                   AND NOT EXISTS (SELECT 1 FROM placed WHERE placed_table = colocate_with::regclass) THEN
                    RAISE EXCEPTION '% is colocated with % before it is placed', table_name, colocate_with;
                END IF;
                INSERT INTO placed (placed_table, kind) VALUES (table_name, 'distributed');
            END $$;
        """)
        for statement in body:
            conn.execute(statement)
        order = {
            str(table): (seq, kind)
            for seq, table, kind in conn.execute("SELECT seq, placed_table, kind FROM placed")
        }
        foreign_keys = conn.execute(
            "SELECT conname, conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND conrelid <> confrelid"
        ).fetchall()
        conn.rollback()
    assert set(order) == set(DECLARED)
    for name, table, parent in foreign_keys:
        if table in order:
            assert order[parent][0] < order[table][0], f"{name}: {parent} must be placed before {table}"
            assert (order[table][1], order[parent][1]) != ("reference", "distributed"), name


@pytest.mark.parametrize("main", [marketing_main, admin_main], ids=["marketing", "admin"])
def test_every_binary_prints_the_same_script(main, capsys):
    expected = _citus_sql(capsys)
    assert main(["citus-sql"]) == 0
    assert capsys.readouterr().out == expected
