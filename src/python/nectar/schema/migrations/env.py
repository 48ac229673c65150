"""Alembic environment: migrations run online, as nectar_owner, against the URL the caller passed."""

from alembic import context
from sqlalchemy import create_engine, pool

from nectar.schema import models  # noqa: F401 - registers every table on the metadata
from nectar.schema.migrations.env_filters import include_name
from nectar.shared.database import Base

config = context.config


url = config.attributes.get("url")
if url is None:
    raise RuntimeError(
        "run migrations through nectar.schema.migrate (the `migrate` command), which passes the URL"
    )

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=Base.metadata, compare_type=True, include_name=include_name
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
