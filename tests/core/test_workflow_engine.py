"""The engine over recorded effects: every step type, expressions, retries, error branches, limits."""

import time

import pytest

from nectar.core.workflows.definition import validate
from nectar.core.workflows.engine import Limits, execute


class Recorder:
    """Effects that record what the workflow asked for and answer from a script."""

    def __init__(self, http_answers=None):
        self.http_answers = list(http_answers or [])
        self.requests, self.emails, self.sleeps = [], [], []

    def http(self, step, request):
        self.requests.append(request)
        answer = self.http_answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def email(self, to, subject, body, *, dedupe_key=None):
        self.emails.append((to, subject, body))
        return {"queued": True, "to": to}

    def sleep(self, seconds):
        self.sleeps.append(seconds)


def wf(*steps, trigger="http"):
    document = {"trigger": {"type": trigger}, "steps": list(steps)}
    assert validate(document) == [], validate(document)
    return document


def test_transform_condition_and_respond():
    document = wf(
        {"id": "total", "type": "transform", "expression": "sum(trigger.body.items[].price)"},
        {
            "id": "check",
            "type": "condition",
            "if": "steps.total > `100`",
            "then": [
                {
                    "id": "big",
                    "type": "respond",
                    "status": 200,
                    "body": {"total": "{{ steps.total }}", "tier": "big"},
                }
            ],
            "else": [{"id": "small", "type": "respond", "status": 201, "body": "total is {{ steps.total }}"}],
        },
    )
    big = execute(document, {"body": {"items": [{"price": 80}, {"price": 30}]}}, Recorder())
    assert big.status == "succeeded" and big.response.status == 200
    assert big.response.body == {"total": 110, "tier": "big"}
    small = execute(document, {"body": {"items": [{"price": 5}]}}, Recorder())
    assert (small.response.status, small.response.body) == (201, "total is 5")
    assert [s.step_id for s in small.steps] == ["total", "check", "small"]


def test_set_for_each_and_send_email():
    effects = Recorder()
    document = wf(
        {"id": "greeting", "type": "set", "values": {"hello": "Hi"}},
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.people",
            "steps": [
                {
                    "id": "mail",
                    "type": "send_email",
                    "to": "{{ item.email }}",
                    "subject": "{{ vars.hello }} {{ item.name }}",
                    "body": "#{{ index }}",
                }
            ],
        },
    )
    outcome = execute(
        document, {"people": [{"name": "Ann", "email": "a@x.io"}, {"name": "Bo", "email": "b@x.io"}]}, effects
    )
    assert outcome.status == "succeeded"
    assert effects.emails == [("a@x.io", "Hi Ann", "#0"), ("b@x.io", "Hi Bo", "#1")]
    assert outcome.output == [{"queued": True, "to": "a@x.io"}, {"queued": True, "to": "b@x.io"}]


def test_http_request_retries_with_backoff_then_succeeds():
    effects = Recorder(
        [{"status": 503, "headers": {}, "body": "busy"}, {"status": 200, "headers": {}, "body": {"ok": True}}]
    )
    document = wf(
        {
            "id": "call",
            "type": "http_request",
            "method": "POST",
            "url": "https://api.example.com/things/{{ trigger.id }}",
            "body": {"id": "{{ trigger.id }}"},
            "retry": {"attempts": 3, "backoff_seconds": 0.5, "multiplier": 2},
        }
    )
    outcome = execute(document, {"id": 7}, effects)
    assert outcome.status == "succeeded"
    assert effects.sleeps == [0.5]
    assert effects.requests[0]["url"] == "https://api.example.com/things/7" and effects.requests[0][
        "body"
    ] == {"id": 7}
    assert [(s.attempt, s.status) for s in outcome.steps] == [(1, "failed"), (2, "succeeded")]


def test_an_error_branch_handles_a_failure_and_the_run_goes_on():
    effects = Recorder([{"status": 500, "headers": {}, "body": "no"}])
    document = wf(
        {
            "id": "call",
            "type": "http_request",
            "url": "https://api.example.com/",
            "on_error": [{"id": "note", "type": "set", "values": {"failed_step": "{{ error.step }}"}}],
        },
        {"id": "done", "type": "respond", "body": {"fallback": "{{ vars.failed_step }}"}},
    )
    outcome = execute(document, {}, effects)
    assert outcome.status == "succeeded" and outcome.response.body == {"fallback": "call"}


def test_an_unhandled_failure_fails_the_run_with_a_clear_error():
    outcome = execute(
        wf({"id": "bad", "type": "transform", "expression": "abs(trigger.x)"}), {"x": "abc"}, Recorder()
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith("step 'bad' (transform) failed")


def test_limits_stop_runaway_runs():
    loop = wf(
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.items",
            "steps": [{"id": "x", "type": "transform", "expression": "item"}],
        }
    )
    outcome = execute(loop, {"items": list(range(50))}, Recorder(), limits=Limits(max_steps=20))
    assert outcome.status == "failed" and "limit of 20 steps" in outcome.error
    ticks = iter(range(0, 1000, 5))
    slow = execute(
        loop,
        {"items": list(range(50))},
        Recorder(),
        limits=Limits(time_limit_seconds=12),
        clock=lambda: next(ticks),
    )
    assert slow.status == "failed" and "time limit of 12 s" in slow.error
    too_many = execute(
        wf(
            {
                "id": "each",
                "type": "for_each",
                "items": "trigger.items",
                "max_items": 3,
                "steps": [{"id": "x", "type": "transform", "expression": "item"}],
            }
        ),
        {"items": [1, 2, 3, 4]},
        Recorder(),
    )
    assert too_many.status == "failed" and "limit of 3" in too_many.error


def test_one_long_expression_counts_against_the_time_limit():
    """The time limit is checked inside an expression too, not only between steps: this one visits
    a million cells, far more than a fifth of a second allows."""
    rows = [{"cells": list(range(1000))}] * 1000
    document = wf({"id": "t", "type": "transform", "expression": "trigger.rows[*].cells[*].to_string(@)"})
    outcome = execute(document, {"rows": rows}, Recorder(), limits=Limits(time_limit_seconds=0.2))
    assert outcome.status == "failed" and "time limit of 0.2 s" in outcome.error
    assert [(s.step_id, s.status) for s in outcome.steps] == [("t", "failed")]


def test_an_expression_that_doubles_its_value_is_stopped_before_it_takes_the_memory():
    """Each `[@, @][]` doubles a list in one step: the count of visits stops it near a million
    items, long before 2^30 of them, whatever time it is given."""
    document = wf({"id": "t", "type": "transform", "expression": "[@, @][]" * 30})
    outcome = execute(document, {}, Recorder(), limits=Limits(time_limit_seconds=600))
    assert outcome.status == "failed" and "more than 1,000,000 steps" in outcome.error


def test_templates_are_found_in_one_pass_over_the_text():
    """Sixty thousand `{{` and no `}}`: the pattern that found templates rescanned the rest of the
    text from each one (minutes, holding the interpreter lock); a pass over the text is instant."""
    text = "{{" * 60_000
    started = time.monotonic()
    outcome = execute(wf({"id": "r", "type": "respond", "body": text}), {}, Recorder())
    assert outcome.status == "succeeded" and outcome.response.body == text
    assert time.monotonic() - started < 10  # generous: linear time takes milliseconds


def test_delay_runs_only_asynchronously_and_holds_no_worker():
    document = wf({"id": "wait", "type": "delay", "seconds": 2}, trigger="manual")
    sync = execute(document, {}, Recorder())
    assert sync.status == "failed" and "asynchronous" in sync.error
    effects = Recorder()
    waiting = execute(document, {}, effects, mode="async")
    assert waiting.status == "waiting" and effects.sleeps == []  # suspended, not asleep


def test_large_step_data_is_truncated_in_the_record():
    outcome = execute(
        wf({"id": "big", "type": "transform", "expression": "trigger.blob"}),
        {"blob": "x" * 50_000},
        Recorder(),
    )
    record = outcome.steps[0].output
    assert record["truncated"] is True and record["bytes"] > 50_000
    assert outcome.output == "x" * 50_000  # the run itself still sees everything


def _doubling(step: dict) -> dict:
    """A loop of 60 steps that doubles a value each time: 2^60 characters if nothing stopped it."""
    return wf(
        {"id": "seed", "type": "set", "values": {"x": "ab"}},
        {
            "id": "each",
            "type": "for_each",
            "items": "trigger.rounds",
            "steps": [step],
        },
    )


@pytest.mark.parametrize(
    "step",
    [
        {"id": "grow", "type": "set", "values": {"x": "{{ vars.x }}{{ vars.x }}"}},
        {"id": "grow", "type": "set", "values": {"x": "{{ join('', [vars.x, vars.x]) }}"}},
        {"id": "grow", "type": "set", "values": {"x": "{{ [vars.x, vars.x] }}"}},
        {"id": "grow", "type": "set", "values": {"x": "{{ to_string([vars.x, vars.x]) }}"}},
    ],
    ids=["template", "join", "shared-references", "to_string"],
)
def test_a_value_that_doubles_every_step_is_stopped_at_a_million_characters(step):
    outcome = execute(_doubling(step), {"rounds": list(range(60))}, Recorder())
    assert outcome.status == "failed"
    assert "larger than 1,000,000 characters" in outcome.error
    assert len(outcome.steps) < 30  # stopped after about 19 doublings, not at the step limit


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        ({"steps": []}, "/", "'trigger' is a required property"),
        (
            {"trigger": {"type": "http"}, "steps": [{"id": "a", "type": "teleport"}]},
            "/steps/0/type",
            "is not one of",
        ),
        (
            {
                "trigger": {"type": "http"},
                "steps": [{"id": "a", "type": "transform", "expression": "a ||| b"}],
            },
            "/steps/0/expression",
            "not a valid expression",
        ),
        (
            {
                "trigger": {"type": "http"},
                "steps": [{"id": "a", "type": "set", "values": {}}, {"id": "a", "type": "set", "values": {}}],
            },
            "/steps/1/id",
            "used twice",
        ),
        (
            {
                "trigger": {"type": "schedule", "cron": "every tuesday"},
                "steps": [{"id": "a", "type": "set", "values": {}}],
            },
            "/trigger/cron",
            "not a cron",
        ),
        (
            {
                "trigger": {"type": "http"},
                "steps": [
                    {
                        "id": "c",
                        "type": "condition",
                        "if": "x",
                        "then": [{"id": "r", "type": "respond", "status": 99}],
                    }
                ],
            },
            "/steps/0/then/0/status",
            "",
        ),
    ],
)
def test_invalid_documents_name_the_exact_path_of_each_problem(document, path, fragment):
    problems = validate(document)
    assert problems, "expected problems"
    assert any(p.path == path and fragment in p.message for p in problems), problems


def test_zero_is_true_in_a_condition_as_in_jmespath():
    document = wf(
        {
            "id": "c",
            "type": "condition",
            "if": "trigger.n",
            "then": [{"id": "yes", "type": "respond", "body": "then"}],
            "else": [{"id": "no", "type": "respond", "body": "else"}],
        }
    )
    assert execute(document, {"n": 0}, Recorder()).response.body == "then"
    assert execute(document, {"n": []}, Recorder()).response.body == "else"


@pytest.mark.parametrize(
    ("trigger", "path"),
    [
        ({"type": "schedule", "cron": "0 0 31 2 *"}, "/trigger/cron"),
        ({"type": "schedule", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "/trigger/timezone"),
    ],
)
def test_schedules_that_can_never_run_are_refused(trigger, path):
    problems = validate({"trigger": trigger, "steps": [{"id": "a", "type": "set", "values": {}}]})
    assert [p.path for p in problems] == [path]
