"""Durable runs in the engine: replay from a journal repeats no effect, waits suspend the run and
end at the time fixed when they began (an injected clock: no real sleeping)."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from nectar.core.workflows.definition import validate
from nectar.core.workflows.engine import execute
from nectar.core.workflows.expressions import json_safe, json_text
from nectar.shared.config import Role
from tests.core.test_workflow_engine import Recorder

START = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)


class MemoryJournal:
    """The engine's Journal protocol kept in a dict: what PostgreSQL keeps for a real run."""

    def __init__(self, run_id="run-1"):
        self.run_id, self.saved = run_id, {}

    def recall(self, key):
        return self.saved.get(key)

    def save(self, key, checkpoint):
        current = self.saved.get(key)
        if current is None or current.status == "waiting":
            self.saved[key] = checkpoint

    def effect_key(self, key):
        return f"{self.run_id}/{key}"


class Clock:
    def __init__(self, now=START):
        self.now = now

    def __call__(self):
        return self.now


def wf(*steps):
    document = {"trigger": {"type": "manual"}, "steps": list(steps)}
    assert validate(document) == [], validate(document)
    return document


def run(document, journal, clock, effects=None, trigger=None):
    return execute(document, trigger or {}, effects or Recorder(), mode="async", journal=journal, now=clock)


OK = {"status": 200, "headers": {}, "body": {"ok": True}}


def test_a_resumed_run_repeats_no_request_or_email_it_recorded():
    document = wf(
        {"id": "call", "type": "http_request", "url": "https://example.com/a"},
        {
            "id": "mail",
            "type": "send_email",
            "to": "a@example.com",
            "subject": "s",
            "body": "{{ steps.call.body.ok }}",
        },
        {"id": "pause", "type": "wait", "seconds": 60},
        {"id": "after", "type": "http_request", "method": "POST", "url": "https://example.com/b"},
    )
    journal, clock = MemoryJournal(), Clock()
    first = Recorder([OK])
    waiting = run(document, journal, clock, first)
    assert waiting.status == "waiting" and waiting.wake_at == START + timedelta(seconds=60)
    assert waiting.waiting_for == {"type": "wait", "step": "pause", "until": waiting.wake_at.isoformat()}
    assert len(first.requests) == 1 and len(first.emails) == 1
    assert first.requests[0]["headers"]["Idempotency-Key"] == "run-1/call"

    early = Recorder()  # woken too soon: replays, repeats nothing, waits again
    assert run(document, journal, Clock(START + timedelta(seconds=59)), early).status == "waiting"
    assert early.requests == [] and early.emails == []

    clock.now = START + timedelta(seconds=60)
    second = Recorder([OK])
    done = run(document, journal, clock, second)
    assert done.status == "succeeded", done.error
    assert [r["url"] for r in second.requests] == ["https://example.com/b"] and second.emails == []
    assert second.requests[0]["headers"]["Idempotency-Key"] == "run-1/after"
    assert [s.step_id for s in done.steps] == ["call", "mail", "pause", "after"]
    assert [s.position for s in done.steps] == [0, 1, 2, 3]


class StoredJournal(MemoryJournal):
    """Keeps each output as the database's checkpoint column gives it back (its real type; jsonb
    refuses NULs, so they are dropped first, as the journal does)."""

    def __init__(self, database):
        super().__init__()
        self.conn = database.connect(Role.ADMIN)
        self.column_type = self.conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'workflow_run_checkpoints'::regclass AND attname = 'output'"
        ).fetchone()[0]

    def save(self, key, checkpoint):
        stored = self.conn.execute(
            f"SELECT CAST(%s AS {self.column_type})::text", [json_text(json_safe(checkpoint.output))]
        )
        super().save(key, replace(checkpoint, output=json.loads(stored.fetchone()[0])))


def test_a_loop_over_an_answers_keys_replays_the_same_items_after_a_crash(database):
    document = wf(
        {"id": "fetch", "type": "http_request", "url": "https://example.com/people"},
        {
            "id": "loop",
            "type": "for_each",
            "items": "keys(steps.fetch.body)",
            "steps": [
                {"id": "send", "type": "send_email", "to": "{{ item }}", "subject": "s", "body": "b\u0000"},
                {"id": "pause", "type": "wait", "seconds": 60},
            ],
        },
    )
    body = {"zed@x.io": 1, "al@x.io": 2, "bob@example.org": 3, "nul\u0000@x.io": 4}
    journal, clock = StoredJournal(database), Clock()
    first = Recorder([{"status": 200, "headers": {}, "body": body}])
    assert run(document, journal, clock, first).status == "waiting"  # after loop[0]/send: as a crash
    sent = [to for to, _, _ in first.emails]
    while (outcome := run(document, journal, clock, replayed := Recorder())).status == "waiting":
        sent += [to for to, _, _ in replayed.emails]
        clock.now += timedelta(seconds=60)
    assert outcome.status == "succeeded", outcome.error
    sent += [to for to, _, _ in replayed.emails]
    assert sent == ["zed@x.io", "al@x.io", "bob@example.org", "nul@x.io"]  # each once, in the answer's order


def test_a_thirty_day_wait_ends_on_its_day_and_a_longer_one_is_refused():
    month = wf(
        {"id": "w", "type": "wait", "seconds": 30 * 86400}, {"id": "x", "type": "set", "values": {"a": 1}}
    )
    journal, clock = MemoryJournal(), Clock()
    assert run(month, journal, clock).wake_at == START + timedelta(days=30)
    clock.now = START + timedelta(days=29, hours=23)
    assert run(month, journal, clock).status == "waiting"
    clock.now = START + timedelta(days=30)
    assert run(month, journal, clock).status == "succeeded"

    later = wf({"id": "w", "type": "wait", "until": "{{ trigger.at }}"})
    too_far = run(later, MemoryJournal(), Clock(), trigger={"at": "2027-03-01T00:00:00Z"})
    assert too_far.status == "failed" and "at most 30 days" in too_far.error
    naive = run(later, MemoryJournal(), Clock(), trigger={"at": "2027-01-02T00:00:00"})
    assert naive.status == "failed" and "time zone" in naive.error
    past = run(later, MemoryJournal(), Clock(), trigger={"at": "2026-12-31T00:00:00+00:00"})
    assert past.status == "succeeded"


def test_a_wait_keeps_the_time_fixed_when_it_began():
    document = wf({"id": "w", "type": "wait", "seconds": 3600})
    journal, clock = MemoryJournal(), Clock()
    run(document, journal, clock)
    clock.now = START + timedelta(minutes=30)  # resumed early: the wait still ends at 10:00, not 10:30
    assert run(document, journal, clock).wake_at == START + timedelta(hours=1)


def test_each_loop_iteration_is_its_own_step_in_the_journal():
    document = wf(
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.people",
            "steps": [
                {"id": "greet", "type": "send_email", "to": "{{ item }}", "subject": "hi", "body": "hello"},
                {"id": "nap", "type": "wait", "seconds": 10},
            ],
        }
    )
    journal, clock, people = MemoryJournal(), Clock(), {"people": ["a@x.io", "b@x.io"]}
    effects = Recorder()
    for _ in range(3):
        outcome = run(document, journal, clock, effects, people)
        clock.now += timedelta(seconds=10)
    assert outcome.status == "succeeded", outcome.error
    assert [e[0] for e in effects.emails] == ["a@x.io", "b@x.io"]  # one each, over three activations
    assert {"each[0]/greet", "each[1]/greet", "each[0]/nap", "each[1]/nap"} <= set(journal.saved)


def test_a_journaled_failure_takes_the_same_error_branch_without_asking_again():
    document = wf(
        {
            "id": "call",
            "type": "http_request",
            "url": "https://example.com/flaky",
            "on_error": [{"id": "note", "type": "set", "values": {"failed": "{{ error.step }}"}}],
        },
        {"id": "pause", "type": "wait", "seconds": 5},
    )
    journal, clock = MemoryJournal(), Clock()
    first = Recorder([{"status": 503, "headers": {}, "body": None}])
    assert run(document, journal, clock, first).status == "waiting"
    assert journal.saved["call"].status == "failed"
    clock.now += timedelta(seconds=5)
    again = Recorder()
    done = run(document, journal, clock, again)
    assert done.status == "succeeded" and again.requests == []
    assert [s.step_id for s in done.steps] == ["call", "note", "pause"]


def test_each_attempt_of_a_request_has_its_own_idempotency_key_and_a_replay_the_same_ones():
    document = wf(
        {"id": "call", "type": "http_request", "url": "https://example.com/a", "retry": {"attempts": 3}},
        {"id": "pause", "type": "wait", "seconds": 60},
    )
    failing = {"status": 500, "headers": {}, "body": {}}
    effects = Recorder([failing, failing, OK])
    assert run(document, MemoryJournal(), Clock(), effects).status == "waiting"
    keys = [request["headers"]["Idempotency-Key"] for request in effects.requests]
    assert keys == ["run-1/call", "run-1/call#2", "run-1/call#3"]
