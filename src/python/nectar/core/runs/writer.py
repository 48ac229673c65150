"""Recording endpoint calls: each call's run, any email it queued, and its count against the plan
(calls refused for their body count too, with no run).

Request threads hand their finished runs to one writer thread per process, which writes all that
have gathered in one transaction sent in one round trip. It lets a batch gather for up to
GATHER_SECONDS after its first run (group commit): a transaction's fixed cost in PostgreSQL is
several times a run's own, so under load one transaction carries many runs. A call is answered
without waiting for its run's commit, which follows within milliseconds (a process killed
meanwhile loses those run records, never an answer or an email), except when it queued email or
when writing is failing: then it waits for its own commit, which is written at once, and gets a
503 if that fails. Runs already answered are kept and written once the database is back. Reads
of runs in this process first wait for what it has queued (`flush`, which does not wait for the
batch to gather), so a caller that reads its run back finds it. Each batch also confirms its organizations' calls
this minute to their rate windows (rate_window.py).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import Engine

from nectar.core.runs.metrics import count_run
from nectar.core.runs.rate_window import (
    CALLS_SQL,
    Admission,
    CallCounts,
    calls_params,
    current_window,
    rate_key,
)
from nectar.core.runs.records import RECORD_RUNS_SQL, FinishedRun, record_runs_params, run_record_json
from nectar.shared.database import SET_TENANT_SQL, in_one_round_trip, one_per_database
from nectar.shared.mail import OUTBOX_INSERT_SQL, Email, outbox_params

log = logging.getLogger(__name__)
MAX_BATCH = 500
GATHER_SECONDS = 0.01  # the longest a batch waits for more runs; PostgreSQL does several times less work per run at ~10 runs a batch
MAX_KEPT = 50_000  # answered runs kept while the database is unreachable
WAIT_SECONDS = 30.0  # a request gives up on its run's write after this long


class RecordingFailed(Exception):
    """The run ran but could not be written."""


@dataclass
class _Pending:
    seq: int  # the order runs were handed over in
    org_id: uuid.UUID
    record_json: str | None  # None for a call refused before it ran: counted, with no run
    emails: list[Email]
    window: int
    queued_at: float
    # Set once written or given up, for a call that waits for its run's commit. Answered runs have
    # none (an Event per call costs more than the rest of handing it over); flush() watches
    # RunWriter._unwritten instead.
    done: threading.Event | None = None
    error: Exception | None = None

    @property
    def waited_for(self) -> bool:
        return self.done is not None


class RunWriter:
    """The writer thread of one database in one process."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.counts = CallCounts(self._read_total)
        self._queue: list[_Pending] = []
        self._handed = 0  # runs handed over so far
        self._unwritten: set[int] = set()  # their seq, until written or given up
        self._failing = False  # the last write failed for the connection or the server
        self._urgent = False  # someone waits for the queue's commit: write it without gathering
        lock = threading.Lock()
        self._wake = threading.Condition(lock)  # the writer waits here for runs
        self._written = threading.Condition(lock)  # flush() waits here for them to be written
        self._thread: threading.Thread | None = None

    def record(self, run: FinishedRun, emails: list[Email], admission: Admission) -> None:
        """Hands the run over for writing, with its admission (settled once written); waits for its
        commit when it queued email or writing is failing, and raises RecordingFailed if that
        commit fails."""
        waited_for = bool(emails) or self._failing
        count_run(run.request.trigger, run.outcome.status)
        text = run_record_json(run)
        pending = self._hand_over(run.org_id, text, emails, admission, waited_for)
        if waited_for:
            self._wait(pending, WAIT_SECONDS)

    def count_refused(self, admission: Admission) -> None:
        """Counts an admitted call that was refused before it ran (its body broke the endpoint's
        schema) in its organization's calls this minute: written with the next batch of runs, so
        refusing costs no round trip, and refused calls still reach the rate limit."""
        self._hand_over(admission.org_id, None, [], admission, waited_for=False)

    def _hand_over(
        self, org_id, text: str | None, emails: list[Email], admission: Admission, waited_for: bool
    ) -> _Pending:
        window, admission.handed_over = admission.window, True
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._write_forever, name="run-writer", daemon=True)
                self._thread.start()
                atexit.register(self.flush, WAIT_SECONDS)
            self._handed += 1
            done = threading.Event() if waited_for else None
            pending = _Pending(self._handed, org_id, text, emails, window, time.monotonic(), done)
            self._queue.append(pending)
            self._unwritten.add(pending.seq)
            # Wake the writer when it waits for a first run, or for this one; a gathering writer
            # wakes by itself (a wake per run would hand the GIL over on every call).
            if len(self._queue) == 1 or waited_for or len(self._queue) >= MAX_BATCH:
                self._urgent = self._urgent or waited_for
                self._wake.notify()
        return pending

    def flush(self, timeout: float = 5.0) -> None:
        """Waits until every run handed over so far is written (or `timeout` passes)."""
        with self._wake:
            through = self._handed
            if not self._written_through(through):
                self._urgent = True
                self._wake.notify()
                self._written.wait_for(lambda: self._written_through(through), timeout)

    def _written_through(self, seq: int) -> bool:
        """Whether every run up to `seq` is written or given up (the lock held)."""
        return not self._unwritten or min(self._unwritten) > seq

    def _wait(self, pending: _Pending, timeout: float) -> None:
        if not pending.done.wait(timeout):
            with self._wake:
                queued = next((i for i, p in enumerate(self._queue) if p is pending), None)
                if queued is not None:  # not taken yet: withdrawn, so it is never written later
                    del self._queue[queued]
            if queued is None:
                raise RecordingFailed(f"the database did not confirm the run within {timeout:g} s")
            self._finish([pending], {}, RecordingFailed("withdrawn"))
            raise RecordingFailed(f"the database did not take the run within {timeout:g} s")
        if pending.error is not None:
            raise RecordingFailed(str(pending.error)) from pending.error

    def _write_forever(self) -> None:
        backoff = 0.1
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                gathered_by = self._queue[0].queued_at + GATHER_SECONDS
                while not self._urgent and len(self._queue) < MAX_BATCH:
                    left = gathered_by - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._urgent = self._urgent and bool(self._queue)
            if self._write_batch(batch):
                self._failing, backoff = False, 0.1
            else:
                self._failing = True
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _write_batch(self, batch: list[_Pending]) -> bool:
        """Writes the batch, or settles every run in it with its error; never raises (a run left
        unsettled would keep flush() and its caller waiting). False when the database could not
        be reached: the answered runs are kept for later."""
        try:
            self._write(batch)
            return True
        except psycopg.OperationalError as error:  # the connection or the server
            log.warning("writing %d runs failed (%s); retrying shortly", len(batch), error)
            self._keep_for_later(batch, error)
            return False
        except psycopg.Error as error:
            if len(batch) == 1:
                self._finish(batch, {}, error)
                return True
            # A run the database refuses fails alone.
            log.warning("a batch of %d runs was refused (%s); writing them one by one", len(batch), error)
            for index, pending in enumerate(batch):
                if not self._write_batch([pending]):  # lost the database midway: keep the rest too
                    self._keep_for_later(batch[index + 1 :], RecordingFailed("the database went away"))
                    return False
            return True
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.exception("writing runs failed")
            self._finish(batch, {}, error)
            return True

    def _keep_for_later(self, batch: list[_Pending], error: Exception) -> None:
        """Calls waiting for their commit get the error; runs already answered go back to the front
        of the queue, as many as MAX_KEPT."""
        self._finish([p for p in batch if p.waited_for], {}, error)
        answered = [p for p in batch if not p.waited_for]
        with self._wake:
            room = max(0, MAX_KEPT - len(self._queue))
            self._queue[:0] = answered[:room]
        if len(answered) > room:
            log.error(
                "%d answered runs dropped unrecorded: the database has been unreachable too long",
                len(answered) - room,
            )
            self._finish(answered[room:], {}, error)

    def _write(self, batch: list[_Pending]) -> None:
        """One transaction, one round trip: per organization its tenant setting, its runs, steps and
        count, its emails, and its total this minute."""
        by_org: dict[uuid.UUID, list[_Pending]] = {}
        for pending in batch:
            by_org.setdefault(pending.org_id, []).append(pending)
        window = current_window()
        statements, total_at = [], {}
        for org_id, runs in by_org.items():
            statements.append((SET_TENANT_SQL, (str(org_id),)))
            bucket = rate_key(org_id), window
            written = [p.record_json for p in runs if p.record_json is not None]
            statements.append((RECORD_RUNS_SQL, record_runs_params(written, bucket, calls=len(runs))))
            statements += [(OUTBOX_INSERT_SQL, outbox_params(e)) for p in runs for e in p.emails]
            total_at[org_id] = len(statements)
            statements.append((CALLS_SQL, calls_params(org_id, window)))
        results = in_one_round_trip(self.engine, statements)
        totals = {org_id: results[index][0][0] for org_id, index in total_at.items()}
        self._finish(batch, totals, None, window)

    def _finish(self, batch: list[_Pending], totals: dict, error: Exception | None, window=None) -> None:
        for pending in batch:
            org_id = pending.org_id
            total = totals.get(org_id) if window == pending.window else None
            self.counts.settle(org_id, pending.window, written=error is None, total=total)
            pending.error = error
            if pending.done is not None:
                pending.done.set()
        with self._written:
            self._unwritten.difference_update(pending.seq for pending in batch)
            self._written.notify_all()

    def _read_total(self, org_id: uuid.UUID, window: int) -> int:
        return in_one_round_trip(self.engine, [(CALLS_SQL, calls_params(org_id, window))])[0][0][0]


def run_writer(engine: Engine) -> RunWriter:
    """The writer of `engine`'s database in this process."""
    return one_per_database(engine, RunWriter)
