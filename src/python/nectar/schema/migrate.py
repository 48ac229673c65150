"""Running the Alembic migrations: as `nectar_owner`, by an explicit command, never on service start."""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from nectar.shared.cli import Command
from nectar.shared.config import Role, database_url
from nectar.shared.database import check_connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: URL | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.attributes["url"] = url
    return config


@cache
def head_revision() -> str:
    """The revision this build's code expects the database to be at."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: URL, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: URL, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _migrate(args: argparse.Namespace) -> int:
    url = database_url(Role.OWNER)
    check_connection(url)
    if args.down_to:
        downgrade(url, args.down_to)
    else:
        upgrade(url, args.to)
    print(f"database {url.database} on {url.host}:{url.port}: migrated to {args.down_to or args.to}")
    return 0


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", default="head", help="revision to upgrade to (default: head)")
    parser.add_argument(
        "--down-to", metavar="REVISION", help="downgrade to REVISION instead (`base` empties the schema)"
    )


migrate_command = Command(
    help="apply database migrations as nectar_owner (MIGRATION_DATABASE_URL, or the embedded server)",
    run=_migrate,
    configure=_configure,
)
