"""What Alembic compares: our models' tables, not procrastinate's (its schema file owns those)."""


def include_name(name, type_, parent_names) -> bool:
    return not (type_ == "table" and name and name.startswith("procrastinate_"))
