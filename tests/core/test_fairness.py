"""Fairness between organizations: one organization's slow calls hold at most its share
of a web process's threads, and its queued runs at most its share of the workers, so another
organization is served meanwhile. Real processes: gunicorn as deployed, and `core worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nectar.shared.config import Role
from tests.core.test_bounded_work import _organization
from tests.core.test_endpoints import _endpoint, _workflow
from tests.core.upstream import serving
from tests.serving import service_process

pytestmark = pytest.mark.timeout(180)


def _wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:g} s"
        time.sleep(0.05)


def test_a_flood_of_slow_calls_from_one_organization_does_not_stop_another(new_browser, database):
    """Six calls at once whose workflow waits on a slow upstream, against one worker of four
    threads: two hold the flooding organization's share, the rest are told 429 at once, and
    another organization's calls are answered while the two still wait."""
    release, arrived = threading.Event(), []

    def slow_upstream(path, headers):
        arrived.append(path)
        release.wait(60)
        return 200, {}, {"slow": True}

    flooding, other = _organization(new_browser), _organization(new_browser)
    with serving(slow_upstream) as upstream:
        browser, _org, token = flooding
        slow = {
            "trigger": {"type": "http"},
            "steps": [
                {"id": "call", "type": "http_request", "url": upstream + "/slow"},
                {"id": "r", "type": "respond", "body": "{{ steps.call.body }}"},
            ],
        }
        flood_path = _endpoint(browser, token, _workflow(browser, token, slow), method="GET", path="/slow")[
            "url"
        ]
        echo = {
            "trigger": {"type": "http"},
            "steps": [{"id": "r", "type": "respond", "body": "{{ trigger.body }}"}],
        }
        browser, _org, token = other
        other_path = _endpoint(browser, token, _workflow(browser, token, echo), method="POST", path="/echo")[
            "url"
        ]
        environ = database.environ(
            WEB_CONCURRENCY="1", WEB_THREADS="4", NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32"
        )
        with service_process("nectar.core.main", environ) as url, ThreadPoolExecutor(6) as pool:
            flood = [pool.submit(requests.get, url + flood_path, timeout=90) for _ in range(6)]
            try:
                _wait_for(
                    lambda: len(arrived) >= 2, "the flooding organization's calls reaching the upstream"
                )
                _wait_for(
                    lambda: sum(f.done() for f in flood) >= 4, "the calls past its share being answered"
                )
                for n in range(10):  # while the flood still holds its share
                    answer = requests.post(url + other_path, json={"n": n}, timeout=15)
                    assert (answer.status_code, answer.json()) == (200, {"n": n})
                assert requests.get(url + "/healthz", timeout=15).status_code == 200
                assert len(arrived) == 2 and not release.is_set()
            finally:
                release.set()
            answers = [future.result() for future in flood]
    assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429, 429]
    assert {a.json()["slow"] for a in answers if a.status_code == 200} == {True}
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["Content-Type"] == "application/problem+json"


def test_one_organizations_queued_runs_do_not_starve_anothers(new_browser, database):
    """Eight queued runs of one organization, then one of another, and a real worker running four
    at once: the second organization's run starts at once, and the first never has more than its
    share (two) running."""
    busy, quiet = _organization(new_browser), _organization(new_browser)
    # A second of work that holds its worker slot (a wait would not: it suspends the run).
    busy_second = "const until = Date.now() + 1000; while (Date.now() < until) {} return 1;"
    waits = {"trigger": {"type": "manual"}, "steps": [{"id": "work", "type": "code", "source": busy_second}]}

    def queue(owner) -> str:
        browser, _org, token = owner
        workflow_id = _workflow(browser, token, waits)
        queued = browser.api("POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}})
        assert queued.status_code == 202, queued.json
        return queued.json["id"]

    busy_runs = [queue(busy) for _ in range(8)]
    quiet_run = queue(quiet)
    env = {
        **os.environ,
        **database.environ(WORKER_CONCURRENCY="4"),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "nectar.core.main", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with database.connect(Role.ADMIN, autocommit=True) as conn:

            def runs() -> dict:
                rows = conn.execute(
                    "SELECT id::text, status, started_at, finished_at FROM workflow_runs WHERE id::text = ANY(%s)",
                    ([*busy_runs, quiet_run],),
                ).fetchall()
                return {row[0]: row[1:] for row in rows}

            _wait_for(
                lambda: {status for status, *_ in runs().values()} == {"succeeded"},
                "every run finishing",
                120,
            )
            finished = runs()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    quiet_started = finished[quiet_run][1]
    started_before = [run for run in busy_runs if finished[run][1] < quiet_started]
    assert len(started_before) <= 2, "the other organization's run waited behind the busy one's"
    intervals = [finished[run][1:] for run in busy_runs]
    most_at_once = max(sum(start <= moment < end for start, end in intervals) for moment, _ in intervals)
    assert most_at_once <= 2
