"""wait_for_event and approval in the engine, over an inbox kept in memory and an injected clock (no
real sleeping): what a step took or was told is kept in its checkpoint, so replays take the same
path; timeouts take their branch at their time; a rejection fails the step; a loop asks in each
iteration; a cancelled run stops before its next step that acts or waits. And bad documents are
refused with the exact path of each problem."""

from datetime import timedelta

import pytest

from nectar.core.workflows.definition import validate
from nectar.core.workflows.engine import execute
from tests.core.test_durable_engine import START, Clock, MemoryJournal, wf
from tests.core.test_workflow_engine import Recorder


class MemoryInbox:
    """The engine's Inbox protocol in memory: what PostgreSQL keeps for a real run."""

    def __init__(self):
        self.events: list[dict] = []  # {"id", "name", "received_at", "payload", "taken_by"}
        self.requests: dict[str, dict] = {}
        self.decisions: dict[str, dict] = {}
        self.closed: set[str] = set()
        self.is_cancelled = False

    def send(self, name, payload, at):
        self.events.append(
            {"id": f"e{len(self.events)}", "name": name, "received_at": at, "payload": payload}
        )

    def take_event(self, key, name, until):
        for event in sorted(self.events, key=lambda e: e["received_at"]):
            if event["name"] == name and "taken_by" not in event and event["received_at"] <= until:
                event["taken_by"] = key
                return {
                    "id": event["id"],
                    "received_at": event["received_at"].isoformat(),
                    "payload": event["payload"],
                }
        return None

    def request_approval(self, key, request):
        assert key not in self.requests, "asked twice"
        self.requests[key] = request

    def decide(self, key, decision, by="boss@example.com", comment=""):
        assert key in self.requests and key not in self.closed and key not in self.decisions
        self.decisions[key] = {"decision": decision, "by": by, "at": START.isoformat(), "comment": comment}

    def decision(self, key, closing):
        if closing and key not in self.decisions:
            self.closed.add(key)
        return self.decisions.get(key)

    def resume_url(self, key, event):
        return f"https://nectar.test/resume/{key}/{event}"

    def cancelled(self):
        return self.is_cancelled


def run(document, journal, clock, inbox, effects=None, trigger=None):
    return execute(
        document, trigger or {}, effects or Recorder(), mode="async", journal=journal, now=clock, inbox=inbox
    )


def test_an_event_sent_before_the_step_is_reached_is_taken_when_it_is():
    document = wf(
        {"id": "pause", "type": "wait", "seconds": 60},
        {"id": "paid", "type": "wait_for_event", "event": "payment.done", "timeout_seconds": 3600},
        {"id": "note", "type": "set", "values": {"amount": "{{ steps.paid.amount }}"}},
    )
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    assert run(document, journal, clock, inbox).status == "waiting"  # the wait
    inbox.send("payment.other", {"amount": 1}, START + timedelta(seconds=1))
    inbox.send("payment.done", {"amount": 42}, START + timedelta(seconds=2))
    inbox.send("payment.done", {"amount": 99}, START + timedelta(seconds=3))
    clock.now = START + timedelta(seconds=60)
    done = run(document, journal, clock, inbox)
    assert done.status == "succeeded", done.error
    assert done.output == {"amount": 42}  # the earliest of its name
    assert [e.get("taken_by") for e in inbox.events] == [None, "paid", None]
    # A replay takes the event from the checkpoint, not the inbox again.
    again = run(document, journal, clock, inbox)
    assert again.output == {"amount": 42} and [e.get("taken_by") for e in inbox.events] == [
        None,
        "paid",
        None,
    ]


def test_a_waiting_step_says_what_it_waits_for_and_until_when_and_the_payload_is_its_output():
    document = wf({"id": "paid", "type": "wait_for_event", "event": "paid", "timeout_seconds": 600})
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    waiting = run(document, journal, clock, inbox)
    until = START + timedelta(seconds=600)
    assert waiting.status == "waiting" and waiting.wake_at == until
    assert waiting.waiting_for == {
        "type": "event",
        "step": "paid",
        "key": "paid",
        "until": until.isoformat(),
        "event": "paid",
        "resume_url": "https://nectar.test/resume/paid/paid",
    }
    inbox.send("paid", {"ok": [1, 2]}, START + timedelta(seconds=5))
    clock.now = START + timedelta(seconds=6)
    done = run(document, journal, clock, inbox)
    assert done.status == "succeeded" and done.steps[0].output == {"ok": [1, 2]}
    assert done.steps[0].input["event_id"] == "e0"


def test_the_timeout_branch_is_taken_at_the_timeout_and_a_late_event_does_not_count():
    document = wf(
        {
            "id": "reply",
            "type": "wait_for_event",
            "event": "reply",
            "timeout_seconds": 86400,
            "on_timeout": [
                {"id": "remind", "type": "send_email", "to": "a@x.io", "subject": "s", "body": "b"}
            ],
        },
        {"id": "after", "type": "set", "values": {"reply": "{{ steps.reply }}"}},
    )
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    effects = Recorder()
    assert run(document, journal, clock, inbox, effects).status == "waiting"
    clock.now = START + timedelta(seconds=86399)  # woken early: still waiting
    assert run(document, journal, clock, inbox, effects).status == "waiting"
    inbox.send("reply", {"late": True}, START + timedelta(days=1, seconds=1))
    clock.now = START + timedelta(days=1, seconds=2)
    done = run(document, journal, clock, inbox, effects)
    assert done.status == "succeeded", done.error
    assert [s.step_id for s in done.steps] == ["reply", "remind", "after"]
    assert done.steps[0].input["timed_out"] is True and done.output == {"reply": None}
    assert "taken_by" not in inbox.events[0]
    assert len(effects.emails) == 1
    run(document, journal, clock, inbox, effects)  # replayed: the branch again, its email not again
    assert len(effects.emails) == 1


def test_without_a_timeout_branch_a_timeout_fails_the_step_and_on_error_applies():
    document = wf(
        {
            "id": "reply",
            "type": "wait_for_event",
            "event": "reply",
            "timeout_seconds": 10,
            "on_error": [{"id": "noted", "type": "set", "values": {"why": "{{ error.message }}"}}],
        }
    )
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    run(document, journal, clock, inbox)
    clock.now = START + timedelta(seconds=10)
    done = run(document, journal, clock, inbox)
    assert done.status == "succeeded"
    assert done.output == {"why": "no event 'reply' arrived within 10 s"}
    bare = wf({"id": "reply", "type": "wait_for_event", "event": "reply", "timeout_seconds": 10})
    journal = MemoryJournal()
    run(bare, journal, Clock(), inbox)
    failed = run(bare, journal, clock, inbox)
    assert failed.status == "failed" and "no event 'reply' arrived within 10 s" in failed.error
    assert failed.failed_step == "reply"


def test_an_approval_asks_once_records_who_and_why_and_a_rejection_fails_the_step():
    document = wf(
        {
            "id": "ok",
            "type": "approval",
            "title": "Refund {{ trigger.amount }} EUR?",
            "approver_role": "owner",
            "timeout_seconds": 3600,
        },
        {"id": "refund", "type": "http_request", "method": "POST", "url": "https://pay.example/refund"},
    )
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    waiting = run(document, journal, clock, inbox, trigger={"amount": 30})
    assert waiting.status == "waiting"
    assert waiting.waiting_for["type"] == "approval" and waiting.waiting_for["approver_role"] == "owner"
    assert inbox.requests["ok"]["title"] == "Refund 30 EUR?" and inbox.requests["ok"]["notify"] is True
    assert run(document, journal, clock, inbox, trigger={"amount": 30}).status == "waiting"  # asked once
    inbox.decide("ok", "approved", comment="fine")
    effects = Recorder([{"status": 200, "headers": {}, "body": {}}])
    done = run(document, journal, clock, inbox, effects, trigger={"amount": 30})
    assert done.status == "succeeded", done.error
    assert done.steps[0].output == {
        "decision": "approved",
        "by": "boss@example.com",
        "at": START.isoformat(),
        "comment": "fine",
    }
    assert len(effects.requests) == 1

    journal, inbox = MemoryJournal(), MemoryInbox()
    run(document, journal, clock, inbox, trigger={"amount": 30})
    inbox.decide("ok", "rejected", comment="not this one")
    effects = Recorder()
    rejected = run(document, journal, clock, inbox, effects, trigger={"amount": 30})
    assert rejected.status == "failed" and "rejected by boss@example.com: not this one" in rejected.error
    assert effects.requests == [] and rejected.failed_step == "ok"


def test_an_approval_inside_a_loop_asks_for_each_iteration():
    document = wf(
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.refunds",
            "steps": [{"id": "ok", "type": "approval", "title": "Refund {{ item }}?"}],
        }
    )
    journal, clock, inbox, trigger = MemoryJournal(), Clock(), MemoryInbox(), {"refunds": [10, 20]}
    assert run(document, journal, clock, inbox, trigger=trigger).status == "waiting"
    assert list(inbox.requests) == ["each[0]/ok"]
    inbox.decide("each[0]/ok", "approved")
    waiting = run(document, journal, clock, inbox, trigger=trigger)
    assert waiting.status == "waiting" and waiting.waiting_for["key"] == "each[1]/ok"
    assert [r["title"] for r in inbox.requests.values()] == ["Refund 10?", "Refund 20?"]
    inbox.decide("each[1]/ok", "approved", by="other@example.com")
    done = run(document, journal, clock, inbox, trigger=trigger)
    assert done.status == "succeeded"
    assert [d["by"] for d in done.output] == ["boss@example.com", "other@example.com"]


def test_an_approval_in_a_branch_not_taken_is_never_asked_and_one_taken_cannot_be_skipped():
    document = wf(
        {
            "id": "big",
            "type": "condition",
            "if": "trigger.amount > `100`",
            "then": [{"id": "ok", "type": "approval", "title": "Big refund", "timeout_seconds": 60}],
        },
        {"id": "refund", "type": "send_email", "to": "a@x.io", "subject": "refunded", "body": "b"},
    )
    journal, clock, inbox, effects = MemoryJournal(), Clock(), MemoryInbox(), Recorder()
    assert run(document, journal, clock, inbox, effects, trigger={"amount": 5}).status == "succeeded"
    assert inbox.requests == {} and len(effects.emails) == 1
    journal, effects = MemoryJournal(), Recorder()
    assert run(document, journal, clock, inbox, effects, trigger={"amount": 500}).status == "waiting"
    clock.now = START + timedelta(seconds=60)  # nobody decided: the step fails, nothing after it runs
    expired = run(document, journal, clock, inbox, effects, trigger={"amount": 500})
    assert expired.status == "failed" and "nobody decided within 60 s" in expired.error
    assert effects.emails == [] and inbox.closed == {"ok"}


def test_resume_urls_are_in_the_context_of_the_steps_before_the_wait_each_iteration_its_own():
    document = wf(
        {"id": "tell", "type": "set", "values": {"url": "{{ resume_urls.paid }}"}},
        {"id": "paid", "type": "wait_for_event", "event": "paid"},
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.items",
            "steps": [
                {"id": "give", "type": "set", "values": {"url": "{{ resume_urls.signed }}"}},
                {"id": "signed", "type": "wait_for_event", "event": "signed"},
            ],
        },
    )
    journal, clock, inbox = MemoryJournal(), Clock(), MemoryInbox()
    first = run(document, journal, clock, inbox, trigger={"items": [1, 2]})
    assert first.steps[0].output == {"url": "https://nectar.test/resume/paid/paid"}
    inbox.send("paid", {}, START)
    inbox.send("signed", {}, START)
    second = run(document, journal, clock, inbox, trigger={"items": [1, 2]})
    assert second.status == "waiting" and second.waiting_for["key"] == "each[1]/signed"
    gave = [s.output["url"] for s in second.steps if s.step_id == "give"]
    assert gave == [
        "https://nectar.test/resume/each[0]/signed/signed",
        "https://nectar.test/resume/each[1]/signed/signed",
    ]


def test_a_cancelled_run_stops_before_its_next_step_that_acts_or_waits():
    document = wf(
        {"id": "first", "type": "send_email", "to": "a@x.io", "subject": "s", "body": "b"},
        {"id": "second", "type": "send_email", "to": "b@x.io", "subject": "s", "body": "b"},
    )

    class CancelsAfterFirstEmail(Recorder):
        def email(self, *args, **kwargs):
            super().email(*args, **kwargs)
            inbox.is_cancelled = True

    inbox, effects = MemoryInbox(), CancelsAfterFirstEmail()
    outcome = run(document, MemoryJournal(), Clock(), inbox, effects)
    assert outcome.status == "cancelled" and [e[0] for e in effects.emails] == ["a@x.io"]


def test_a_run_that_only_computes_is_asked_once_a_second_has_passed_and_stops_when_cancelled():
    """Steps that neither act nor wait are not asked about (the run is not shown running for nothing)
    until a second has gone by since the run began or was last asked."""
    document = wf(
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.items",
            "steps": [{"id": "x", "type": "transform", "expression": "item"}],
        }
    )

    class Asked(MemoryInbox):
        def __init__(self):
            super().__init__()
            self.asked_at: list[float] = []

        def cancelled(self):
            self.asked_at.append(ticks[0])
            return len(self.asked_at) >= 3

    ticks = [0.0]

    def clock() -> float:  # each reading a quarter of a second later
        ticks[0] += 0.25
        return ticks[0]

    quick = Asked()
    done = execute(
        document, {"items": [1, 2]}, Recorder(), mode="async", journal=MemoryJournal(), inbox=quick
    )
    assert done.status == "succeeded" and quick.asked_at == []

    slow = Asked()
    outcome = execute(
        document,
        {"items": list(range(100))},
        Recorder(),
        mode="async",
        journal=MemoryJournal(),
        inbox=slow,
        clock=clock,
    )
    assert outcome.status == "cancelled"
    gaps = [later - earlier for earlier, later in zip(slow.asked_at, slow.asked_at[1:], strict=False)]
    assert len(slow.asked_at) == 3 and slow.asked_at[0] > 1.0, slow.asked_at
    assert all(1.0 < gap <= 2.0 for gap in gaps), slow.asked_at  # about a second: a step or two past it
    assert len([s for s in outcome.steps if s.step_id == "x"]) < 20


def test_signal_steps_need_an_asynchronous_run():
    document = wf({"id": "paid", "type": "wait_for_event", "event": "paid"})
    outcome = execute(document, {}, Recorder())
    assert outcome.status == "failed" and "needs an asynchronous run" in outcome.error


def test_a_failed_step_inside_a_loop_is_named_and_a_handled_failure_is_not():
    document = wf(
        {
            "id": "first",
            "type": "http_request",
            "url": "https://a.example",
            "on_error": [{"id": "n", "type": "set", "values": {}}],
        },
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.items",
            "steps": [{"id": "call", "type": "http_request", "url": "https://b.example/{{ item }}"}],
        },
    )
    answers = [{"status": 500, "headers": {}, "body": None}, {"status": 200, "headers": {}, "body": {}}]
    answers.append({"status": 503, "headers": {}, "body": None})
    outcome = run(
        document, MemoryJournal(), Clock(), MemoryInbox(), Recorder(answers), trigger={"items": [1, 2]}
    )
    assert outcome.status == "failed" and outcome.failed_step == "each[1]/call"


EVENT = {"id": "w", "type": "wait_for_event", "event": "paid"}
APPROVAL = {"id": "a", "type": "approval", "title": "Go?"}


@pytest.mark.parametrize(
    ("step", "path", "fragment"),
    [
        ({"id": "w", "type": "wait_for_event"}, "/steps/0", "'event' is a required property"),
        ({**EVENT, "event": "has space"}, "/steps/0/event", "does not match"),
        ({**EVENT, "event": ""}, "/steps/0/event", "does not match"),
        ({**EVENT, "event": 7}, "/steps/0/event", "is not of type 'string'"),
        ({**EVENT, "timeout_seconds": 30 * 86400 + 1}, "/steps/0/timeout_seconds", "maximum"),
        ({**EVENT, "timeout_seconds": 0}, "/steps/0/timeout_seconds", "less than or equal to the minimum"),
        ({**EVENT, "on_timeout": {"id": "x"}}, "/steps/0/on_timeout", "is not of type 'array'"),
        (
            {**EVENT, "on_timeout": [{"id": "x", "type": "nope"}]},
            "/steps/0/on_timeout/0/type",
            "is not one of",
        ),
        ({**EVENT, "retry": {"attempts": 2}}, "/steps/0/retry", "is not retried"),
        ({"id": "a", "type": "approval"}, "/steps/0", "'title' is a required property"),
        ({**APPROVAL, "title": ""}, "/steps/0/title", "should be non-empty"),
        ({**APPROVAL, "title": "x" * 201}, "/steps/0/title", "is too long"),
        ({**APPROVAL, "title": "{{ trigger. }}"}, "/steps/0/title", "not a valid expression"),
        ({**APPROVAL, "details": "{{ [ }}"}, "/steps/0/details", "not a valid expression"),
        ({**APPROVAL, "approver_role": "boss"}, "/steps/0/approver_role", "is not one of"),
        ({**APPROVAL, "notify": "yes"}, "/steps/0/notify", "is not of type 'boolean'"),
        ({**APPROVAL, "timeout_seconds": "1d"}, "/steps/0/timeout_seconds", "is not of type 'number'"),
        ({**APPROVAL, "retry": {"attempts": 3}}, "/steps/0/retry", "is not retried"),
        (
            {**APPROVAL, "on_timeout": [{"id": "a", "type": "set", "values": {}}]},
            "/steps/0/on_timeout/0/id",
            "used twice",
        ),
    ],
)
def test_bad_signal_steps_are_refused_with_the_exact_path(step, path, fragment):
    problems = validate({"trigger": {"type": "manual"}, "steps": [step]})
    assert any(p.path == path and fragment in p.message for p in problems), problems
