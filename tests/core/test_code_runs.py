"""The code step through the real API and the real worker: saved (syntax refused with its path), run
asynchronously by the queue and synchronously by an endpoint call, and runaway code that ends its
run failed while the worker process stays up and serves the next run."""

from tests.core.conftest import run_and_wait
from tests.core.test_durable_runs import _finished, workers
from tests.core.test_endpoints import _endpoint, _workflow, owner  # noqa: F401 - a fixture

TOTALS = {
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "totals",
            "type": "code",
            "source": "const lines = ctx.trigger.lines;\n"
            "const total = lines.reduce((sum, line) => sum + line.qty * line.price, 0);\n"
            "return {total, biggest: Math.max(...lines.map((line) => line.qty))}",
        },
        {"id": "note", "type": "set", "values": {"summary": "total {{ steps.totals.total }}"}},
    ],
}


def test_a_run_with_a_code_step_goes_through_the_api_and_the_queue(owner):  # noqa: F811
    browser, _org, token = owner
    workflow_id = _workflow(browser, token, TOTALS)
    run = run_and_wait(
        browser, token, workflow_id, {"lines": [{"qty": 2, "price": 5}, {"qty": 3, "price": 1}]}
    )
    assert run["status"] == "succeeded", run
    assert [step["step_id"] for step in run["steps"]] == ["totals", "note"]
    assert run["steps"][0]["output"] == {"total": 13, "biggest": 3}
    assert run["output"] == {"output": {"summary": "total 13"}}

    # Text jsonb cannot hold (NUL, a lone surrogate) is stored as the other steps' output is.
    odd = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "odd", "type": "code", "source": "return ['a\\u0000b', '\\ud800']"}],
    }
    stored = run_and_wait(browser, token, _workflow(browser, token, odd))
    assert stored["status"] == "succeeded", stored
    assert stored["steps"][0]["output"] == ["ab", "\ufffd"]

    failing = run_and_wait(browser, token, workflow_id, {"lines": None})
    assert failing["status"] == "failed"
    assert failing["error"] == (
        "step 'totals' (code) failed: TypeError: Cannot read properties of null (reading 'reduce') (line 2, column 21)"
    )


def test_a_syntax_error_is_refused_when_saving_with_its_path(owner):  # noqa: F811
    browser, _org, token = owner
    broken = {
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "ok", "type": "set", "values": {}},
            {"id": "js", "type": "code", "source": "const total = ctx.trigger.a +;\nreturn total"},
        ],
    }
    saved = browser.api(
        "POST", "/api/v1/workflows", token=token, json={"name": "broken", "definition": broken}
    )
    assert saved.status_code == 422 and saved.mimetype == "application/problem+json"
    assert saved.json["errors"] == [
        {"path": "/steps/1/source", "message": "SyntaxError: Unexpected token ';' (line 1, column 30)"}
    ]


def test_an_endpoint_call_runs_code_and_answers_with_its_output(owner):  # noqa: F811
    browser, _org, token = owner
    definition = {
        "trigger": {"type": "http"},
        "steps": [
            {"id": "shout", "type": "code", "source": "return {order: ctx.trigger.params.id.toUpperCase()}"},
            {"id": "answer", "type": "respond", "status": 200, "body": "{{ steps.shout }}"},
        ],
    }
    endpoint = _endpoint(browser, token, _workflow(browser, token, definition))
    answer = browser.client.post(endpoint["url"].replace("{id}", "a-17"), json={})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json == {"order": "A-17"}


def test_runaway_code_fails_its_run_and_the_worker_process_serves_the_next(owner, database):  # noqa: F811
    browser, _org, token = owner

    def start_run(source, **limits):
        step = {"id": "js", "type": "code", "source": source, **limits}
        workflow_id = _workflow(browser, token, {"trigger": {"type": "manual"}, "steps": [step]})
        started = browser.api(
            "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": {}}
        )
        assert started.status_code == 202, started.json
        return started.json["id"]

    with workers(database) as start:
        worker = start()
        endless = start_run("for (;;) {}", timeout_ms=500)
        assert _finished(database, endless) == (
            "failed",
            "step 'js' (code) failed: the code ran longer than its time limit of 0.5 s and was stopped",
        )
        bomb = start_run("const kept = [];\nfor (;;) kept.push('x'.repeat(1e6) + kept.length)", memory_mb=16)
        assert _finished(database, bomb) == (
            "failed",
            "step 'js' (code) failed: the code used more than its memory limit of 16 MB and was stopped",
        )
        outside_the_heap = start_run("return new Uint8Array(2 ** 30).fill(1).length", memory_mb=16)
        assert _finished(database, outside_the_heap) == (
            "failed",
            "step 'js' (code) failed: the code used more than its memory limit of 16 MB and was stopped",
        )
        fine = start_run("return 6 * 7")
        assert _finished(database, fine) == ("succeeded", None)
        assert worker.process.poll() is None, "".join(worker.lines)
