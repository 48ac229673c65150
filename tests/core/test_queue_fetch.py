"""The job queue's fetch (migration 0034): the job procrastinate's rule picks, whatever the queue
holds, at a cost that grows with the queue and not with the queue times a lock's backlog."""

import random
import re
from datetime import datetime, timedelta
from importlib import resources

import pytest

from nectar.shared.config import Role

QUEUES = ("core", "other")
LOCKS = (None, "lane:0", "lane:1", "lane:2")


def _reference_choice(jobs: dict, queues: list[str], now: datetime):
    """procrastinate's rule, spelled out: the first waiting job (highest priority, then queued
    first) of the queues, due by now, whose lock has no job running and no job waiting ahead of it
    (in any queue, due or not)."""

    def ahead(other, job) -> bool:
        return other["priority"] > job["priority"] or (
            other["priority"] == job["priority"] and other["id"] < job["id"]
        )

    candidates = sorted(
        (
            job
            for job in jobs.values()
            if job["status"] == "todo"
            and job["queue"] in queues
            and (job["scheduled_at"] is None or job["scheduled_at"] <= now)
        ),
        key=lambda job: (-job["priority"], job["id"]),
    )
    for job in candidates:
        same_lock = [o for o in jobs.values() if job["lock"] is not None and o["lock"] == job["lock"]]
        if any(o["status"] == "doing" for o in same_lock):
            continue
        if any(o["status"] == "todo" and ahead(o, job) for o in same_lock):
            continue
        return job["id"]
    return None


def _fetch(conn, queues: list[str]):
    return conn.execute("SELECT id FROM procrastinate_fetch_job_v2(%s, NULL)", (queues,)).fetchone()[0]


@pytest.fixture
def queue(database):
    """A connection to an emptied job table, in a transaction rolled back at the end."""
    with database.connect(Role.OWNER) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")
        yield conn
        conn.rollback()


def test_the_fetch_takes_the_job_procrastinates_rule_picks(queue):
    """Random queues (locks, priorities, jobs running, jobs due later, two queues), drained fetch
    by fetch with running jobs finishing in between: every fetch takes the job the rule picks."""
    rng = random.Random(20261204)
    now = queue.execute("SELECT now()").fetchone()[0]
    fetches = 0
    for _ in range(60):
        queue.execute("DELETE FROM procrastinate_jobs")
        jobs = {}
        for _ in range(rng.randint(0, 25)):
            job = {
                "queue": rng.choice(QUEUES),
                "lock": rng.choice(LOCKS),
                "priority": rng.randint(-2, 2),
                "status": "todo",
                "scheduled_at": rng.choice(
                    [None, None, now - timedelta(minutes=1), now + timedelta(hours=1)]
                ),
            }
            running = {j["lock"] for j in jobs.values() if j["status"] == "doing"}
            if job["lock"] is not None and job["lock"] not in running and rng.random() < 0.15:
                job["status"] = "doing"  # one running job per lock at most, as procrastinate keeps it
            job["id"] = queue.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, priority, args, status, scheduled_at) "
                "VALUES (%s, 'bench.x', %s, %s, '{}', %s, %s) RETURNING id",
                (job["queue"], job["lock"], job["priority"], job["status"], job["scheduled_at"]),
            ).fetchone()[0]
            jobs[job["id"]] = job
        queues = rng.choice([["core"], ["core", "other"], ["other"]])
        while True:
            expected = _reference_choice(jobs, queues, now)
            assert _fetch(queue, queues) == expected
            fetches += 1
            if expected is not None:
                jobs[expected]["status"] = "doing"
            running = [job for job in jobs.values() if job["status"] == "doing"]
            if not running:
                break
            finished = rng.choice(running)  # a worker finishes one, then a slot asks again
            finished["status"] = "succeeded"
            queue.execute(
                "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (finished["id"],)
            )
    assert fetches > 300  # the loop did compare, many times


def test_a_lock_backlog_costs_the_fetch_pages_in_proportion_to_the_queue(queue):
    """Two lanes of 2,000 runs each, both running a job: there is nothing to fetch, and idle slots
    ask every 0.2 s. Statistics taken while every job waited, and a worker's connection that has
    fetched before (PL/pgSQL then keeps a generic plan): procrastinate's own fetch read each
    lane's backlog for every waiting job, 1.1 million pages and a second per fetch here; this one
    reads the queue's pages about once."""
    queue.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, priority, args, status) "
        "SELECT 'core', 'bench.x', 'lane:' || (i % 2), -i, '{}', 'todo' FROM generate_series(1, 4000) i"
    )
    queue.execute("ANALYZE procrastinate_jobs")
    queue.execute(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id IN "
        "(SELECT id FROM procrastinate_jobs ORDER BY id LIMIT 2)"
    )
    for _ in range(6):
        assert _fetch(queue, ["core"]) is None
    table_pages = queue.execute(
        "SELECT relpages FROM pg_class WHERE relname = 'procrastinate_jobs'"
    ).fetchone()[0]
    assert 0 < _pages_read_by_a_fetch(queue, ["core"]) < 3 * table_pages + 100


def _pages_read_by_a_fetch(conn, queues: list[str]) -> int:
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF) "
            "SELECT id FROM procrastinate_fetch_job_v2(%s, NULL)",
            (queues,),
        )
    )
    return sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", plan.split("Buffers:", 1)[1].split("\n")[0]))


def _lock_free_jobs(queue_name: str, status: str) -> str:
    return (
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
        f"SELECT '{queue_name}', 'bench.noop', '{{}}', '{status}' FROM generate_series(1, 2000)"
    )


def _runs_in_lanes(queue_name: str, status: str) -> str:
    return (
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, priority, args, status) "
        f"SELECT '{queue_name}', 'bench.run', 'lane:' || (i % 8), -i, '{{}}', '{status}' "
        "FROM generate_series(0, 1999) i"
    )


# What the table held when it was last analyzed, before a burst of 2,000 jobs that autovacuum has
# not caught up with; or it has (THE_BURST_ITSELF).
STATISTICS_BEFORE_THE_BURST = {
    "lock-free jobs of another queue, finished": _lock_free_jobs("other", "succeeded"),
    "lock-free jobs of another queue, waiting": _lock_free_jobs("other", "todo"),
    "runs of another queue, finished": _runs_in_lanes("other", "succeeded"),
    "nothing": None,
}
THE_BURST_ITSELF = "the burst itself"
BURSTS = {
    "runs in 8 lanes": _runs_in_lanes("core", "todo"),
    "lock-free jobs": _lock_free_jobs("core", "todo"),
}


@pytest.fixture
def committed_queue(database):
    """A connection that commits each statement (VACUUM needs it) to an emptied job table, emptied
    again at the end."""
    with database.connect(Role.OWNER) as conn:
        conn.autocommit = True
        conn.execute("DELETE FROM procrastinate_jobs")
        try:
            yield conn
        finally:
            conn.execute("DELETE FROM procrastinate_jobs")


@pytest.mark.parametrize("burst", BURSTS)
@pytest.mark.parametrize("before", [*STATISTICS_BEFORE_THE_BURST, THE_BURST_ITSELF])
def test_a_fetch_from_a_burst_reads_a_few_pages_whatever_the_statistics_say(
    committed_queue, database, before, burst
):
    """A burst of 2,000 jobs queued after the table was last analyzed, drained by four slots: each
    fetch walks the queue from its head and takes the first job it may, reading a few dozen pages.
    With statistics that said no job waited, or none had a lock, migration 0034's fetch read every
    waiting job for each fetch (130 pages), and a worker's first fetches read the whole index of
    waiting jobs for each of them (up to 180,000 pages, 1.5 s)."""
    if before == THE_BURST_ITSELF:
        committed_queue.execute(BURSTS[burst])
        committed_queue.execute("ANALYZE procrastinate_jobs")
    else:
        if STATISTICS_BEFORE_THE_BURST[before] is not None:
            committed_queue.execute(STATISTICS_BEFORE_THE_BURST[before])
        committed_queue.execute("ANALYZE procrastinate_jobs")
        committed_queue.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        committed_queue.execute("VACUUM procrastinate_jobs")
        committed_queue.execute(BURSTS[burst])
    with database.connect(Role.OWNER) as worker:  # a worker's connection: no plan cached yet
        worker.autocommit = True
        assert _fetch(worker, ["no-such-queue"]) is None  # a new connection reads the catalog once
        running, pages = [], []
        for _ in range(24):  # four slots fill, then each finishes its job and fetches the next
            if len(running) == 4:
                worker.execute(
                    "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (running.pop(0),)
                )
            pages.append(_pages_read_by_a_fetch(worker, ["core"]))
            running.append(
                worker.execute("SELECT max(id) FROM procrastinate_jobs WHERE status = 'doing'").fetchone()[0]
            )
    # About 50 pages a fetch, 200 for the first one (it plans, reading the table's catalog entries).
    assert max(pages) < 300, pages


def test_procrastinate_still_fetches_through_the_function_core_replaced(database):
    """An upgrade of procrastinate that fetches through another function would bypass ours (and
    its fix) silently: this fails first. One that replaces the function loses its mark."""
    queries = resources.files("procrastinate.sql").joinpath("queries.sql").read_text()
    assert "FROM procrastinate_fetch_job_v2(" in queries
    with database.connect(Role.OWNER) as conn:
        comment = conn.execute(
            "SELECT obj_description('procrastinate_fetch_job_v2(character varying[], bigint)'::regprocedure)"
        ).fetchone()[0]
    assert comment == "nectar: fetch in queue order, whatever the statistics (migration 0035)"


def test_the_fetch_still_works_as_each_service_role(database):
    """Every service's worker fetches from the queue as its own role."""
    for role in (Role.APP, Role.MARKETING, Role.ADMIN):
        with database.connect(role) as conn:
            assert conn.execute(
                "SELECT id FROM procrastinate_fetch_job_v2(ARRAY['no-such-queue'], NULL)"
            ).fetchone() == (None,)
            conn.rollback()
