"""Asynchronous runs through the durable queue: manual runs, schedules, and failures that never
take the worker down."""

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg
import pytest

from nectar.core.runs import jobs
from nectar.core.runs.runner import activate_run
from nectar.core.workflows.engine import ASYNC_LIMITS
from nectar.shared.config import Role
from nectar.shared.database import db
from tests.core.conftest import drain_jobs, org_id_of, run_and_wait
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow

WAITS_AN_HOUR = {"trigger": {"type": "manual"}, "steps": [{"id": "d", "type": "delay", "seconds": 3600}]}
SETS_A_VALUE = {"trigger": {"type": "manual"}, "steps": [{"id": "s", "type": "set", "values": {"a": 1}}]}
SCHEDULED = {
    "trigger": {"type": "schedule", "cron": "*/5 * * * *"},
    "steps": [{"id": "tick", "type": "set", "values": {"at": "{{ trigger.scheduled_for }}"}}],
}


def _new_workflow(browser, definition: dict) -> tuple[str, str]:
    """A new person's organization with one workflow: an API key and the workflow's id."""
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    return token, _workflow(browser, token, definition)


def test_a_manual_run_is_queued_then_run_by_the_worker(browser, database):
    token, workflow_id = _new_workflow(
        browser, {"trigger": {"type": "manual"}, "steps": [{"id": "wait", "type": "delay", "seconds": 0}]}
    )
    run = run_and_wait(browser, token, workflow_id)
    assert run["status"] == "succeeded" and run["trigger"] == "manual"
    # The activation ended its job with the run's outcome, once: the worker did not end it again.
    assert _job_of(database, run["id"]) == ("succeeded", 1, ["deferred", "started", "succeeded"])


def _job_of(database, run_id: str) -> tuple[str, int, list[str]]:
    """The history of the run's (only) activation job."""
    with database.connect(Role.ADMIN) as conn:
        job_id = conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = 'core.run_workflow' AND args->>'run_id' = %s",
            (run_id,),
        ).fetchone()[0]
    return database.job_history(job_id)


def test_an_activation_that_fails_after_its_job_ended_is_not_retried(browser, database, monkeypatch):
    """The run's outcome and its job's end commit together; an error after that (here counting the
    run) is logged, and neither the run nor its job is touched again: the run is not failed, the
    job not retried."""
    from nectar.core.runs import runner

    def broken_count(trigger: str, status: str) -> None:
        raise RuntimeError("metrics are broken")

    monkeypatch.setattr(runner, "count_run", broken_count)
    token, workflow_id = _new_workflow(browser, SETS_A_VALUE)
    run = run_and_wait(browser, token, workflow_id)
    assert run["status"] == "succeeded" and run["error"] is None
    assert _job_of(database, run["id"]) == ("succeeded", 1, ["deferred", "started", "succeeded"])


@pytest.mark.parametrize(
    "meanwhile, job_afterwards",
    [
        # The worker's own end would have ended it: running it again would repeat the activation
        # (for a waiting run, a second wake-up).
        ("handed back", ("succeeded", 0, ["deferred", "cancelled"])),
        # That worker's to end.
        ("taken by another worker", ("doing", 0, ["deferred", "started"])),
    ],
)
@pytest.mark.parametrize("definition", [SETS_A_VALUE, WAITS_AN_HOUR], ids=["ends", "waits"])
def test_an_activation_whose_worker_was_taken_for_dead_ends_its_job_only_if_no_one_else_took_it(
    browser, database, meanwhile, job_afterwards, definition
):
    """A worker without a heartbeat is taken for dead, and the sweep hands its job back while its
    activation still runs; another worker may take it. The activation's outcome commits either way."""
    from nectar.shared.jobs import OwnJob, job_app

    token, workflow_id = _new_workflow(browser, definition)
    run_id = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}}
    ).json["id"]
    with database.connect(Role.ADMIN) as conn:
        job_id = conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE args->>'run_id' = %s AND status = 'todo'", (run_id,)
        ).fetchone()[0]
        if meanwhile == "taken by another worker":
            other = conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()[
                0
            ]
            conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
                (other, job_id),
            )
    worker = job_app(browser.app.config["NECTAR_SETTINGS"].database_url, jobs.blueprint)
    with browser.app.app_context():  # the activation of the worker taken for dead
        outcome = activate_run(
            db.session,
            org_id_of(browser),
            uuid.UUID(run_id),
            limits=ASYNC_LIMITS,
            job=OwnJob(job_id, None, worker.job_manager),
        )
        db.session.remove()
    assert outcome.status == ("waiting" if definition is WAITS_AN_HOUR else "succeeded")
    assert _job_of(database, run_id) == job_afterwards
    with database.connect(Role.ADMIN) as conn:
        wake_ups = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'core.wake_run' AND args->>'run_id' = %s",
            (run_id,),
        ).fetchone()[0]
    assert wake_ups == (1 if definition is WAITS_AN_HOUR else 0)


def test_a_failing_or_runaway_workflow_fails_its_run_and_the_worker_goes_on(browser):
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    broken = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "manual"},
            "steps": [{"id": "x", "type": "transform", "expression": "abs(trigger)"}],
        },
    )
    loop = _workflow(
        browser,
        token,
        {
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "l",
                    "type": "for_each",
                    "items": "trigger.items",
                    "steps": [
                        {"id": "s", "type": "set", "values": {}},
                        {"id": "t", "type": "set", "values": {}},
                    ],
                }
            ],
        },
    )
    fine = _workflow(
        browser,
        token,
        {"trigger": {"type": "manual"}, "steps": [{"id": "ok", "type": "set", "values": {"a": 1}}]},
    )
    ids = [
        browser.api("POST", f"/api/v1/workflows/{w}/runs", token=token, json={"input": i}).json["id"]
        for w, i in ((broken, {}), (loop, {"items": list(range(1000))}), (fine, {}))
    ]
    drain_jobs(browser.app)
    statuses = [browser.api("GET", f"/api/v1/runs/{i}", token=token).json for i in ids]
    assert [s["status"] for s in statuses] == ["failed", "failed", "succeeded"]
    assert "limit of 2000 steps" in statuses[1]["error"]


def test_schedules_start_runs_once_per_due_time(browser, core_app, database):
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    workflow_id = _workflow(browser, token, SCHEDULED)
    with database.connect(Role.ADMIN) as conn:
        next_run = conn.execute(
            "SELECT next_run_at FROM workflow_schedules WHERE workflow_id = %s", (workflow_id,)
        ).fetchone()[0]
    assert next_run > datetime.now(UTC) - timedelta(minutes=1)
    later = next_run + timedelta(seconds=1)
    with core_app.app_context():
        assert jobs.start_due_runs(db.session, now=later) >= 1
        assert jobs.start_due_runs(db.session, now=later) == 0  # moved on: the same time never runs twice
        db.session.remove()
    drain_jobs(core_app)
    runs = browser.api("GET", f"/api/v1/runs?workflow_id={workflow_id}&trigger=schedule", token=token).json[
        "items"
    ]
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    # Changing the trigger away from a schedule removes it from the index.
    manual = {**SCHEDULED, "trigger": {"type": "manual"}}
    browser.api("POST", f"/api/v1/workflows/{workflow_id}/versions", token=token, json={"definition": manual})
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM workflow_schedules WHERE workflow_id = %s", (workflow_id,)
            ).fetchone()[0]
            == 0
        )
    assert org


def test_a_schedule_whose_workflow_is_gone_is_dropped_and_starts_nothing(core_app, database):
    """Schedules refer to their organization, not their workflow (a reference table on Citus
    cannot refer to a distributed one): the scheduler drops one whose workflow went."""
    org, gone = uuid.uuid4(), uuid.uuid4()
    due = datetime.now(UTC) - timedelta(minutes=1)
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug) VALUES (%s, 'Gone', %s)", (org, f"gone-{org.hex}")
        )
        conn.execute(
            "INSERT INTO workflow_schedules (workflow_id, organization_id, cron, next_run_at) "
            "VALUES (%s, %s, '* * * * *', %s)",
            (gone, org, due),
        )
    with core_app.app_context():
        jobs.start_due_runs(db.session, now=datetime.now(UTC))
        db.session.remove()
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM workflow_schedules WHERE workflow_id = %s", (gone,)
            ).fetchone()[0]
            == 0
        )
        assert conn.execute("SELECT count(*) FROM workflow_runs WHERE org_id = %s", (org,)).fetchone()[0] == 0


def test_a_run_whose_worker_died_is_handed_back_and_finished_by_another(browser, database):
    """A worker killed mid-run leaves its job 'doing' and the run 'running'. The stalled-job sweep
    hands the job back, and the run resumes from its journal and finishes."""
    from nectar.shared.jobs import job_app

    token, workflow_id = _new_workflow(
        browser, {"trigger": {"type": "manual"}, "steps": [{"id": "s", "type": "set", "values": {}}]}
    )
    started = browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}})
    run_id = started.json["id"]
    with database.connect(Role.ADMIN) as conn:  # what a worker that crashed after starting leaves
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL "
            "WHERE task_name = 'core.run_workflow' AND args->>'run_id' = %s",
            (run_id,),
        )
        conn.execute("UPDATE workflow_runs SET status = 'running' WHERE id = %s", (run_id,))
    jobs.bind(browser.app)
    worker = job_app(browser.app.config["NECTAR_SETTINGS"].database_url, jobs.blueprint)
    with worker.open():
        worker.configure_task(jobs.RETRY_STALLED_TASK).defer(timestamp=0)
    drain_jobs(browser.app)
    run = browser.api("GET", f"/api/v1/runs/{run_id}", token=token).json
    assert run["status"] == "succeeded", run["error"]


def test_only_a_database_outage_is_retried_for_ever(database):
    with database.connect(Role.APP) as conn:
        conn.execute("SET statement_timeout = 10")
        with pytest.raises(psycopg.errors.QueryCanceled) as slow:  # an OperationalError, not an outage
            conn.execute("SELECT pg_sleep(1)")
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=1, dbname="nectar", connect_timeout=2)
    strategy = jobs.ActivationRetry()
    after_many = SimpleNamespace(attempts=50)
    assert strategy.get_retry_decision(exception=refused.value, job=after_many) is not None
    assert strategy.get_retry_decision(exception=slow.value, job=after_many) is None
    assert strategy.get_retry_decision(exception=slow.value, job=SimpleNamespace(attempts=1)) is not None


def test_a_stalled_job_whose_work_is_queued_again_under_its_lock_ends_and_the_sweep_goes_on(
    browser, database
):
    """A periodic job stalled by a dead worker, whose next run is already queued under the same
    queueing lock, cannot go back to the queue (the lock refuses it): it ends failed, and the sweep
    hands back the other stalled jobs instead of stopping at it."""
    from nectar.shared.jobs import job_app

    lock = f"periodic-{uuid.uuid4().hex[:8]}"
    with database.connect(Role.ADMIN) as conn:
        stalled, other = (
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, status, args) "
                "VALUES ('core', 'core.tick_schedules', %s, 'doing', '{\"timestamp\": 0}') RETURNING id",
                (queueing_lock,),
            ).fetchone()[0]
            for queueing_lock in (lock, None)
        )
        conn.execute(  # its next run, queued meanwhile; kept for later so the drain leaves it alone
            "INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, status, args, scheduled_at) "
            "VALUES ('core', 'core.tick_schedules', %s, 'todo', '{\"timestamp\": 1}', now() + interval '1 hour')",
            (lock,),
        )
    jobs.bind(browser.app)
    worker = job_app(browser.app.config["NECTAR_SETTINGS"].database_url, jobs.blueprint)
    with worker.open():
        worker.configure_task(jobs.RETRY_STALLED_TASK).defer(timestamp=0)
    drain_jobs(browser.app)
    with database.connect(Role.ADMIN) as conn:
        status = dict(
            conn.execute("SELECT id, status FROM procrastinate_jobs WHERE id IN (%s, %s)", (stalled, other))
        )
        sweep = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE task_name = %s ORDER BY id DESC LIMIT 1",
            (jobs.RETRY_STALLED_TASK,),
        ).fetchone()[0]
    assert status == {stalled: "failed", other: "succeeded"} and sweep == "succeeded"
