"""PostgreSQL stopped hard (`pg_ctl stop -m immediate`) and started again while a hundred durable
runs wait or run: every run finishes afterwards, each step's email exactly once, and no worker
process is restarted by hand. The server is this module's own: stopping the shared test server
would fail every other test process."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from nectar.shared.config import Role
from tests.conftest import own_server
from tests.core.test_durable_runs import wait_for, workers

pytestmark = pytest.mark.timeout(300)

WAITING = {
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "hello", "type": "send_email", "to": "{{ trigger.to }}", "subject": "s", "body": "b"},
        {"id": "pause", "type": "wait", "seconds": 4},
        {"id": "bye", "type": "send_email", "to": "{{ trigger.to }}", "subject": "s", "body": "b"},
    ],
}
BUSY = {
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.people",
            "steps": [{"id": "note", "type": "send_email", "to": "{{ item }}", "subject": "s", "body": "b"}],
        }
    ],
}


@pytest.fixture(scope="module")
def own_database():
    with own_server("durable-outage") as database:
        yield database


def _queue(conn, org, workflow, version, inputs: list[dict]) -> None:
    for run_input in inputs:
        run_id = conn.execute(
            "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, input) "
            "VALUES (%s, %s, %s, 'manual', 'queued', %s) RETURNING id",
            (org, workflow, version, json.dumps(run_input)),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) VALUES ('core', 'core.run_workflow', %s, %s)",
            (f"run:{run_id}", json.dumps({"org_id": str(org), "run_id": str(run_id)})),
        )


def _seed(database) -> None:
    org = uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, 'Outage', 'outage', 'enterprise')",
            (org,),
        )
        for name, definition, inputs in (
            ("waiting", WAITING, [{"to": f"w{i}@example.com"} for i in range(80)]),
            ("busy", BUSY, [{"people": [f"b{i}-{j}@example.com" for j in range(30)]} for i in range(20)]),
        ):
            workflow = conn.execute(
                "INSERT INTO workflows (org_id, name, current_version) VALUES (%s, %s, 1) RETURNING id",
                (org, name),
            ).fetchone()[0]
            version = conn.execute(
                "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) "
                "VALUES (%s, %s, 1, %s) RETURNING id",
                (org, workflow, json.dumps(definition)),
            ).fetchone()[0]
            _queue(conn, org, workflow, version, inputs)


def _counts(database) -> dict[str, int]:
    try:
        with database.connect(Role.ADMIN) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM workflow_runs GROUP BY status").fetchall())
    except Exception:  # noqa: BLE001 - the server may be on its way back
        return {}


def test_a_hundred_runs_finish_after_postgresql_is_stopped_hard_and_started_again(own_database):
    database = own_database
    with workers(database) as start:
        start(), start()
        _seed(database)
        wait_for(lambda: _counts(database).get("waiting", 0) >= 40, 90, "runs to be waiting")
        database.server.stop(immediate=True)  # with runs waiting, and others mid-way through their emails
        time.sleep(10)
        database.server.start()
        wait_for(
            lambda: _counts(database).get("succeeded", 0) == 100,
            180,
            "every run to finish",
            lambda: str(_counts(database)),
        )
    with database.connect(Role.ADMIN) as conn:
        per_address = dict(
            conn.execute("SELECT to_address, count(*) FROM email_outbox GROUP BY to_address").fetchall()
        )
    assert len(per_address) == 80 + 20 * 30
    assert set(per_address.values()) == {2} | {1} and sum(per_address.values()) == 80 * 2 + 20 * 30
    assert all(per_address[f"w{i}@example.com"] == 2 for i in range(80))
