"""A task that ends its own job in its last transaction (shared/jobs.py OwnJob): the worker leaves
that job alone afterwards, whatever the task does next."""

from __future__ import annotations

import logging

import procrastinate

from nectar.shared.config import Role
from nectar.shared.jobs import job_app, own_job

QUEUE = "own-job-test"


def _run_once(database, *, fail_after_the_end: bool) -> tuple[str, int, list[str]]:
    """Queues one job of a task that ends its own job, runs the worker until the queue is empty,
    and returns the job's history."""
    tasks = procrastinate.Blueprint()

    @tasks.task(name="test.ends_its_own_job", queue=QUEUE, pass_context=True, retry=3)
    def ends_its_own_job(context: procrastinate.JobContext) -> None:
        job = own_job(context)
        with database.connect(Role.APP) as conn:
            conn.execute(*job.end_statement)
        job.ended()
        if fail_after_the_end:
            raise RuntimeError("after its end committed")

    app = job_app(database.url(Role.APP), tasks)
    with app.open():
        job_id = app.configure_task("test.ends_its_own_job").defer()
        app.run_worker(queues=[QUEUE], wait=False, install_signal_handlers=False)
    return database.job_history(job_id)


ENDED_ONCE = ("succeeded", 1, ["deferred", "started", "succeeded"])


def _worker_errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_job_its_task_ended_is_not_ended_again(database, caplog):
    """Ending it again would fail (it is no longer running), and the worker would log that."""
    assert _run_once(database, fail_after_the_end=False) == ENDED_ONCE
    assert _worker_errors(caplog) == []


def test_a_task_that_fails_after_ending_its_job_is_not_retried(database, caplog):
    """Its work committed with the job's end: there is nothing to retry (and retrying a job that is
    no longer running would fail)."""
    assert _run_once(database, fail_after_the_end=True) == ENDED_ONCE
    assert [message for message in _worker_errors(caplog) if "after its end committed" not in message] == []
