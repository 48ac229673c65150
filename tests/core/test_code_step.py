"""The code step: JavaScript in a V8 isolate inside a sandbox process. What it sees (the run's
context, nothing of the world), what it may return (JSON only), where its errors are (line and
column of its own source), and that runaway code is stopped at its limits while the process that
runs the workflow goes on serving the next run."""

import threading
import time

import pytest

from nectar.core.workflows import code as code_module
from nectar.core.workflows.definition import validate
from nectar.core.workflows.engine import ASYNC_LIMITS, Limits, execute
from tests.core.test_durable_engine import START, Clock, MemoryJournal
from tests.core.test_workflow_engine import Recorder


def code(source, step_id="js", **fields):
    return {"id": step_id, "type": "code", "source": source, **fields}


def wf(*steps):
    document = {"trigger": {"type": "manual"}, "steps": list(steps)}
    assert validate(document) == [], validate(document)
    return document


def run(*steps, trigger=None, mode="async", limits=ASYNC_LIMITS):
    return execute(wf(*steps), trigger or {}, Recorder(), mode=mode, limits=limits)


def test_the_code_sees_the_runs_context_and_its_json_output_becomes_the_steps_output():
    outcome = run(
        {"id": "rate", "type": "set", "values": {"vat": 0.2}},
        {
            "id": "lines",
            "type": "for_each",
            "items": "trigger.items",
            "steps": [code("return {n: ctx.index, gross: ctx.item.price * (1 + ctx.vars.vat)}", "gross")],
        },
        code(
            "const gross = ctx.steps.lines.map((line) => line.gross);\n"
            "await null; // async code may await (there is nothing to wait for but promises)\n"
            "return {customer: ctx.trigger.customer, total: gross.reduce((a, b) => a + b, 0), count: gross.length}",
            "total",
        ),
        trigger={"customer": "ada", "items": [{"price": 10}, {"price": 5}]},
    )
    assert outcome.status == "succeeded", outcome.error
    assert outcome.output == {"customer": "ada", "total": 18, "count": 2}
    gross = [record for record in outcome.steps if record.step_id == "gross"]
    assert [record.output for record in gross] == [{"n": 0, "gross": 12}, {"n": 1, "gross": 6}]
    assert gross[0].input == {"timeout_ms": 10000, "memory_mb": 64}


def test_an_error_branch_gives_the_code_the_error():
    outcome = run(
        code(
            "throw new Error('card declined')",
            "charge",
            on_error=[code("return 'handled: ' + ctx.error.message", "explain")],
        )
    )
    assert outcome.status == "succeeded", outcome.error
    assert outcome.output == "handled: Error: card declined (line 1, column 7)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "const order = ctx.trigger.order;\nconst total = order.items.length;\nreturn total",
            "TypeError: Cannot read properties of null (reading 'items') (line 2, column 21)",
        ),
        (
            "function check(order) {\n  if (!order.ok) {\n    throw new RangeError('order ' + order.id + ' is not ok');\n"
            "  }\n}\ncheck(ctx.trigger);\nreturn 1",
            "RangeError: order 7 is not ok (line 3, column 11)",
        ),
        ("\n\nreturn JSON.parse('{')", "SyntaxError: Expected property name"),
        (
            "function down() { return down() + 1 }\nreturn down()",
            "RangeError: Maximum call stack size exceeded (line 1",
        ),
        ("const a = 1;\nreturn a + missing", "ReferenceError: missing is not defined (line 2, column "),
        ("throw 'plain text'", 'the code threw "plain text" (not an Error, so it has no line and column)'),
    ],
)
def test_errors_give_the_line_and_column_in_the_steps_own_source(source, message):
    outcome = run(code(source), trigger={"order": None, "ok": False, "id": 7})
    assert outcome.status == "failed"
    assert outcome.error.startswith("step 'js' (code) failed: "), outcome.error
    assert message in outcome.error, outcome.error


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("return", "the code returned nothing; end it with `return` and a JSON value"),
        ("return {total: 3, note: undefined}", 'output.note is undefined (use null for "no value")'),
        ("return {items: [1, () => 2]}", "output.items[1] is a function"),
        (
            "const order = {lines: []};\norder.lines.push({order});\nreturn order",
            "output.lines[0].order refers back to output (a cycle)",
        ),
        (
            "return {at: new Date(0)}",
            "output.at is a Date, not a plain object or array (convert it with .toISOString())",
        ),
        ("return {'odd key': [0, NaN]}", 'output["odd key"][1] is NaN, which JSON cannot hold'),
        ("return 2n ** 70n", "output is a BigInt"),
        ("return new Map([[1, 2]])", "output is a Map, not a plain object or array"),
        ("return Symbol('s')", "output is a symbol"),
        ("return 'x'.repeat(2e6)", "the output is larger than 1000000 characters"),
        (
            "let deep = [];\nfor (let i = 0; i < 200; i++) deep = [deep];\nreturn deep",
            "nests deeper than 100 levels",
        ),
        (
            "let x = [1];\nfor (let i = 0; i < 60; i++) x = [x, x];\nreturn x",
            "larger than 1000000 characters",
        ),
    ],
)
def test_the_output_must_be_json(source, problem):
    outcome = run(code(source))
    assert outcome.status == "failed"
    assert outcome.error == f"step 'js' (code) failed: the output must be JSON: {problem}" or (
        problem in outcome.error and "the output must be JSON" in outcome.error
    ), outcome.error


@pytest.mark.parametrize(
    "source", ["throw new Error('x'.repeat(2e6))", "throw 'x'.repeat(2e6)", "throw {x: 'x'.repeat(2e6)}"]
)
def test_a_thrown_message_too_large_to_carry_is_replaced_not_cut(source):
    """The sandbox does not cut what it reports (a secret spanning the cut would escape its mask,
    which is applied later): one larger than an output may be is not shown at all."""
    outcome = run(code(source))
    assert outcome.status == "failed" and "more than 1000000 characters" in outcome.error, outcome.error
    assert "xxxx" not in outcome.error and len(outcome.steps[0].error) <= 4000


def test_the_isolate_has_no_network_files_modules_or_timers():
    names = [
        "require",
        "fetch",
        "process",
        "setTimeout",
        "setInterval",
        "clearTimeout",
        "queueMicrotask",
        "XMLHttpRequest",
        "WebAssembly",
        "Atomics",
        "SharedArrayBuffer",
        "Deno",
        "Bun",
        "module",
        "exports",
    ]
    outcome = run(code(f"return {names}.map((name) => [name, typeof globalThis[name]])".replace("'", '"')))
    assert outcome.status == "succeeded", outcome.error
    assert dict(outcome.output) == dict.fromkeys(names, "undefined")

    dynamic = run(code("const fs = await import('fs');\nreturn 1"))
    assert dynamic.status == "failed" and "Error: Not supported (line 1, column 12)" in dynamic.error

    for source in (
        "require('fs')",
        "fetch('http://127.0.0.1/')",
        "process.exit(1)",
        "setTimeout(() => 1, 10)",
    ):
        called = run(code(source))
        assert called.status == "failed" and "is not" in called.error, (source, called.error)


def test_a_static_import_is_refused_when_the_workflow_is_saved():
    document = {
        "trigger": {"type": "manual"},
        "steps": [code("import fs from 'fs';\nreturn fs.readFileSync('/etc/passwd')")],
    }
    assert [problem.as_dict() for problem in validate(document)] == [
        {
            "path": "/steps/0/source",
            "message": "SyntaxError: Cannot use import statement outside a module (line 1, column 1)",
        }
    ]


def test_eval_stays_inside_the_isolate_with_the_same_limits():
    outcome = run(
        code("return [eval('6 * 7'), new Function('a', 'return a + 1')(1), eval('typeof require')]")
    )
    assert outcome.status == "succeeded", outcome.error
    assert outcome.output == [42, 2, "undefined"]
    runaway = run(code("eval('for (;;) {}')", timeout_ms=300))
    assert runaway.status == "failed" and "time limit of 0.3 s" in runaway.error


def test_every_execution_gets_a_fresh_context():
    leaks = (
        "const seen = [typeof globalThis.leaked, typeof Object.prototype.polluted, typeof Array.prototype.extra];\n"
        "globalThis.leaked = ctx.trigger.who;\n"
        "Object.prototype.polluted = 1;\n"
        "Array.prototype.extra = () => 1;\n"
        "return seen"
    )
    for who in ("tenant-a", "tenant-b", "tenant-a"):
        outcome = run(code(leaks), trigger={"who": who})
        assert outcome.status == "succeeded", outcome.error
        assert outcome.output == ["undefined", "undefined", "undefined"]


def test_an_endless_loop_is_stopped_at_its_time_limit_and_the_next_run_is_served():
    for source in (
        "for (;;) {}",
        "while (true) { JSON.stringify(ctx) }",
        "(async () => { for (;;) await null })();\nreturn 1",  # a chain of promises after it returns
        "return /(a+)+$/.test('a'.repeat(40) + 'b')",
    ):
        started = time.monotonic()
        outcome = run(code(source, timeout_ms=500))
        assert outcome.status == "failed", source
        assert outcome.error == (
            "step 'js' (code) failed: the code ran longer than its time limit of 0.5 s and was stopped"
        ), outcome.error
        assert time.monotonic() - started < 5  # the limit plus the grace, with room for a busy machine
        assert run(code("return 41 + 1")).output == 42


@pytest.mark.parametrize(
    "source",
    [
        "const kept = [];\nfor (;;) kept.push('x'.repeat(1e6) + kept.length)",  # the V8 heap
        "const kept = [];\nfor (;;) kept.push(new Array(1e5).fill(kept.length))",
        "return new Uint8Array(2 ** 30).fill(1).length",  # outside the heap: the host's watch
    ],
)
def test_a_memory_bomb_is_stopped_at_its_limit_and_the_next_run_is_served(source):
    outcome = run(code(source, memory_mb=32))
    assert outcome.status == "failed"
    assert outcome.error == (
        "step 'js' (code) failed: the code used more than its memory limit of 32 MB and was stopped"
    ), outcome.error
    assert run(code("return ctx.trigger", memory_mb=8), trigger={"still": "here"}).output == {"still": "here"}


def test_a_builtin_that_ignores_v8s_limits_is_stopped_by_the_host():
    # Array.prototype.fill neither stops at the time limit nor at the heap limit; in the host
    # process it ran until V8 aborted the whole process. Here the sandbox is killed instead.
    outcome = run(code("return new Array(2 ** 27).fill(1.5).length", timeout_ms=1000))
    assert outcome.status == "failed"
    assert "and was stopped" in outcome.error, outcome.error
    assert run(code("return 'next'")).output == "next"


def test_a_context_too_large_to_give_to_code_fails_the_step():
    outcome = run(code("return 1"), trigger={"blob": "x" * (9 * 2**20)})
    assert outcome.status == "failed"
    assert "more than the 8 MB a code step is given" in outcome.error, outcome.error


def test_a_promise_that_never_settles_is_an_error_not_a_wait():
    outcome = run(code("await new Promise(() => {});\nreturn 1"))
    assert outcome.status == "failed"
    assert "the code's promise never settled" in outcome.error


def test_an_endpoint_call_gives_code_at_most_two_seconds():
    outcome = run(code("for (;;) {}", timeout_ms=10000), mode="sync", limits=Limits())
    assert outcome.status == "failed"
    assert "time limit of 2 s" in outcome.error, outcome.error


def test_time_in_code_counts_against_the_runs_time_limit():
    started = time.monotonic()
    outcome = run(code("for (;;) {}"), limits=Limits(max_steps=100, time_limit_seconds=1.0))
    assert outcome.status == "failed"
    assert outcome.error == "the run exceeded its time limit of 1 s in code step 'js'"
    assert time.monotonic() - started < 8  # not the step's own 10 s


def test_a_durable_run_keeps_the_codes_output_across_replays():
    # Math.random and Date.now differ between replays; the journal keeps what the run already used.
    document = wf(
        code("return {token: Math.random(), at: Date.now()}", "pick"),
        {"id": "pause", "type": "wait", "seconds": 60},
        {"id": "use", "type": "set", "values": {"token": "{{ steps.pick.token }}"}},
    )
    journal, clock = MemoryJournal(), Clock()
    first = execute(document, {}, Recorder(), mode="async", journal=journal, now=clock)
    assert first.status == "waiting"
    picked = journal.saved["pick"].output
    clock.now = START.replace(hour=10)
    second = execute(document, {}, Recorder(), mode="async", journal=journal, now=clock)
    assert second.status == "succeeded", second.error
    assert second.output == {"token": picked["token"]}


def test_concurrent_runs_each_get_their_own_sandbox():
    results: dict[int, object] = {}

    def one(number: int) -> None:
        outcome = run(
            code("let sum = 0;\nfor (let i = 0; i < 1e6; i++) sum += i % 7;\nreturn [ctx.trigger.n, sum]"),
            trigger={"n": number},
        )
        results[number] = outcome.output if outcome.status == "succeeded" else outcome.error

    threads = [threading.Thread(target=one, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {number: [number, 2999997] for number in range(6)}


def test_one_organizations_spinning_code_holds_at_most_its_share_of_the_sandboxes():
    spin = code("while (true) {}", timeout_ms=4000)
    spinning = [
        threading.Thread(target=lambda: execute(wf(spin), {}, Recorder(), mode="async", tenant="org-a"))
        for _ in range(code_module.MAX_SANDBOXES_PER_TENANT)
    ]
    for thread in spinning:
        thread.start()
    # Once both spinners hold org-a's share (a busy machine may take a while to start them), a
    # third run of org-a's is refused; before that it may still get a sandbox.
    deadline = time.monotonic() + 30
    while True:
        third = execute(wf(code("return 1", timeout_ms=300)), {}, Recorder(), mode="async", tenant="org-a")
        if third.status == "failed" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert third.status == "failed"
    assert "sandboxes of this process busy" in third.error

    other = execute(wf(code("return 'served'")), {}, Recorder(), mode="async", tenant="org-b")
    assert other.status == "succeeded", other.error
    assert other.output == "served"
    assert any(thread.is_alive() for thread in spinning)  # served while org-a's code still spun
    for thread in spinning:
        thread.join(30)

    after = execute(wf(code("return 2")), {}, Recorder(), mode="async", tenant="org-a")
    assert after.output == 2  # the share is given back when the code ends


@pytest.mark.parametrize(
    ("step", "path", "fragment"),
    [
        (code("x" * 20001), "/steps/0/source", "is too long"),
        (code(""), "/steps/0/source", "should be non-empty"),
        (code("return 1", timeout_ms=10001), "/steps/0/timeout_ms", "10000"),
        (code("return 1", timeout_ms=0), "/steps/0/timeout_ms", "minimum"),
        (code("return 1", memory_mb=65), "/steps/0/memory_mb", "64"),
        (code("return 1", memory_mb="64"), "/steps/0/memory_mb", "is not of type 'integer'"),
        ({"id": "js", "type": "code"}, "/steps/0", "'source' is a required property"),
        (
            {
                "id": "each",
                "type": "for_each",
                "items": "trigger.list",
                "steps": [code("const total = 0;\nlet x = ;\nreturn x")],
            },
            "/steps/0/steps/0/source",
            "SyntaxError: Unexpected token ';' (line 2, column 9)",
        ),
        (
            code("if (ready) {\n  return [1, 2"),
            "/steps/0/source",
            "SyntaxError: the code ends too early (is a bracket",
        ),
        (
            code("/* never closed\nreturn 1"),
            "/steps/0/source",
            "SyntaxError: Invalid or unexpected token (line 1, column 1)",
        ),
    ],
)
def test_a_bad_code_step_is_refused_with_the_path_of_each_problem(step, path, fragment):
    problems = validate({"trigger": {"type": "manual"}, "steps": [step]})
    assert [problem.path for problem in problems] == [path], problems
    assert fragment in problems[0].message, problems[0].message


def test_checking_a_saved_source_runs_none_of_it():
    assert validate({"trigger": {"type": "manual"}, "steps": [code("for (;;) {}")]}) == []


def test_a_source_that_closes_its_function_early_is_refused_and_none_of_it_runs():
    """Checked as the body of a function, a source with a stray `})` would end that function and run
    the rest at the top level of the script while it is checked: for ever, in a loop (two seconds per
    step, then a new sandbox, all in the saving request), or silently, then saved."""
    document = {
        "trigger": {"type": "manual"},
        "steps": [
            code("}); for (;;) {} (function () {", "spin"),
            code("}); globalThis.ran = 1; (function () {", "ran"),
        ],
    }
    wf(code("return 1"))  # a sandbox is warm: what is timed is the checking
    started = time.monotonic()
    problems = validate(document)
    assert time.monotonic() - started < code_module.SYNC_TIME_LIMIT_SECONDS  # the loop never ran
    assert [problem.path for problem in problems] == ["/steps/0/source", "/steps/1/source"], problems
    for problem in problems:
        assert problem.message.startswith("SyntaxError: the code closes the function"), problem.message


def test_code_in_parallel_branches_runs_at_the_same_time():
    busy = "const s = Date.now(); while (Date.now() - s < 1500) {} return [s, Date.now()]"
    document = wf(
        {
            "id": "both",
            "type": "parallel",
            "branches": [
                [code(busy, step_id="a", timeout_ms=5000)],
                [code(busy, step_id="b", timeout_ms=5000)],
            ],
        }
    )
    quick = wf(
        {
            "id": "warm",
            "type": "parallel",
            "branches": [[code("return 1", step_id="c")], [code("return 2", step_id="d")]],
        }
    )
    assert (
        execute(quick, {}, Recorder(), mode="async", limits=ASYNC_LIMITS).status == "succeeded"
    )  # two warm sandboxes
    outcome = execute(document, {}, Recorder(), mode="async", limits=ASYNC_LIMITS)
    assert outcome.status == "succeeded", outcome.error
    (a_start, a_end), (b_start, b_end) = outcome.output
    assert max(a_start, b_start) < min(a_end, b_end), "the second branch waited for the first"
