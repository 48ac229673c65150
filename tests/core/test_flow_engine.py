"""call_workflow and parallel in the engine, over effects in memory: branches' outputs and vars in
document order, branches that really overlap in asynchronous runs, failures and suspensions of
branches, a called run started once however often its caller replays, and the document's checks."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from nectar.core.workflows.definition import MAX_BRANCHES, may_wait, validate
from nectar.core.workflows.engine import Limits, execute
from tests.core.test_durable_engine import START, Clock, MemoryJournal, wf
from tests.core.test_workflow_engine import Recorder


class Effects(Recorder):
    """Recorded effects whose HTTP answers by URL (branches may ask in any order), and a
    workflow that is called: each call gets a run id, which ends as the test says."""

    def __init__(self, answer=None):
        super().__init__()
        self.answer = answer or (lambda request: {"status": 200, "headers": {}, "body": request["url"]})
        self.started, self.results = [], {}
        self._lock = threading.Lock()

    def http(self, step, request):
        with self._lock:
            self.requests.append(request)
        return self.answer(request)

    def start_workflow(self, workflow, run_input, *, key):
        run_id = str(uuid.uuid4())
        self.started.append((workflow, run_input, key, run_id))
        return run_id

    def workflow_result(self, run_id):
        return self.results.get(run_id)


def http(step_id, url, **fields):
    return {"id": step_id, "type": "http_request", "url": url, **fields}


def parallel(step_id, *branches, **fields):
    return {"id": step_id, "type": "parallel", "branches": [list(b) for b in branches], **fields}


def run_async(document, effects, journal=None, clock=None, trigger=None, limits=None):
    return execute(
        document,
        trigger or {},
        effects,
        mode="async",
        journal=journal or MemoryJournal(),
        now=clock or Clock(),
        limits=limits or Limits(max_steps=2000, time_limit_seconds=60),
    )


# --- parallel -----------------------------------------------------------------------------------


def test_branch_outputs_and_vars_are_joined_in_document_order():
    document = wf(
        {"id": "start", "type": "set", "values": {"who": "nobody", "kept": 1}},
        parallel(
            "both",
            [
                {"id": "a1", "type": "set", "values": {"who": "a", "from_a": True}},
                {"id": "a2", "type": "transform", "expression": "'first'"},
            ],
            [{"id": "b1", "type": "set", "values": {"who": "b"}}, http("b2", "https://example.com/b")],
            [{"id": "c1", "type": "transform", "expression": "vars.who"}],  # sees the vars from before
        ),
        {"id": "after", "type": "transform", "expression": "[steps.a2, steps.b2.body, vars]"},
    )
    for mode in ("sync", "async"):
        outcome = execute(document, {}, Effects(), mode=mode, journal=MemoryJournal(), now=Clock())
        assert outcome.status == "succeeded", outcome.error
        assert outcome.steps[1].output == [
            "first",
            {"status": 200, "headers": {}, "body": "https://example.com/b"},
            "nobody",
        ]
        assert outcome.output == ["first", "https://example.com/b", {"who": "b", "kept": 1, "from_a": True}]
        # The trace: the parallel step, then each branch's steps in document order.
        assert [s.step_id for s in outcome.steps] == ["start", "both", "a1", "a2", "b1", "b2", "c1", "after"]
        assert [s.position for s in outcome.steps] == list(range(8))


def test_branches_of_an_asynchronous_run_overlap():
    """Each request waits until both are in flight: run one after the other, the first would wait
    in vain (and fail). A slow target therefore costs a run once, not once per branch."""
    both_in_flight = threading.Barrier(2, timeout=20)

    def slow(request):
        both_in_flight.wait()
        return {"status": 200, "headers": {}, "body": request["url"]}

    document = wf(
        parallel("both", [http("left", "https://example.com/l")], [http("right", "https://example.com/r")])
    )
    outcome = run_async(document, Effects(slow))
    assert outcome.status == "succeeded", outcome.error
    assert [o["body"] for o in outcome.output] == ["https://example.com/l", "https://example.com/r"]


def test_endpoint_calls_run_branches_one_after_the_other_on_their_own_thread():
    threads = []

    def noted(request):
        threads.append(threading.get_ident())
        return {"status": 200, "headers": {}, "body": None}

    branches = [[http(f"h{i}", f"https://example.com/{i}")] for i in range(5)]
    outcome = execute(wf(parallel("all", *branches)), {}, Effects(noted))
    assert outcome.status == "succeeded", outcome.error
    assert threads == [threading.get_ident()] * 5 and len(outcome.output) == 5


def test_more_branches_than_the_runs_threads_still_all_run():
    inner = [
        parallel(
            f"in{i}", *[[{"id": f"s{i}_{j}", "type": "transform", "expression": f"`{j}`"}] for j in range(10)]
        )
        for i in range(10)
    ]
    document = wf(parallel("outer", *[[step] for step in inner]))
    outcome = run_async(document, Effects())
    assert outcome.status == "succeeded", outcome.error
    assert outcome.output == [list(range(10))] * 10


def refuse(request):
    return {"status": 503 if "down" in request["url"] else 200, "headers": {}, "body": None}


def test_a_failing_branch_follows_its_step_then_the_parallel_step_on_error():
    handled_inside = wf(
        parallel(
            "both",
            [
                http(
                    "down",
                    "https://example.com/down",
                    on_error=[{"id": "fallback", "type": "transform", "expression": "'cached'"}],
                )
            ],
            [http("up", "https://example.com/up")],
        )
    )
    outcome = run_async(handled_inside, Effects(refuse))
    assert outcome.status == "succeeded" and outcome.output[0] == "cached"

    handled_outside = wf(
        parallel(
            "both",
            [http("down", "https://example.com/down")],
            [http("up", "https://example.com/up")],
            on_error=[{"id": "note", "type": "transform", "expression": "error.message"}],
        )
    )
    effects = Effects(refuse)
    outcome = run_async(handled_outside, effects)
    assert outcome.status == "succeeded"
    assert "'down' (http_request) failed" in outcome.output and "503" in outcome.output
    assert len(effects.requests) == 2  # the other branch ran to its end
    assert [(s.step_id, s.status) for s in outcome.steps] == [
        ("both", "failed"),
        ("down", "failed"),
        ("up", "succeeded"),
        ("note", "succeeded"),
    ]

    unhandled = wf(
        parallel("both", [http("up", "https://example.com/up")], [http("down", "https://example.com/down")])
    )
    outcome = run_async(unhandled, Effects(refuse))
    assert outcome.status == "failed" and "step 'both' (parallel) failed" in outcome.error
    assert "'down' (http_request) failed" in outcome.error


def test_branches_share_the_runs_step_limit():
    busy = [
        [{"id": f"b{i}_{j}", "type": "transform", "expression": "`1`"} for j in range(8)] for i in range(3)
    ]
    outcome = run_async(
        wf(parallel("p", *busy)), Effects(), limits=Limits(max_steps=20, time_limit_seconds=60)
    )
    assert outcome.status == "failed" and "limit of 20 steps" in outcome.error


def test_branches_that_wait_suspend_the_run_until_the_earliest_and_effects_happen_once():
    document = wf(
        parallel(
            "both",
            [
                http("a", "https://example.com/a"),
                {"id": "long", "type": "wait", "seconds": 60},
                http("a2", "https://example.com/a2"),
            ],
            [{"id": "short", "type": "wait", "seconds": 30}, http("b", "https://example.com/b")],
            [http("c", "https://example.com/c")],
        )
    )
    journal, clock, effects = MemoryJournal(), Clock(), Effects()
    first = run_async(document, effects, journal, clock)
    assert first.status == "waiting" and first.wake_at == START + timedelta(seconds=30)
    assert [w["step"] for w in first.waiting_for["waiting_for"]] == ["long", "short"]
    assert sorted(r["url"] for r in effects.requests) == ["https://example.com/a", "https://example.com/c"]

    clock.now = START + timedelta(seconds=30)
    second = run_async(document, effects, journal, clock)
    assert second.status == "waiting" and second.wake_at == START + timedelta(seconds=60)
    assert second.waiting_for["step"] == "long"

    clock.now = START + timedelta(seconds=60)
    done = run_async(document, effects, journal, clock)
    assert done.status == "succeeded", done.error
    assert sorted(r["url"] for r in effects.requests) == [
        f"https://example.com/{x}" for x in ("a", "a2", "b", "c")
    ]
    assert [o["body"] for o in done.output] == [
        "https://example.com/a2",
        "https://example.com/b",
        "https://example.com/c",
    ]


def test_a_failure_ends_a_parallel_step_whose_other_branch_waits():
    document = wf(
        parallel(
            "both",
            [{"id": "nap", "type": "wait", "seconds": 3600}],
            [{"id": "bad", "type": "transform", "expression": "abs('not a number')"}],
        )
    )
    outcome = run_async(document, Effects())
    assert outcome.status == "failed" and "'bad'" in outcome.error


def test_a_branch_left_waiting_by_a_handled_failure_never_goes_on_in_later_activations():
    document = wf(
        parallel(
            "both",
            [
                {"id": "nap", "type": "wait", "seconds": 60},
                {"id": "late", "type": "http_request", "url": "http://x/late"},
            ],
            [{"id": "bad", "type": "transform", "expression": "abs('not a number')"}],
            on_error=[{"id": "noted", "type": "transform", "expression": "error.step"}],
        ),
        {"id": "later", "type": "wait", "seconds": 3600},
        {"id": "done", "type": "http_request", "url": "http://x/done"},
    )
    journal, effects, clock = MemoryJournal(), Effects(), Clock()
    first = run_async(document, effects, journal, clock)
    assert first.status == "waiting" and first.waiting_for["step"] == "later"

    clock.now += timedelta(seconds=3601)  # the branch's wait is long over by the next activation
    second = run_async(document, effects, journal, clock)
    assert second.status == "succeeded", second.error
    assert [r["url"] for r in effects.requests] == ["http://x/done"]  # not http://x/late
    assert second.steps[-1].step_id == "done"


# --- call_workflow ------------------------------------------------------------------------------


def test_a_called_run_is_started_once_and_its_output_becomes_the_steps():
    document = wf(
        {
            "id": "call",
            "type": "call_workflow",
            "workflow": "billing",
            "input": {"order": "{{ trigger.order }}"},
        },
        {"id": "after", "type": "transform", "expression": "steps.call.total"},
    )
    journal, effects = MemoryJournal(), Effects()
    waiting = run_async(document, effects, journal, trigger={"order": 7})
    assert waiting.status == "waiting" and waiting.wake_at is None
    [(workflow, run_input, key, child)] = effects.started
    assert (workflow, run_input, key) == ("billing", {"order": 7}, "run-1/call")
    assert waiting.waiting_for == {"type": "workflow", "step": "call", "run_id": child}

    assert run_async(document, effects, journal, trigger={"order": 7}).status == "waiting"  # woken early
    effects.results[child] = {"status": "succeeded", "output": {"total": 42}, "error": None}
    done = run_async(document, effects, journal, trigger={"order": 7})
    assert done.status == "succeeded" and done.output == 42
    assert len(effects.started) == 1  # replays never start a second run
    assert done.steps[0].output == {"total": 42} and done.steps[0].input["run_id"] == child


def test_a_failed_called_run_fails_the_step_and_on_error_applies():
    document = wf(
        {
            "id": "call",
            "type": "call_workflow",
            "workflow": "billing",
            "on_error": [{"id": "why", "type": "transform", "expression": "error.message"}],
        }
    )
    journal, effects = MemoryJournal(), Effects()
    run_async(document, effects, journal)
    child = effects.started[0][3]
    effects.results[child] = {"status": "failed", "output": None, "error": "card declined"}
    done = run_async(document, effects, journal)
    assert done.status == "succeeded" and "card declined" in done.output and child in done.output
    assert journal.saved["call"].status == "failed"


def test_a_call_that_does_not_wait_goes_on_with_the_run_id_in_any_run():
    document = wf(
        {"id": "call", "type": "call_workflow", "workflow": "audit", "wait": False},
        {"id": "after", "type": "transform", "expression": "steps.call.run_id"},
    )
    assert not may_wait(document)
    for mode in ("sync", "async"):
        effects = Effects()
        outcome = execute(document, {}, effects, mode=mode, journal=MemoryJournal(), now=Clock())
        assert outcome.status == "succeeded" and outcome.output == effects.started[0][3]


def test_a_call_that_waits_is_refused_in_an_endpoint_call():
    effects = Effects()
    outcome = execute(wf({"id": "call", "type": "call_workflow", "workflow": "x"}), {}, effects)
    assert outcome.status == "failed" and "needs an asynchronous run" in outcome.error
    assert effects.started == []


# --- the document -------------------------------------------------------------------------------


def _paths(document) -> list[str]:
    return [problem.path for problem in validate(document)]


def test_bad_parallel_and_call_steps_are_refused_with_their_paths():
    base = {"trigger": {"type": "manual"}}
    noop = {"id": "n", "type": "transform", "expression": "`1`"}
    assert _paths({**base, "steps": [{"id": "p", "type": "parallel", "branches": [[noop], noop]}]}) == [
        "/steps/0/branches/1"
    ]
    assert _paths({**base, "steps": [{"id": "p", "type": "parallel", "branches": "[[]]"}]}) == [
        "/steps/0/branches"
    ]
    too_many = [[{**noop, "id": f"n{i}"}] for i in range(MAX_BRANCHES + 1)]
    assert _paths({**base, "steps": [{"id": "p", "type": "parallel", "branches": too_many}]}) == [
        "/steps/0/branches"
    ]
    assert _paths({**base, "steps": [{"id": "p", "type": "parallel", "branches": [[noop], []]}]}) == [
        "/steps/0/branches/1"
    ]
    assert _paths({**base, "steps": [{"id": "p", "type": "parallel"}]}) == ["/steps/0"]
    responding = {"id": "p", "type": "parallel", "branches": [[noop], [{"id": "r", "type": "respond"}]]}
    assert _paths({**base, "steps": [responding]}) == ["/steps/0/branches/1/0/type"]
    twice = {"id": "p", "type": "parallel", "branches": [[noop], [{**noop}]]}
    assert _paths({**base, "steps": [twice]}) == ["/steps/0/branches/1/0/id"]

    assert _paths({**base, "steps": [{"id": "c", "type": "call_workflow"}]}) == ["/steps/0"]
    assert _paths(
        {**base, "steps": [{"id": "c", "type": "call_workflow", "workflow": "{{ trigger.w }}"}]}
    ) == ["/steps/0/workflow"]
    assert _paths(
        {**base, "steps": [{"id": "c", "type": "call_workflow", "workflow": "w", "retry": {"attempts": 2}}]}
    ) == ["/steps/0/retry"]
    assert _paths(
        {**base, "steps": [{"id": "c", "type": "call_workflow", "workflow": "w", "input": [1]}]}
    ) == ["/steps/0/input"]
    assert _paths(
        {**base, "steps": [{"id": "c", "type": "call_workflow", "workflow": "w", "wait": "no"}]}
    ) == ["/steps/0/wait"]


def test_a_branchs_outputs_are_read_after_the_parallel_step_not_from_another_branch():
    fetch_a = {"id": "a", "type": "transform", "expression": "`1`"}
    fetch_b = {"id": "b", "type": "transform", "expression": "`2`"}
    after = {"id": "sum", "type": "transform", "expression": "[steps.a, steps.b]"}
    document = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "p", "type": "parallel", "branches": [[fetch_a], [fetch_b]]}, after],
    }
    assert validate(document) == []
    outcome = execute(document, {}, Recorder())
    assert outcome.status == "succeeded" and outcome.output == [1, 2]  # what the validator allowed runs

    peeking = {"id": "b", "type": "transform", "expression": "steps.a"}
    document["steps"][0]["branches"][1] = [peeking]
    problems = validate(document)
    assert [p.path for p in problems] == ["/steps/0/branches/1/0/expression"]
    assert "inside a loop or parallel branch" in problems[0].message


@pytest.mark.parametrize(
    ("step", "waits"),
    [
        ({"id": "w", "type": "wait", "seconds": 1}, True),
        ({"id": "w", "type": "delay", "seconds": 1}, True),
        ({"id": "w", "type": "call_workflow", "workflow": "x"}, True),
        ({"id": "w", "type": "call_workflow", "workflow": "x", "wait": False}, False),
        ({"id": "w", "type": "transform", "expression": "`1`"}, False),
    ],
)
def test_a_workflow_that_may_wait_is_known_from_its_document(step, waits):
    nested = parallel("p", [{"id": "n", "type": "transform", "expression": "`1`"}], [step])
    assert may_wait(wf(step)) is waits
    assert may_wait(wf(nested)) is waits  # wherever the step is


def test_a_list_the_schema_does_not_place_on_a_step_is_not_walked_as_steps():
    document = wf(
        {"id": "s", "type": "set", "values": {"a": 1}, "then": [{"x": 1}]}
    )  # "then" means nothing on set
    outcome = run_async(document, Effects())
    assert outcome.status == "succeeded", outcome.error
