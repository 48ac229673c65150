"""Who may touch which table, stated once per table and turned into SQL by migrations.

Each model declares `info={"service": ..., "tenant_column": ..., "append_only": ...}` in its
`__table_args__`; migrations call `secure_table(...)` with the same facts (frozen in the migration),
and the test suite checks the live database against the models, so a table cannot be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table

from nectar.shared.config import Role
from nectar.shared.database import TENANT_SETTING, USER_SETTING

DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
APPEND_ONLY = ("SELECT", "INSERT")
SERVICE_ROLES = {"core": Role.APP, "marketing": Role.MARKETING, "admin": Role.ADMIN}
# Evaluated once per query (an InitPlan), and NULL, so matching nothing, when no tenant is set.
CURRENT_ORG = f"(SELECT NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid)"
CURRENT_USER = f"(SELECT NULLIF(current_setting('{USER_SETTING}', true), '')::uuid)"
TENANT_POLICY = "tenant_isolation"


@dataclass(frozen=True)
class TableAccess:
    service: str
    tenant_column: str | None = None
    append_only: bool = False
    # Other services that may only read the table, or only add rows to it.
    readers: tuple[str, ...] = ()
    inserters: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()

    def privileges(self) -> dict[Role, tuple[str, ...]]:
        """The exact table privileges each role holds; the owner's are implicit. Admin, the
        back-office, may do what the owning service does."""
        verbs = APPEND_ONLY if self.append_only else DML
        granted = {SERVICE_ROLES[self.service]: verbs, Role.ADMIN: verbs}
        for reader in self.readers:
            granted.setdefault(SERVICE_ROLES[reader], ("SELECT",))
        for writer in self.writers:
            granted.setdefault(SERVICE_ROLES[writer], DML)
        for inserter in self.inserters:
            granted.setdefault(SERVICE_ROLES[inserter], ("INSERT",))
        return granted


def access_of(table: Table) -> TableAccess:
    info = table.info
    return TableAccess(
        service=info["service"],
        tenant_column=info.get("tenant_column"),
        append_only=info.get("append_only", False),
        readers=tuple(info.get("readers", ())),
        inserters=tuple(info.get("inserters", ())),
        writers=tuple(info.get("writers", ())),
    )


def secure_table_sql(table: str, access: TableAccess) -> list[str]:
    """Grants, and for a tenant table row-level security, for one table."""
    statements = [f"REVOKE ALL ON TABLE {table} FROM PUBLIC"]
    for role, verbs in access.privileges().items():
        statements.append(f"GRANT {', '.join(verbs)} ON TABLE {table} TO {role}")
    if access.tenant_column:
        column = access.tenant_column
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY {TENANT_POLICY} ON {table} USING ({column} = {CURRENT_ORG}) "
            f"WITH CHECK ({column} = {CURRENT_ORG})",
        ]
        # A service that reads a tenant table reads every organization's rows (marketing bills
        # each one's usage); the policy admits its role to nothing else.
        statements += [
            f"CREATE POLICY {reader}_reads ON {table} FOR SELECT TO {SERVICE_ROLES[reader]} USING (true)"
            for reader in access.readers
        ]
    return statements


def database_access_sql() -> list[str]:
    """Database-level access: only the four roles connect; only the owner creates objects."""
    roles = ", ".join(str(role) for role in (Role.APP, Role.MARKETING, Role.ADMIN))
    return [
        "DO $$ BEGIN EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()); END $$",
        f"DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO {roles}', current_database()); END $$",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {roles}",
        # Every service checks the schema version for /readyz.
        f"GRANT SELECT ON TABLE alembic_version TO {roles}",
    ]


def user_membership_policies_sql() -> list[str]:
    """Read-only policies for a signed-in user with no organization chosen yet: they see their own
    memberships and the organizations those name (to pick one), nothing more."""
    # Built from constants only; nothing here comes from input.
    member_of = "CREATE POLICY member_of ON organizations FOR SELECT USING (id IN (SELECT org_id FROM memberships WHERE user_id = {}))"
    return [
        f"CREATE POLICY member_self ON memberships FOR SELECT USING (user_id = {CURRENT_USER})",
        member_of.format(CURRENT_USER),
    ]
