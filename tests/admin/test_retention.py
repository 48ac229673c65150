"""Run retention: the admin worker prunes old runs across every organization, keeps recent ones,
and honours the staff-editable setting."""

import uuid

from sqlalchemy import create_engine

from nectar.admin import jobs
from nectar.shared.config import Role


def _seed(conn, org, ages_in_days):
    conn.execute("INSERT INTO organizations (id, name, slug) VALUES (%s, 'R', %s)", (org, f"r-{org.hex}"))
    workflow = conn.execute(
        "INSERT INTO workflows (org_id, name) VALUES (%s, 'w') RETURNING id", (org,)
    ).fetchone()[0]
    version = conn.execute(
        "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, '{}') RETURNING id",
        (org, workflow),
    ).fetchone()[0]
    for age in ages_in_days:
        conn.execute(
            "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, queued_at, steps) "
            "VALUES (%s, %s, %s, 'manual', now() - make_interval(days => %s), "
            """'[{"step_id": "s", "step_type": "set", "position": 0, "status": "succeeded"}]')""",
            (org, workflow, version, age),
        )


def _runs(conn, org):
    return sorted(
        round(row[0])
        for row in conn.execute(
            "SELECT extract(epoch FROM now() - queued_at) / 86400 FROM workflow_runs WHERE org_id = %s",
            (org,),
        ).fetchall()
    )


def test_old_runs_are_pruned_across_organizations(database):
    orgs = [uuid.uuid4(), uuid.uuid4()]
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        _seed(conn, orgs[0], [1, 29, 31, 90])
        _seed(conn, orgs[1], [2, 45])
        conn.execute("DELETE FROM system_settings WHERE key = 'run_retention_days'")
    engine = create_engine(database.url(Role.ADMIN))
    try:
        jobs.prune(engine, batch=1)  # a tiny batch exercises the loop
        with database.connect(Role.ADMIN, autocommit=True) as conn:
            assert _runs(conn, orgs[0]) == [1, 29]
            assert _runs(conn, orgs[1]) == [2]
            conn.execute(
                "INSERT INTO system_settings (key, value) VALUES ('run_retention_days', '{\"days\": 1}') "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
        jobs.prune(engine)
        with database.connect(Role.ADMIN, autocommit=True) as conn:
            assert _runs(conn, orgs[0]) == [1] or _runs(conn, orgs[0]) == []
            assert all(age <= 1 for age in _runs(conn, orgs[0]) + _runs(conn, orgs[1]))
            conn.execute("DELETE FROM system_settings WHERE key = 'run_retention_days'")
    finally:
        engine.dispose()
