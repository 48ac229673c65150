"""Lists that stay fast on million-row tables: pages by LIMIT/OFFSET with one extra row (is there a
next page?) and a count that stops at TOTAL_CAP rows ("10,000+"), never a full COUNT(*); on the last
page the rows themselves give the total, so no count runs at all.

Also the safe reading of list arguments: sort keys from a whitelist, bounded page numbers and texts,
choices and dates (years 2000 to 2100); anything else falls back to the default instead of erroring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from flask import request
from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from wtforms.validators import ValidationError

from nectar.shared.database import db

TOTAL_CAP = 10_000
MAX_PER_PAGE = 200
# Deep OFFSETs read every skipped row; past this, narrow the list with search and filters.
MAX_PAGE = 1_000
# Dates a filter may name: wide enough for any real record, and far from date.max, where the
# "whole last day" bound (day + 1) would overflow.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2100, 12, 31)
DATE_RANGE_MESSAGE = f"Enter a date from {EARLIEST_DAY.isoformat()} to {LATEST_DAY.isoformat()}."


@dataclass(frozen=True)
class Page:
    items: list[Any]
    page: int
    per_page: int
    has_next: bool
    has_previous: bool
    total: int  # exact up to TOTAL_CAP; TOTAL_CAP + 1 means "more"
    total_label: str

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.per_page + len(self.items)


def paginate(statement: Select, page: int, per_page: int = 50) -> Page:
    """One page of `statement` (already filtered and ordered). Rows are scalars when the statement
    selects one entity or column, tuples otherwise."""
    page = min(max(1, page), MAX_PAGE)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    result = db.session.execute(statement.limit(per_page + 1).offset((page - 1) * per_page))
    rows = list(result.scalars() if len(statement.column_descriptions) == 1 else result)
    has_next = len(rows) > per_page
    if has_next or (not rows and page > 1):
        capped = select(func.count()).select_from(statement.order_by(None).limit(TOTAL_CAP + 1).subquery())
        total = db.session.scalar(capped) or 0
    else:
        # The last page (or an empty first one): the rows before it and on it are all there are.
        total = min((page - 1) * per_page + len(rows), TOTAL_CAP + 1)
    return Page(
        items=rows[:per_page],
        page=page,
        per_page=per_page,
        has_next=has_next,
        has_previous=page > 1,
        total=total,
        total_label=count_label(total),
    )


def count_label(count: int, cap: int = TOTAL_CAP) -> str:
    """`1,234`, or `10,000+` past the cap."""
    return f"{cap:,}+" if count > cap else f"{count:,}"


def capped_counts_statement(
    column, values: Iterable[str], cap: int = TOTAL_CAP, where: ColumnElement | None = None
) -> Select:
    """One row: for each value, the rows where `column` = value (and `where`, if given), counted
    through an index up to cap + 1 ("more than cap"), instead of a GROUP BY over the table."""
    return select(
        *(
            select(func.count())
            .select_from(
                select(literal_column("1"))
                .select_from(column.table)
                .where(column == value, *([] if where is None else [where]))
                .limit(cap + 1)
                .subquery()
            )
            .scalar_subquery()
            for value in values
        )
    )


def capped_counts(
    session: Session,
    column,
    values: Iterable[str],
    cap: int = TOTAL_CAP,
    *,
    where: ColumnElement | None = None,
) -> dict[str, int]:
    """{value: rows where `column` = value} for list tabs and status tables; exact up to `cap`."""
    values = list(values)
    statement = capped_counts_statement(column, values, cap, where)
    return dict(zip(values, session.execute(statement).one(), strict=True))


@dataclass(frozen=True)
class Sort:
    key: str  # as in the URL: "email" ascending, "-email" descending
    column: str
    descending: bool
    clause: ColumnElement

    def link_key(self, column: str) -> str:
        """The `sort` value a column header links to: toggles when it is the current column."""
        if column == self.column:
            return column if self.descending else f"-{column}"
        return column


def read_sort(args: Mapping[str, str], columns: Mapping[str, ColumnElement], default: str) -> Sort:
    """The ORDER BY for `?sort=`: a key of `columns`, optionally prefixed by "-" for descending."""
    raw = str(args.get("sort") or default)
    name = raw.removeprefix("-")
    if name not in columns:
        raw, name = default, default.removeprefix("-")
    descending = raw.startswith("-")
    column = columns[name]
    clause = column.desc() if descending else column.asc()
    # Empty values last either way; but only where there can be any, since an explicit NULLS LAST
    # on a descending sort would keep PostgreSQL from reading a plain index backwards.
    if getattr(getattr(column, "expression", column), "nullable", True):
        clause = clause.nulls_last()
    return Sort(key=raw, column=name, descending=descending, clause=clause)


def read_page(args: Mapping[str, str]) -> int:
    try:
        return min(max(1, int(args.get("page", 1))), MAX_PAGE)
    except (TypeError, ValueError):
        return 1


def read_text(args: Mapping[str, str], name: str, max_length: int = 200) -> str:
    return str(args.get(name) or "").strip()[:max_length]


def read_choice(args: Mapping[str, str], name: str, choices: tuple[str, ...], default: str = "") -> str:
    value = str(args.get(name) or "")
    return value if value in choices else default


def read_date(args: Mapping[str, str], name: str) -> date | None:
    """A YYYY-MM-DD day from EARLIEST_DAY to LATEST_DAY, or None (no bound)."""
    try:
        day = date.fromisoformat(str(args.get(name) or ""))
    except ValueError:
        return None
    return day if EARLIEST_DAY <= day <= LATEST_DAY else None


def date_in_range(form, field) -> None:
    """WTForms validator: the same bounds for a form's date field, as a message next to the field."""
    if field.data is not None and not EARLIEST_DAY <= field.data <= LATEST_DAY:
        raise ValidationError(DATE_RANGE_MESSAGE)


def like_pattern(text: str) -> str:
    """A substring pattern for ILIKE with the user's % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def url_with(**changes: Any) -> str:
    """The current path and query with some arguments changed (None or "" removes one). A template
    global: links for pages and sort headers keep the list's filters."""
    args = {key: value for key, value in request.args.items()}
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    return f"{request.path}?{urlencode(args)}" if args else request.path
