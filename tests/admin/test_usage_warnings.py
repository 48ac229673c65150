"""Usage warnings: the admin worker tells the owners and admins of every organization past 80% of
its plan's runs this month, once each a month, saying what happens at 100% on its plan."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import create_engine

from nectar.admin import jobs
from nectar.shared.config import Role


def _organization(conn, plan: str, runs: int, members: dict[str, str]) -> uuid.UUID:
    org = uuid.uuid4()
    conn.execute(
        "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, %s, %s, %s)",
        (org, f"Busy {org.hex[:6]}", f"busy-{org.hex}", plan),
    )
    for role, email in members.items():
        user = conn.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)).fetchone()[0]
        conn.execute("INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s)", (org, user, role))
    conn.execute(
        "INSERT INTO usage_daily (org_id, day, trigger, shard, runs) VALUES (%s, %s, 'http', 0, %s)",
        (org, datetime.now(UTC).date().replace(day=1), runs),
    )
    return org


def _warnings(conn, address: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT subject, body_text FROM email_outbox WHERE to_address = %s AND category = 'usage.warning'",
        (address,),
    ).fetchall()


def test_owners_and_admins_past_80_percent_are_told_once_a_month(database):
    tag = uuid.uuid4().hex[:8]
    people = {role: f"{role}-{tag}@example.com" for role in ("owner", "admin", "member")}
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        _organization(conn, "free", 850, people)  # 85% of the free plan's 1,000
        calm = f"calm-{tag}@example.com"
        _organization(conn, "free", 700, {"owner": calm})
        paid = f"paid-{tag}@example.com"
        _organization(conn, "starter", 9_000, {"owner": paid})
    engine = create_engine(database.url(Role.ADMIN))
    try:
        assert jobs.warn_usage(engine, "https://app.nectar.example") >= 3
        assert jobs.warn_usage(engine, "https://app.nectar.example") == 0  # once a month
    finally:
        engine.dispose()
    with database.connect(Role.ADMIN) as conn:
        ((subject, body),) = _warnings(conn, people["owner"])
        assert "85%" in subject and "850 of the 1,000 runs" in body and "refused until the month ends" in body
        assert "https://app.nectar.example/dashboard" in body
        assert len(_warnings(conn, people["admin"])) == 1 and _warnings(conn, people["member"]) == []
        assert _warnings(conn, calm) == []
        ((_subject, paid_body),) = _warnings(conn, paid)
        assert "billed per run" in paid_body


def test_a_name_its_organization_chose_is_one_line_in_the_subject(database):
    owner = f"owner-{uuid.uuid4().hex[:8]}@example.com"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        org = _organization(conn, "free", 900, {"owner": owner})
        name = "Acme\r\nBcc: all@example.com\u202e" + "x" * 150  # 2 to 200 characters, any of them
        conn.execute("UPDATE organizations SET name = %s WHERE id = %s", (name, org))
    engine = create_engine(database.url(Role.ADMIN))
    try:
        jobs.warn_usage(engine)
    finally:
        engine.dispose()
    with database.connect(Role.ADMIN) as conn:
        ((subject, _body),) = _warnings(conn, owner)
    assert subject.startswith("“Acme Bcc: all@example.com")
    assert "\n" not in subject and "\u202e" not in subject
    assert len(subject) < 120
