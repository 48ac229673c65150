"""A run whose next activation was lost (its job deleted by hand, or given up after its retries)
does not wait for ever: admin's sweep, which sees every organization, hands it back to core, whose
worker looks again and resumes it. A run with its job still coming, or waiting for later, is left alone."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import create_engine

from nectar.admin.jobs import hand_back_lost_runs
from nectar.shared.config import Role
from tests.core.conftest import browser, core_app, drain_jobs  # noqa: F401 - fixtures
from tests.core.test_endpoints import _workflow
from tests.core.test_run_signals import WAITS_FOR_PAYMENT, get_run, start

WAITS_A_SECOND = {
    "steps": [{"id": "pause", "type": "wait", "seconds": 1}, {"id": "after", "type": "set", "values": {}}]
}
ONE_STEP = {"steps": [{"id": "only", "type": "set", "values": {"done": True}}]}


def _lose_jobs(database, run_id: str, **set_back) -> None:
    """Deletes every job for the run, and moves its times back (minutes ago), as if it had been lost then."""
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs WHERE args->>'run_id' = %s", (run_id,))
        for column, minutes in set_back.items():
            conn.execute(
                f"UPDATE workflow_runs SET {column} = now() - make_interval(mins => %s) WHERE id = %s",  # noqa: S608
                (minutes, run_id),
            )


def test_runs_whose_next_activation_was_lost_are_resumed(browser, database):  # noqa: F811 - fixture
    token, waiting_id = start(browser, WAITS_A_SECOND)
    _, for_event_id = start(browser, WAITS_FOR_PAYMENT, token=token)
    _, queued_id = start(browser, ONE_STEP, token=token)
    _lose_jobs(database, queued_id, queued_at=10)  # never activated
    drain_jobs(browser.app)
    assert get_run(browser, token, waiting_id)["status"] == "waiting"
    assert get_run(browser, token, queued_id)["status"] == "queued"
    admin = create_engine(database.url(Role.ADMIN))
    try:
        assert hand_back_lost_runs(admin) == 1  # the waits still have their wake-ups coming
        _lose_jobs(database, waiting_id, wake_at=5)  # its wake-up lost, five minutes ago
        _lose_jobs(database, for_event_id)  # its time-out lost, but that is an hour away
        assert hand_back_lost_runs(admin) == 1
        assert hand_back_lost_runs(admin) == 0  # handed back once, however often the sweep comes

        time.sleep(1)  # the wait's second has passed (its own clock is its checkpoint, not wake_at)
        drain_jobs(browser.app)
        assert get_run(browser, token, queued_id)["status"] == "succeeded"
        resumed = get_run(browser, token, waiting_id)
        assert resumed["status"] == "succeeded" and [s["step_id"] for s in resumed["steps"]] == [
            "pause",
            "after",
        ]
        assert get_run(browser, token, for_event_id)["status"] == "waiting"
        assert hand_back_lost_runs(admin) == 0
    finally:
        admin.dispose()


def test_a_caller_whose_called_run_ended_without_waking_it_is_resumed(browser, database):  # noqa: F811
    token, _ = start(browser, ONE_STEP)
    child_name = f"child-{uuid.uuid4().hex[:6]}"
    _workflow(browser, token, {"trigger": {"type": "manual"}, **WAITS_A_SECOND}, name=child_name)
    _, caller_id = start(
        browser, {"steps": [{"id": "call", "type": "call_workflow", "workflow": child_name}]}, token=token
    )
    drain_jobs(browser.app)
    caller = get_run(browser, token, caller_id)
    assert caller["status"] == "waiting" and caller["waiting_for"]["type"] == "workflow", caller
    child_id = caller["waiting_for"]["run_id"]
    # The child ended five minutes ago, and the activation its end queued for its caller was lost.
    _lose_jobs(database, child_id)
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "UPDATE workflow_runs SET status = 'succeeded', output = '{\"output\": 7}', "
            "finished_at = now() - interval '5 minutes' WHERE id = %s",
            (child_id,),
        )
    admin = create_engine(database.url(Role.ADMIN))
    try:
        assert hand_back_lost_runs(admin) == 1
        drain_jobs(browser.app)
        done = get_run(browser, token, caller_id)
        assert done["status"] == "succeeded" and done["output"]["output"] == 7, done
    finally:
        admin.dispose()
