"""A run whose next activation was lost (its job deleted by hand, or given up after its retries)
does not wait for ever: admin's sweep, which sees every organization, hands it back to core, whose
worker looks again and resumes it. A run with its job still coming, or waiting for later, is left alone."""

from __future__ import annotations

import time

from sqlalchemy import create_engine

from nectar.admin.jobs import hand_back_lost_runs
from nectar.shared.config import Role
from tests.core.conftest import browser, core_app, drain_jobs  # noqa: F401 - fixtures
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
