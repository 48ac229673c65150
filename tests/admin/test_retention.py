"""Run retention: the admin worker prunes old runs across every organization, keeps recent ones,
and honours the staff-editable setting."""

import uuid

from sqlalchemy import create_engine

from nectar.admin import jobs
from nectar.shared.config import Role


def _seed(conn, org, ages_in_days, status="succeeded"):
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
            "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, queued_at, finished_at, steps) "
            "VALUES (%s, %s, %s, 'manual', %s, now() - make_interval(days => %s), "
            "CASE WHEN %s IN ('succeeded', 'failed', 'cancelled') THEN now() - make_interval(days => %s) END, "
            """'[{"step_id": "s", "step_type": "set", "position": 0, "status": "succeeded"}]')""",
            (org, workflow, version, status, age, status, age),
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


def test_runs_that_have_not_ended_are_kept_however_old(database):
    """A run may wait thirty days and then for its approval: retention never removes one mid-way."""
    org = uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        _seed(conn, org, [45], status="waiting")
        workflow_and_version = conn.execute(
            "SELECT workflow_id, version_id FROM workflow_runs WHERE org_id = %s", (org,)
        ).fetchone()
        for status, age in (("running", 40), ("queued", 35), ("failed", 60)):
            conn.execute(
                "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, queued_at, finished_at) "
                "VALUES (%s, %s, %s, 'manual', %s, now() - make_interval(days => %s), "
                "CASE WHEN %s = 'failed' THEN now() - make_interval(days => %s) END)",
                (org, *workflow_and_version, status, age, status, age),
            )
        conn.execute("DELETE FROM system_settings WHERE key = 'run_retention_days'")
    engine = create_engine(database.url(Role.ADMIN))
    try:
        jobs.prune(engine)
    finally:
        engine.dispose()
    with database.connect(Role.ADMIN) as conn:
        left = conn.execute(
            "SELECT status FROM workflow_runs WHERE org_id = %s ORDER BY status", (org,)
        ).fetchall()
    assert [status for (status,) in left] == ["queued", "running", "waiting"]
