"""Every connection reads and writes times in UTC by the database's own setting, not a startup
option: PgBouncer in transaction mode refuses `options=-c TimeZone=UTC` (and would lose it when it
hands the server connection to another client). Needs the database's owner, which migrations are.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone TO ''UTC''', current_database()); END $$"
    )


def downgrade() -> None:
    op.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET TimeZone', current_database()); END $$")
