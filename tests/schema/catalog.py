"""What the live database says about tenancy and Citus, read from its catalog (never the models).

`tables_carrying_an_organization` finds a tenant table by what it holds, whatever its tenant column
is called; `citus_offences` lists every key Citus could not enforce once the tables are placed as
declared. The schema tests run both on the migrated database, so a new table is judged the day
it exists.
"""

from __future__ import annotations

import re

import psycopg

from nectar.schema.access import TENANT_POLICY
from nectar.schema.distribution import Placement

ORGANIZATION_COLUMNS = ("org_id", "organization_id")
# Tables that are no model's: procrastinate's queue and Alembic's bookkeeping stay on the coordinator.
UNPLACED = "(c.relname LIKE 'procrastinate\\_%' OR c.relname = 'alembic_version')"
_POLICY_COLUMN = re.compile(r"^\(*(\w+) = ")


def schema_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
        f"AND c.relkind IN ('r', 'p') AND NOT {UNPLACED} ORDER BY 1"
    ).fetchall()
    return [name for (name,) in rows]


def tables_carrying_an_organization(conn: psycopg.Connection) -> dict[str, set[str]]:
    """Every table with a column named org_id or organization_id, a foreign key to organizations,
    or a tenant policy, mapped to the columns that carry the organization."""
    found: dict[str, set[str]] = {}
    named = conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        "AND a.attname = ANY(%s) AND NOT a.attisdropped",
        (list(ORGANIZATION_COLUMNS),),
    ).fetchall()
    referring = conn.execute(
        "SELECT con.conrelid::regclass::text, a.attname FROM pg_constraint con "
        "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1] "
        "WHERE con.contype = 'f' AND con.confrelid = 'organizations'::regclass "
        "AND con.conrelid <> 'organizations'::regclass"
    ).fetchall()
    policies = conn.execute(
        "SELECT tablename, qual FROM pg_policies WHERE schemaname = 'public' AND policyname = %s",
        (TENANT_POLICY,),
    ).fetchall()
    for table, column in named + referring:
        found.setdefault(table, set()).add(column)
    for table, qual in policies:
        match = _POLICY_COLUMN.match(qual or "")
        found.setdefault(table, set()).add(match.group(1) if match else qual)
    return found


def _tenant_policy_columns(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT tablename, qual FROM pg_policies WHERE schemaname = 'public' AND policyname = %s",
        (TENANT_POLICY,),
    ).fetchall()
    return {table: (m.group(1) if (m := _POLICY_COLUMN.match(qual or "")) else "") for table, qual in rows}


def citus_offences(conn: psycopg.Connection, declared: dict[str, Placement]) -> list[str]:
    """Every way the live schema breaks what Citus needs of the placements `declared` (table ->
    placement, from the models): a table without a placement (judged as distributed by org_id if
    it has one), a distributed table whose tenant policy compares another column, a unique index
    (primary key, unique constraint or unique index) of a distributed table without its
    distribution column, a foreign key between distributed tables that does not join them on it,
    a reference table with a foreign key to a distributed one, and a reference table that carries
    an organization without a platform_reason."""
    tables = schema_tables(conn)
    carrying = tables_carrying_an_organization(conn)
    policy_columns = _tenant_policy_columns(conn)
    offences: list[str] = []
    column_of: dict[str, str | None] = {}
    for table in tables:
        placement = declared.get(table)
        if placement is None:
            offences.append(f"{table}: declares no Citus placement (tenant_table() or global_table())")
            column_of[table] = "org_id" if "org_id" in carrying.get(table, ()) else None
        else:
            column_of[table] = placement.column
        if placement is not None and placement.column is None and table in carrying:
            if not placement.platform_reason:
                offences.append(
                    f"{table}: carries an organization ({', '.join(sorted(carrying[table]))}) but is a "
                    "reference table without a platform_reason"
                )
        column = column_of[table]
        if column is not None and policy_columns.get(table) != column:
            offences.append(
                f"{table}: distributed by {column}, but its {TENANT_POLICY} policy does not compare it"
            )

    unique_indexes = conn.execute(
        "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, "
        "ARRAY(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a "
        "      ON a.attrelid = i.indrelid AND a.attnum = k), "
        "COALESCE(con.contype, 'i') "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u') "
        "WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace ORDER BY 1, 2"
    ).fetchall()
    kinds = {"p": "PRIMARY KEY", "u": "UNIQUE constraint", "i": "unique index"}
    for table, index, columns, kind in unique_indexes:
        column = column_of.get(table)
        if column is not None and column not in columns:
            offences.append(f"{table}: {kinds[kind]} {index} ({', '.join(columns)}) lacks {column}")

    foreign_keys = conn.execute(
        "SELECT con.conname, con.conrelid::regclass::text, con.confrelid::regclass::text, "
        "ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "      ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), "
        "ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "      ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o) "
        "FROM pg_constraint con WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace "
        "ORDER BY 2, 1"
    ).fetchall()
    for name, table, parent, columns, parent_columns in foreign_keys:
        column, parent_column = column_of.get(table), column_of.get(parent)
        if parent_column is None:
            continue  # to a reference table: allowed from anywhere
        if column is None:
            offences.append(f"{table}: reference table with foreign key {name} to distributed {parent}")
        elif (column, parent_column) not in zip(columns, parent_columns, strict=True):
            offences.append(
                f"{table}: foreign key {name} ({', '.join(columns)}) -> {parent} ({', '.join(parent_columns)}) "
                f"does not join {column} to {parent_column}"
            )
    return offences
