"""`nectar login`, `call` and `runs`, and how the CLI fails: an unreachable server, a refused key and
a key without the scope each give one line on stderr and exit status 1, never a traceback."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

from tests.cli.conftest import new_key
from tests.core.conftest import drain_jobs
from tests.serving import free_port, served

ECHO = {
    "trigger": {"type": "http"},
    "steps": [
        {"id": "greet", "type": "transform", "expression": "trigger.body.name"},
        {"id": "r", "type": "respond", "status": 200, "body": {"hello": "{{ steps.greet }}"}},
    ],
}


def test_login_keeps_the_url_and_key_for_its_owner_only_and_never_prints_the_key(
    make_org, nectar, core_url, tmp_path, monkeypatch
):
    org = make_org()
    config = tmp_path / "home/.config/nectar/config.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO(org.key + "\n"))
    result = nectar("login", "--url", core_url, "--key-stdin", env={"NECTAR_CONFIG": str(config)})
    assert result.status == 0, result.err
    assert org.key not in result.out + result.err
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": core_url, "api_key": org.key}
    # Later commands use the stored login, with no variables set.
    called = nectar("call", "GET", "/api/v1/organization", env={"NECTAR_CONFIG": str(config)})
    assert called.status == 0 and json.loads(called.out)["id"] == org.id

    monkeypatch.setattr(sys, "stdin", io.StringIO("nsk_not_a_key\n"))
    refused = nectar(
        "login", "--url", core_url, "--key-stdin", env={"NECTAR_CONFIG": str(tmp_path / "other.json")}
    )
    assert refused.status == 1 and "(401)" in refused.err and not (tmp_path / "other.json").exists()
    assert "nsk_not_a_key" not in refused.err


def not_core(environ, start_response):
    """A web server that is not core: a page for every address."""
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<html><body>Welcome</body></html>"]


def test_failures_are_one_line_each_with_a_nonzero_status(make_org, nectar, core_url, tmp_path):
    org = make_org()
    (tmp_path / "repo/workflows").mkdir(parents=True)
    (tmp_path / "repo/workflows/w.json").write_text(json.dumps({"name": "w", "definition": ECHO}))
    down = f"http://127.0.0.1:{free_port()}"
    with served(not_core) as elsewhere:
        not_json = nectar("pull", str(tmp_path / "out"), url=elsewhere, key=org.key)
    cases = {
        "not core": (not_json, "did not answer with JSON: is"),
        "unreachable": (
            nectar("pull", str(tmp_path / "out"), url=down, key=org.key),
            f"Cannot reach {down}/",
        ),
        "bad key": (nectar("push", str(tmp_path / "repo"), url=core_url, key="nsk_wrong"), "refused (401)"),
        "read key": (
            nectar("push", str(tmp_path / "repo"), url=core_url, key=new_key(org.browser, "read")),
            "lacks the scope 'workflows:write' that POST /api/v1/workflows/validate needs (403)",
        ),
        "not logged in": (nectar("pull", str(tmp_path / "out")), "Not logged in"),
        "no directory": (
            nectar("push", str(tmp_path / "nowhere"), url=core_url, key=org.key),
            "no such directory",
        ),
    }
    for case, (result, expected) in cases.items():
        assert result.status == 1, case
        said = [line for line in result.err.splitlines() if not line.startswith("… ")]  # not progress
        assert len(said) == 1 and expected in said[0], (case, result.err)
        assert "Traceback" not in result.err
    assert org.browser.api("GET", "/api/v1/workflows", token=org.key).json["items"] == []
    # Least privilege: a read key pulls.
    assert nectar("pull", str(tmp_path / "out"), url=core_url, key=new_key(org.browser, "read")).status == 0


def test_call_reaches_an_endpoint_and_the_api_and_runs_show_what_ran(make_org, nectar, core_url):
    org = make_org()
    made = org.browser.api(
        "POST", "/api/v1/workflows", token=org.key, json={"name": "hello", "definition": ECHO}
    )
    endpoint = {"method": "POST", "path": "/hello", "workflow_id": made.json["id"], "auth": "api_key"}
    assert org.browser.api("POST", "/api/v1/endpoints", token=org.key, json=endpoint).status_code == 201

    called = nectar("call", "post", "/hello", "-d", '{"name": "Ada"}', url=core_url, key=org.key)
    assert called.status == 0, called.err
    assert json.loads(called.out) == {"hello": "Ada"}
    bad_body = nectar("call", "POST", "/hello", "-d", "{nope", url=core_url, key=org.key)
    assert bad_body.status == 1 and "not valid JSON (line 1, column 2" in bad_body.err
    missing = nectar(
        "call", "GET", "/api/v1/workflows/00000000-0000-0000-0000-000000000000", url=core_url, key=org.key
    )
    assert missing.status == 1 and "answered 404" in missing.err and json.loads(missing.out)["status"] == 404

    listed = nectar("runs", "list", "--workflow", "hello", url=core_url, key=org.key)
    assert listed.status == 0, listed.err
    (line,) = listed.out.splitlines()
    run_id = line.split()[0]
    assert " succeeded " in line and line.endswith("hello")
    shown = nectar("runs", "show", run_id, url=core_url, key=org.key)
    assert json.loads(shown.out)["output"] is not None or json.loads(shown.out)["status"] == "succeeded"
    tailed = nectar("runs", "tail", run_id, url=core_url, key=org.key)
    assert tailed.status == 0, tailed.err
    assert [json.loads(step)["step_id"] for step in tailed.out.splitlines()] == ["greet", "r"]
    assert f"run {run_id} is succeeded" in tailed.err
    unknown = nectar("runs", "show", "00000000-0000-0000-0000-000000000000", url=core_url, key=org.key)
    assert unknown.status == 1 and "No run 00000000-0000-0000-0000-000000000000" in unknown.err


def test_runs_tail_follows_a_queued_run_until_it_ends(make_org, core_url, core_app):
    """The CLI as a real process (`python -m nectar.cli.main`), following a run a worker runs later."""
    org = make_org()
    definition = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "one", "type": "transform", "expression": "`1`"}],
    }
    made = org.browser.api(
        "POST", "/api/v1/workflows", token=org.key, json={"name": "later", "definition": definition}
    )
    started = org.browser.api(
        "POST", f"/api/v1/workflows/{made.json['id']}/runs", token=org.key, json={"input": {}}
    )
    assert started.status_code == 202, started.json
    env = {
        **os.environ,
        "NECTAR_URL": core_url,
        "NECTAR_API_KEY": org.key,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    tail = subprocess.Popen(
        [sys.executable, "-m", "nectar.cli.main", "runs", "tail", started.json["id"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = tail.stderr.readline()  # the status it found: the run waits for a worker
        assert "is queued" in first, first
        assert tail.poll() is None, "tail waits while the run has not ended"
        drain_jobs(core_app)
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == 0, err
    assert [json.loads(line)["step_id"] for line in out.splitlines()] == ["one"]
    assert "is succeeded" in err and "Traceback" not in err


def _answering(body: bytes):
    """A server that answers every request 200 with `body` as JSON: a hostile or broken one."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def test_a_server_answering_json_that_is_not_cores_is_one_line_not_a_traceback(nectar, tmp_path):
    answers = {
        "an empty object": b"{}",
        "a list": b"[]",
        "items that are not objects": b'{"items": [1, 2]}',
        "names that are not text": b'{"items": [{"id": "x", "name": {"a": 1}}]}',
        "nested past the parser's depth": b"[" * 100_000 + b"]" * 100_000,
    }
    for case, body in answers.items():
        with served(_answering(body)) as hostile:
            for argv in (("pull", str(tmp_path / "out")), ("runs", "list"), ("runs", "tail", "r")):
                result = nectar(*argv, url=hostile, key="nsk_x_y")
                assert result.status == 1, (case, argv, result)
                said = [line for line in result.err.splitlines() if not line.startswith("… ")]
                assert len(said) == 1 and "is not what core answers" in said[0], (case, argv, result.err)


ESCAPES = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x9b31m"  # set the clipboard, clear the screen (C0 and C1)


def _hostile_core(environ, start_response):
    """Answers like core, with terminal escape sequences in every text a person reads."""
    path = environ["PATH_INFO"]
    status, body = "200 OK", {}
    if path == "/api/v1/workflows":
        body = {"items": [{"id": "w1", "name": "orders" + ESCAPES}]}
    elif path == "/api/v1/runs":
        body = {
            "items": [
                {
                    "id": "r1",
                    "workflow_id": "w1",
                    "status": "failed" + ESCAPES,
                    "trigger": "http",
                    "queued_at": "t",
                }
            ]
        }
    elif path == "/api/v1/runs/r1":
        body = {"id": "r1", "status": "failed", "error": "boom" + ESCAPES, "steps": []}
    else:
        status, body = "400 Bad Request", {"status": 400, "detail": "no" + ESCAPES}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def test_escape_sequences_in_what_a_server_sends_never_reach_the_terminal(nectar):
    """Run errors, workflow names and problem details are written by others (a code step's error
    can hold an anonymous caller's input): control characters are shown escaped, not obeyed."""
    with served(_hostile_core) as hostile:
        results = [
            nectar("runs", "list", url=hostile, key="nsk_x_y"),
            nectar("runs", "tail", "r1", url=hostile, key="nsk_x_y"),
            nectar("call", "GET", "/api/v1/other", url=hostile, key="nsk_x_y"),
        ]
    for result in results:
        shown = result.out + result.err
        assert not any(c in shown for c in "\x1b\x07\x9b"), repr(shown)
    assert "\\x1b]52;c;" in results[1].out  # shown, escaped
