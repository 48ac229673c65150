"""Where each table lives when the database outgrows one server and becomes a Citus cluster.

Each model declares it in `__table_args__` info (through `tenant_table()` or `global_table()`):
`"citus": "distributed"`, sharded by its tenant column (org_id) and colocated with every other
tenant table, so one organization's rows, joins and foreign keys stay on one node; or
`"citus": "reference"`, a copy on every node, for what all organizations share. A reference table
that refers to organizations all the same says why in `platform_reason`. The `citus-sql` command
prints the calls that make a cluster so; the schema tests hold the live database to the rules
these calls depend on (keys that include the distribution column).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sqlalchemy import MetaData, Table

from nectar.schema import models  # noqa: F401 - registers every table
from nectar.schema.migrate import head_revision
from nectar.shared.cli import Command
from nectar.shared.database import Base

DISTRIBUTED = "distributed"
REFERENCE = "reference"


@dataclass(frozen=True)
class Placement:
    table: str
    # The distribution column of a distributed table; None for a reference table.
    column: str | None
    platform_reason: str | None = None


def placement_of(table: Table) -> Placement:
    """The Citus placement `table` declares; a ValueError names a table that declares none."""
    kind = table.info.get("citus")
    reason = table.info.get("platform_reason")
    if kind == DISTRIBUTED:
        column = table.info.get("tenant_column")
        if column is None or column not in table.c:
            raise ValueError(f"{table.name} is distributed but names no tenant column of its own")
        return Placement(table.name, column, reason)
    if kind == REFERENCE:
        return Placement(table.name, None, reason)
    raise ValueError(
        f"{table.name} declares no Citus placement: use tenant_table() or global_table() in its __table_args__"
    )


def citus_statements(metadata: MetaData) -> list[str]:
    """The `create_reference_table` / `create_distributed_table` calls for every table of
    `metadata`: reference tables first (distributed ones refer to them), each kind with parents
    before children, every distributed table colocated with the first."""
    placements = [placement_of(table) for table in metadata.sorted_tables]
    statements = [f"SELECT create_reference_table('{p.table}');" for p in placements if p.column is None]
    distributed = [p for p in placements if p.column is not None]
    for placement in distributed:
        anchor = distributed[0].table
        colocation = "" if placement.table == anchor else f", colocate_with => '{anchor}'"
        statements.append(
            f"SELECT create_distributed_table('{placement.table}', '{placement.column}'{colocation});"
        )
    return statements


def citus_script(metadata: MetaData, revision: str) -> str:
    """The whole script `citus-sql` prints: one transaction, run on the coordinator as the owner."""
    lines = [
        f"-- Nectar Studio on Citus: placement of every table at schema revision {revision}.",
        "-- Run on the coordinator, as nectar_owner, after `migrate` (deploy/RUNBOOK.md, Moving to Citus).",
        "-- procrastinate_* (the job queues) and alembic_version stay plain tables on the coordinator.",
        "BEGIN;",
        # Distributed tables refer to reference tables made in the same transaction: Citus must
        # then create shards over one connection per node.
        "SET LOCAL citus.multi_shard_modify_mode TO 'sequential';",
        *citus_statements(metadata),
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


def _print_citus_sql(args: argparse.Namespace) -> int:
    print(citus_script(Base.metadata, head_revision()), end="")
    return 0


citus_sql_command = Command(
    help="print the Citus calls (create_reference_table / create_distributed_table) that place every "
    "table of this build's schema on a cluster; needs no database",
    run=_print_citus_sql,
    uses_database=False,
)
