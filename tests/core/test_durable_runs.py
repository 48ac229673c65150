"""Durable runs across real worker processes on the real database: a worker killed with SIGKILL at
any moment costs nothing. Another worker takes the run over from its journal, a target that honours
Idempotency-Key sees one request per step, and the outbox holds one message per step."""

from __future__ import annotations

import threading

from nectar.core import main as core_binary  # noqa: F401 - packs the worker command run below
from nectar.shared.config import Role
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _workflow
from tests.core.upstream import serving
from tests.workers import wait_for
from tests.workers import workers as service_workers

ALLOW_LOOPBACK = {"NECTAR_OUTBOUND_ALLOWLIST": "127.0.0.1/32"}
TAKEOVER_SECONDS = 90  # a dead worker's job is handed back once its heartbeat is stale


def workers(database):
    """Starts `core.pex worker` processes on the test database (tests.workers.workers)."""
    return service_workers("core", database.environ(**ALLOW_LOOPBACK))


def _run_status(database, run_id) -> tuple[str, str | None]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT status, error FROM workflow_runs WHERE id = %s", (run_id,)).fetchone()


def _finished(database, run_id) -> tuple[str, str | None]:
    return wait_for(
        lambda: (row := _run_status(database, run_id))[0] in ("succeeded", "failed") and row,
        TAKEOVER_SECONDS,
        "the run to finish",
    )


def _outbox(database, *addresses) -> list[tuple[str, str]]:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT to_address, dedupe_key FROM email_outbox WHERE to_address = ANY(%s) ORDER BY created_at",
            (list(addresses),),
        ).fetchall()


def _start(browser, database, definition, run_input=None) -> str:
    browser.sign_up()
    org = browser.create_org()
    with database.connect(Role.ADMIN) as conn:  # room for every email these runs send
        conn.execute("UPDATE organizations SET plan = 'enterprise' WHERE id = %s", (org,))
    token = _new_key(browser)
    workflow_id = _workflow(browser, token, definition)
    started = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": run_input or {}}
    )
    assert started.status_code == 202, started.json
    return started.json["id"]


def test_a_worker_killed_after_a_request_before_its_checkpoint_is_replaced_and_the_target_sees_one_key(
    browser, database
):
    seen, hit, release = [], threading.Event(), threading.Event()

    def target(path, headers):
        seen.append(headers.get("Idempotency-Key"))
        hit.set()
        release.wait(30)  # the worker is killed while it waits for this answer
        return 200, {}, {"charged": True}

    with serving(target) as url, workers(database) as start:
        run_id = _start(
            browser,
            database,
            {
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "receipt",
                        "type": "send_email",
                        "to": "buyer@example.com",
                        "subject": "s",
                        "body": "b",
                    },
                    {"id": "charge", "type": "http_request", "method": "POST", "url": f"{url}/charge"},
                    {"id": "done", "type": "set", "values": {"charged": "{{ steps.charge.body.charged }}"}},
                ],
            },
        )
        first = start()
        assert hit.wait(60), _run_status(database, run_id)[1]
        first.kill()  # after the request, before its answer was recorded
        release.set()
        start()
        assert _finished(database, run_id) == ("succeeded", None)
    assert len(seen) == 2 and len(set(seen)) == 1 and seen[0], seen  # delivered twice, one key
    assert len(_outbox(database, "buyer@example.com")) == 1
    # One result: each step once in the run's trace.
    with database.connect(Role.ADMIN) as conn:
        (steps,) = conn.execute("SELECT steps FROM workflow_runs WHERE id = %s", (run_id,)).fetchone()
    assert [step["step_id"] for step in steps] == ["receipt", "charge", "done"], steps


def test_a_worker_killed_while_sending_email_leaves_one_message_per_step(browser, database):
    addresses = [f"member{i}@example.com" for i in range(40)]
    with workers(database) as start:
        run_id = _start(
            browser,
            database,
            {
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "each",
                        "type": "for_each",
                        "items": "trigger.people",
                        "steps": [
                            {
                                "id": "hello",
                                "type": "send_email",
                                "to": "{{ item }}",
                                "subject": "s",
                                "body": "b",
                            },
                        ],
                    }
                ],
            },
            {"people": addresses},
        )
        first = start()
        wait_for(lambda: len(_outbox(database, *addresses)) >= 5, 60, "some messages")
        first.kill()
        start()
        assert _finished(database, run_id) == ("succeeded", None)
    sent = _outbox(database, *addresses)
    assert sorted(to for to, _ in sent) == sorted(addresses)  # each once, none twice
    assert len({key for _, key in sent}) == len(addresses)


def test_a_worker_killed_while_its_run_waits_costs_nothing(browser, database):
    with workers(database) as start:
        run_id = _start(
            browser,
            database,
            {
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "before",
                        "type": "send_email",
                        "to": "early@example.com",
                        "subject": "s",
                        "body": "b",
                    },
                    {"id": "pause", "type": "wait", "seconds": 3},
                    {
                        "id": "after",
                        "type": "send_email",
                        "to": "late@example.com",
                        "subject": "s",
                        "body": "b",
                    },
                ],
            },
        )
        first = start()
        wait_for(lambda: _run_status(database, run_id)[0] == "waiting", 60, "the run to wait")
        first.kill()
        start()
        assert _finished(database, run_id) == ("succeeded", None)
    assert len(_outbox(database, "early@example.com")) == 1
    assert len(_outbox(database, "late@example.com")) == 1
