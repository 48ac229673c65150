"""An organization's variables and secrets, which its workflows read as `vars.NAME` and
`secrets.NAME`.

Names are upper case, digits and underscores (NAME_PATTERN: at most 64 characters, not starting
with a digit). A variable's value is at most 4,096 characters, a secret's 8,192 (and at least 4:
shorter ones cannot be masked without masking ordinary text); at most 100 of each per
organization. Secrets are encrypted at rest like connections' credentials (nectar.shared.encryption,
re-encrypted by `admin.pex rotate-credentials`) and never returned: lists show their names and when
they were set. A run reads the ones its document names, once, when it starts (`for_run`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.workflows.definition import (
    OrganizationReference,
    Problem,
    organization_reference_problems,
    organization_references,
)
from nectar.core.workflows.engine import OrganizationValues
from nectar.schema.models.variables import (
    MAX_SECRET_CHARS,
    MAX_VARIABLE_CHARS,
    NAME_PATTERN,
    OrganizationSecret,
    OrganizationVariable,
)
from nectar.shared.database import SET_TENANT_SQL, in_one_round_trip
from nectar.shared.encryption import DecryptionFailed, KeyRing
from nectar.shared.rejection import InputRejected

MAX_PER_ORGANIZATION = 100  # variables, and secrets, each
MIN_SECRET_CHARS = 4
_NAME = re.compile(NAME_PATTERN)


def rejected(problems: list[Problem]) -> InputRejected:
    """The refusal of a name or value, with its problems (422)."""
    return InputRejected("; ".join(p.message for p in problems), problems)


@dataclass(frozen=True)
class Kind:
    """Variables or secrets: what differs between the two."""

    root: str  # how workflows read them: vars.NAME, secrets.NAME
    label: str
    model: type
    longest: int
    shortest: int


VARIABLES = Kind("vars", "variable", OrganizationVariable, MAX_VARIABLE_CHARS, 0)
SECRETS = Kind("secrets", "secret", OrganizationSecret, MAX_SECRET_CHARS, MIN_SECRET_CHARS)


def require_editor(ctx: OrgContext, kind: Kind) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied(f"Only an admin or owner can change {kind.label}s.")


def problems_of(kind: Kind, name: object, value: object) -> list[Problem]:
    """What is wrong with setting `name` to `value`, as problems at /name and /value."""
    problems = []
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(
            Problem(
                "/name",
                "Use capital letters, digits and underscores, at most 64, not starting with a digit "
                "(e.g. API_BASE_URL).",
            )
        )
    if not isinstance(value, str):
        problems.append(Problem("/value", "The value is text."))
    elif not kind.shortest <= len(value) <= kind.longest:
        least = f"{kind.shortest:,} to " if kind.shortest else "at most "
        problems.append(Problem("/value", f"A {kind.label} holds {least}{kind.longest:,} characters."))
    return problems


def listed(session: Session, kind: Kind) -> list:
    """The organization's variables or secrets by name (a secret's row: read its name and dates only)."""
    return list(session.scalars(select(kind.model).order_by(kind.model.name)))


def put(
    session: Session, ctx: OrgContext, kind: Kind, name: object, value: object, keys: KeyRing | None = None
):
    """Creates or replaces `name`; returns (row, created). Raises InputRejected."""
    require_editor(ctx, kind)
    problems = problems_of(kind, name, value)
    if problems:
        raise rejected(problems)
    row = session.get(kind.model, (ctx.org_id, name))
    created = row is None
    if created:
        # Counted under the organization's lock, so two at once cannot both pass the limit.
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"{kind.root}:{ctx.org_id}"},
        )
        if session.scalar(select(func.count()).select_from(kind.model)) >= MAX_PER_ORGANIZATION:
            raise rejected(
                [Problem("/name", f"An organization has at most {MAX_PER_ORGANIZATION} {kind.label}s.")]
            )
        row = kind.model(org_id=ctx.org_id, name=name)
        session.add(row)
    if kind is SECRETS:
        row.value_ciphertext, row.key_id = keys.encrypt(value.encode())
    else:
        row.value = value
    row.updated_at = datetime.now(UTC)
    session.flush()
    return row, created


def delete(session: Session, ctx: OrgContext, kind: Kind, name: str) -> None:
    require_editor(ctx, kind)
    row = session.get(kind.model, (ctx.org_id, name))
    if row is None:
        raise LookupError(f"no {kind.label} {name!r}")
    session.delete(row)
    session.flush()


def names(session: Session) -> tuple[set[str], set[str]]:
    """The names of the organization's variables and of its secrets, in one query."""
    rows = session.execute(
        text(
            "SELECT 'vars', name FROM organization_variables UNION ALL SELECT 'secrets', name FROM organization_secrets"
        )
    )
    found: dict[str, set[str]] = {"vars": set(), "secrets": set()}
    for root, name in rows:
        found[root].add(name)
    return found["vars"], found["secrets"]


def reference_problems(session: Session, definition: object) -> list[Problem]:
    """A problem for each variable or secret a valid `definition` reads that the organization
    lacks: a workflow is saved only when every one exists."""
    if not isinstance(definition, dict) or not organization_references(definition):
        return []
    variables, secrets = names(session)
    return organization_reference_problems(definition, variables, secrets)


# What a run reads, in one query: only the names its document names (psycopg's parameter style).
_FOR_RUN_SQL = (
    "SELECT 'vars', name, value, NULL FROM organization_variables WHERE name = ANY(%s) "
    "UNION ALL SELECT 'secrets', name, NULL, value_ciphertext FROM organization_secrets "
    "WHERE name = ANY(%s)"
)


def for_run(session: Session, keys: KeyRing, definition: dict) -> OrganizationValues | None:
    """The variables and secrets `definition` names, as they are now (one query on the session,
    scoped to the organization); None when it names none, with no query at all."""
    references = tuple(organization_references(definition))
    if not references:
        return None
    rows = session.connection().exec_driver_sql(_FOR_RUN_SQL, _names(references)).all()
    return _values(rows, keys, references)


def for_call(engine: Engine, keys: KeyRing, org_id, references: tuple[OrganizationReference, ...]):
    """for_run for an endpoint call, whose references its route keeps: the organization's scope
    and the query in one round trip, on no session. None when there are no references."""
    if not references:
        return None
    statements = [(SET_TENANT_SQL, (str(org_id),)), (_FOR_RUN_SQL, _names(references))]
    return _values(in_one_round_trip(engine, statements)[1], keys, references)


def _names(references) -> tuple[list[str], list[str]]:
    return (
        sorted({r.name for r in references if r.root == "vars"}),
        sorted({r.name for r in references if r.root == "secrets"}),
    )


def _values(rows, keys: KeyRing, references) -> OrganizationValues:
    variables, secrets = {}, {}
    for root, name, value, ciphertext in rows:
        if root == "vars":
            variables[name] = value
        else:
            try:
                secrets[name] = keys.decrypt(bytes(ciphertext)).decode()
            except DecryptionFailed:
                continue  # its key was dropped: the steps that read it fail, as for a deleted one
    return OrganizationValues(variables, secrets, references)
