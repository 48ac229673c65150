"""`nectar pull` and `push` against a live core: one sorted JSON file per object, idempotent pushes,
dry runs, pruning, all or nothing (checked first, undone on a failure midway), and promotion from a
staging organization to a production one matched by name, each keeping its own credentials."""

from __future__ import annotations

import json

import pytest

from nectar.shared.config import Role

ECHO = {"trigger": {"type": "http"}, "steps": [{"id": "r", "type": "respond", "status": 200, "body": "pong"}]}
CALLER = {
    "trigger": {"type": "manual"},
    "steps": [{"id": "c", "type": "call_workflow", "workflow": "echo", "input": {}}],
}


def seed(org, *, token="s3cret-token", base_url="https://crm.example.com") -> None:
    """An organization with a workflow, an endpoint on it and a REST connection with credentials."""
    api = org.browser.api
    echo = api(
        "POST",
        "/api/v1/workflows",
        token=org.key,
        json={"name": "echo", "definition": ECHO, "description": "says pong"},
    )
    assert echo.status_code == 201, echo.json
    endpoint = {"method": "POST", "path": "/ping", "workflow_id": echo.json["id"], "auth": "api_key"}
    assert api("POST", "/api/v1/endpoints", token=org.key, json=endpoint).status_code == 201
    connection = {
        "service_key": "rest",
        "name": "crm",
        "config": {"base_url": base_url, "auth": "bearer"},
        "credentials": {"token": token},
    }
    assert api("POST", "/api/v1/connections", token=org.key, json=connection).status_code == 201, connection


def listing(org, what: str) -> list[dict]:
    return org.browser.api("GET", f"/api/v1/{what}", token=org.key).json["items"]


def workflow_named(org, name: str) -> dict:
    (found,) = [w for w in listing(org, "workflows") if w["name"] == name]
    return org.browser.api("GET", f"/api/v1/workflows/{found['id']}", token=org.key).json


def test_pull_writes_one_sorted_file_per_object_without_secrets_and_a_push_back_changes_nothing(
    make_org, nectar, core_url, tmp_path
):
    org = make_org()
    seed(org)
    pulled = nectar("pull", str(tmp_path / "repo"), url=core_url, key=org.key)
    assert pulled.status == 0, pulled.err
    files = sorted(p.relative_to(tmp_path / "repo").as_posix() for p in (tmp_path / "repo").rglob("*.json"))
    assert files == [
        "connections/crm.json",
        "endpoints/POST_-ping-" + files[1].split("-ping-")[1],
        "workflows/echo.json",
    ]
    workflow_text = (tmp_path / "repo/workflows/echo.json").read_text()
    assert json.loads(workflow_text) == {"name": "echo", "description": "says pong", "definition": ECHO}
    assert (
        workflow_text == json.dumps(json.loads(workflow_text), indent=2, sort_keys=True) + "\n"
    ), "sorted keys"
    connection = json.loads((tmp_path / "repo/connections/crm.json").read_text())
    assert connection == {
        "name": "crm",
        "service_key": "rest",
        "config": {"auth": "bearer", "base_url": "https://crm.example.com"},
    }
    assert "s3cret-token" not in "".join(p.read_text() for p in (tmp_path / "repo").rglob("*.json"))
    assert org.id not in "".join(
        p.read_text() for p in (tmp_path / "repo").rglob("*.json")
    ), "names, never ids"

    again = nectar("pull", str(tmp_path / "repo"), url=core_url, key=org.key)
    assert "0 file(s) changed" in again.out, "a second pull rewrites nothing"
    pushed = nectar("push", str(tmp_path / "repo"), url=core_url, key=org.key)
    assert pushed.status == 0, pushed.err
    assert "Nothing to change" in pushed.out
    assert workflow_named(org, "echo")["current_version"] == 1


def test_a_changed_file_is_a_diff_in_a_dry_run_and_is_applied_once(make_org, nectar, core_url, tmp_path):
    org = make_org()
    seed(org)
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    changed = {
        "name": "echo",
        "description": "says pong",
        "definition": {**ECHO, "steps": [{**ECHO["steps"][0], "body": "PONG"}]},
    }
    (repo / "workflows/echo.json").write_text(json.dumps(changed))
    (repo / "workflows/caller.json").write_text(json.dumps({"name": "caller", "definition": CALLER}))

    dry = nectar("push", "--dry-run", str(repo), url=core_url, key=org.key)
    assert dry.status == 0, dry.err
    assert "~ workflow 'echo'" in dry.out and "+ workflow 'caller'" in dry.out
    lines = [line.replace(" ", "") for line in dry.out.splitlines()]
    assert '-"body":"pong",' in lines and '+"body":"PONG",' in lines, dry.out
    assert "dry run: nothing was sent" in dry.out
    assert workflow_named(org, "echo")["current_version"] == 1 and len(listing(org, "workflows")) == 1

    first = nectar("push", str(repo), url=core_url, key=org.key)
    assert first.status == 0, first.err
    assert "applying 2/2" in first.err, "progress goes to stderr"
    assert workflow_named(org, "echo")["definition"]["steps"][0]["body"] == "PONG"
    assert workflow_named(org, "caller")["definition"] == CALLER
    second = nectar("push", str(repo), url=core_url, key=org.key)
    assert second.status == 0 and "Nothing to change" in second.out
    assert workflow_named(org, "echo")["current_version"] == 2, "the second push saved no version"


def test_a_changed_description_is_updated_without_a_new_version(make_org, nectar, core_url, tmp_path):
    org = make_org()
    seed(org)
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    (repo / "workflows/echo.json").write_text(
        json.dumps({"name": "echo", "description": "answers pong", "definition": ECHO})
    )
    pushed = nectar("push", str(repo), url=core_url, key=org.key)
    assert pushed.status == 0, pushed.err
    assert "~ workflow 'echo'" in pushed.out and "cannot change" not in pushed.out
    echo = workflow_named(org, "echo")
    assert echo["description"] == "answers pong" and echo["current_version"] == 1
    (repo / "workflows/echo.json").write_text(json.dumps({"name": "echo", "definition": ECHO}))
    assert nectar("push", str(repo), url=core_url, key=org.key).status == 0
    assert workflow_named(org, "echo")["description"] is None, "no description in the file: none"
    assert "Nothing to change" in nectar("push", str(repo), url=core_url, key=org.key).out


def test_promotion_pushes_one_directory_to_staging_then_production_each_keeping_its_own_credentials(
    make_org, nectar, core_url, tmp_path, database, core_app
):
    development, staging, production = make_org(), make_org(), make_org()
    seed(development, token="dev-token")
    # Staging has its own crm (another server, its own token); production has none yet.
    connection = {
        "service_key": "rest",
        "name": "crm",
        "config": {"base_url": "https://crm.example.com", "auth": "bearer"},
        "credentials": {"token": "staging-token"},
    }
    assert (
        staging.browser.api("POST", "/api/v1/connections", token=staging.key, json=connection).status_code
        == 201
    )
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=development.key).status == 0

    assert nectar("push", str(repo), url=core_url, key=staging.key).status == 0
    production_credentials = {"NECTAR_CONNECTION_CRM": json.dumps({"token": "production-token"})}
    pushed = nectar("push", str(repo), url=core_url, key=production.key, env=production_credentials)
    assert pushed.status == 0, pushed.err

    for org in (staging, production):
        assert {w["name"] for w in listing(org, "workflows")} == {"echo"}
        (endpoint,) = listing(org, "endpoints")
        assert endpoint["workflow_id"] == workflow_named(org, "echo")["id"], "matched by name, not id"
        (crm,) = listing(org, "connections")
        assert crm["has_credentials"]
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT org_id::text, credentials_ciphertext FROM integration_connections WHERE name = 'crm'"
        ).fetchall()
    ring = core_app.config["NECTAR_KEY_RING"]
    ours = {development.id, staging.id, production.id}
    credentials = {o: json.loads(ring.decrypt(bytes(secret))) for o, secret in rows if o in ours}
    assert credentials == {
        development.id: {"token": "dev-token"},
        staging.id: {"token": "staging-token"},
        production.id: {"token": "production-token"},
    }, "each organization keeps its own credentials"
    again = nectar("push", str(repo), url=core_url, key=production.key)
    assert "Nothing to change" in again.out, "pushing again to production changes nothing"


def test_prune_removes_what_the_directory_no_longer_has_workflows_included(
    make_org, nectar, core_url, tmp_path
):
    org = make_org()
    seed(org)
    for what, value in (("variables", "plain"), ("secrets", "secret-value")):
        answer = org.browser.api("PUT", f"/api/v1/{what}/OLD", token=org.key, json={"value": value})
        assert answer.status_code == 201, answer.json
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    for path in repo.glob("*/*.json"):
        path.unlink()
    without = nectar("push", str(repo), url=core_url, key=org.key)
    assert without.status == 0 and "Nothing to change" in without.out, "without --prune nothing is removed"
    pruned = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert pruned.status == 0, pruned.err
    for what in ("endpoints", "connections", "variables", "secrets"):
        assert listing(org, what) == [], what
    assert "- workflow 'echo'" in pruned.out
    assert listing(org, "workflows") == []


NIGHTLY = {"trigger": {"type": "schedule", "cron": "0 3 * * *"}, "steps": ECHO["steps"]}


def seed_for_pruning(org) -> None:
    """echo (an endpoint on it, a webhook starting it), caller (calls echo), nightly (a schedule),
    and a variable OLD."""
    seed(org)
    api = org.browser.api
    for name, definition in (("caller", CALLER), ("nightly", NIGHTLY)):
        made = api("POST", "/api/v1/workflows", token=org.key, json={"name": name, "definition": definition})
        assert made.status_code == 201, made.json
    hook = {
        "service_key": "webhook",
        "name": "hook",
        "config": {"workflow_id": workflow_named(org, "echo")["id"]},
        "credentials": {"secret": "w" * 20},
    }
    assert api("POST", "/api/v1/connections", token=org.key, json=hook).status_code == 201
    assert api("PUT", "/api/v1/variables/OLD", token=org.key, json={"value": "x"}).status_code == 201


def emptied(nectar, core_url, org, tmp_path):
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    for path in repo.glob("*/*.json"):
        path.unlink()
    return repo


def failing_at(monkeypatch, path: str, error: BaseException) -> None:
    """The CLI's DELETE of `path` raises `error` (after everything before it was applied)."""
    from nectar.cli.client import Api

    real = Api.delete

    def delete(self, asked: str):
        if asked == path:
            raise error
        return real(self, asked)

    monkeypatch.setattr(Api, "delete", delete)


def test_prune_deletes_workflows_after_what_uses_them_and_a_failure_brings_them_back(
    make_org, nectar, core_url, tmp_path, monkeypatch
):
    from nectar.cli.client import CliError

    org = make_org()
    seed_for_pruning(org)
    repo = emptied(nectar, core_url, org, tmp_path)
    with monkeypatch.context() as patched:
        failing_at(patched, "variables/OLD", CliError("refused on purpose"))
        failed = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert failed.status == 1 and "Push failed at - variable 'OLD'" in failed.err, failed.err
    for name in ("caller", "nightly"):
        assert f"undone: - workflow '{name}'" in failed.err
    assert {w["name"] for w in listing(org, "workflows")} == {"echo", "caller", "nightly"}
    assert workflow_named(org, "nightly")["definition"] == NIGHTLY, "back with its schedule"
    assert workflow_named(org, "caller")["definition"] == CALLER
    (endpoint,) = listing(org, "endpoints")
    assert endpoint["workflow_id"] == workflow_named(org, "echo")["id"], "the endpoint is back"

    pruned = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert pruned.status == 0, pruned.err
    for what in ("workflows", "endpoints", "connections", "variables"):
        assert listing(org, what) == [], what


def test_undoing_a_prune_puts_a_pinned_endpoint_back_on_the_version_it_ran(
    make_org, nectar, core_url, tmp_path, monkeypatch
):
    # A pruned workflow comes back with a new id; recreated with only its current definition, an
    # endpoint pinned to its version 2 came back pinned to a version that no longer ran what it did.
    from nectar.cli.client import CliError

    org = make_org()
    seed_for_pruning(org)
    api, echo = org.browser.api, workflow_named(org, "echo")["id"]
    second = {**ECHO, "steps": [{**ECHO["steps"][0], "body": "pong 2"}]}
    third = {**ECHO, "steps": [{**ECHO["steps"][0], "body": "pong 3"}]}
    for definition in (second, third):
        saved = api(
            "POST", f"/api/v1/workflows/{echo}/versions", token=org.key, json={"definition": definition}
        )
        assert saved.status_code == 201, saved.json
    (endpoint,) = listing(org, "endpoints")
    pinned = {k: endpoint[k] for k in ("method", "path", "workflow_id", "auth")} | {"pinned_version": 2}
    put = api("PUT", f"/api/v1/endpoints/{endpoint['id']}", token=org.key, json=pinned)
    assert put.status_code == 200, put.json
    (hook,) = [c for c in listing(org, "connections") if c["name"] == "hook"]  # echo goes before OLD
    assert api("DELETE", f"/api/v1/connections/{hook['id']}", token=org.key).status_code == 204
    repo = emptied(nectar, core_url, org, tmp_path)
    with monkeypatch.context() as patched:
        failing_at(patched, "variables/OLD", CliError("refused on purpose"))
        failed = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert failed.status == 1 and "NOT undone" not in failed.err, failed.err
    assert "undone: - workflow 'echo'" in failed.err

    back = workflow_named(org, "echo")
    assert back["definition"] == third
    (endpoint,) = listing(org, "endpoints")
    assert endpoint["workflow_id"] == back["id"] and endpoint["pinned_version"] == 2
    versions = api("GET", f"/api/v1/workflows/{back['id']}/versions", token=org.key).json["items"]
    assert {v["version"]: v["definition"] for v in versions}[2] == second


def test_an_endpoint_moved_to_another_workflow_leaves_its_pin_behind(make_org, nectar, core_url, tmp_path):
    # A push keeps an endpoint's pin, a version number of its workflow: moved to another workflow,
    # the pin meant nothing there (a version it may lack: core refuses that) and is dropped.
    org = make_org()
    seed(org)
    api, echo = org.browser.api, workflow_named(org, "echo")["id"]
    for body in ("pong 2", "pong 3"):
        changed = {**ECHO, "steps": [{**ECHO["steps"][0], "body": body}]}
        saved = api("POST", f"/api/v1/workflows/{echo}/versions", token=org.key, json={"definition": changed})
        assert saved.status_code == 201, saved.json
    other = api("POST", "/api/v1/workflows", token=org.key, json={"name": "other", "definition": ECHO})
    assert other.status_code == 201, other.json
    (endpoint,) = listing(org, "endpoints")
    pinned = {k: endpoint[k] for k in ("method", "path", "workflow_id", "auth")} | {"pinned_version": 3}
    assert api("PUT", f"/api/v1/endpoints/{endpoint['id']}", token=org.key, json=pinned).status_code == 200
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    (endpoint_file,) = repo.glob("endpoints/*.json")
    doc = json.loads(endpoint_file.read_text())
    assert doc["workflow"] == "echo"
    endpoint_file.write_text(json.dumps({**doc, "workflow": "other"}, indent=2, sort_keys=True) + "\n")

    pushed = nectar("push", str(repo), url=core_url, key=org.key)
    assert pushed.status == 0, pushed.err
    (endpoint,) = listing(org, "endpoints")
    assert endpoint["workflow_id"] == other.json["id"] and endpoint["pinned_version"] is None


def test_undoing_a_move_off_a_pruned_workflow_puts_the_endpoint_back_on_it_pinned(
    make_org, nectar, core_url, tmp_path, monkeypatch
):
    # The endpoint leaves echo for other and echo is pruned; a failure after that brings echo back
    # with a new id: the endpoint's undo must bind it to that id (with its pin), not the gone one.
    from nectar.cli.client import CliError

    org = make_org()
    seed(org)
    api, echo = org.browser.api, workflow_named(org, "echo")["id"]
    second = {**ECHO, "steps": [{**ECHO["steps"][0], "body": "pong 2"}]}
    saved = api("POST", f"/api/v1/workflows/{echo}/versions", token=org.key, json={"definition": second})
    assert saved.status_code == 201, saved.json
    assert (
        api(
            "POST", "/api/v1/workflows", token=org.key, json={"name": "other", "definition": ECHO}
        ).status_code
        == 201
    )
    assert api("PUT", "/api/v1/variables/OLD", token=org.key, json={"value": "x"}).status_code == 201
    (endpoint,) = listing(org, "endpoints")
    pinned = {k: endpoint[k] for k in ("method", "path", "workflow_id", "auth")} | {"pinned_version": 1}
    assert api("PUT", f"/api/v1/endpoints/{endpoint['id']}", token=org.key, json=pinned).status_code == 200
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    (endpoint_file,) = repo.glob("endpoints/*.json")
    doc = json.loads(endpoint_file.read_text())
    endpoint_file.write_text(json.dumps({**doc, "workflow": "other"}, indent=2, sort_keys=True) + "\n")
    (repo / "workflows/echo.json").unlink()
    for path in repo.glob("variables/*.json"):
        path.unlink()
    with monkeypatch.context() as patched:
        failing_at(patched, "variables/OLD", CliError("refused on purpose"))
        failed = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert failed.status == 1 and "NOT undone" not in failed.err, failed.err
    back = workflow_named(org, "echo")
    (endpoint,) = listing(org, "endpoints")
    assert endpoint["workflow_id"] == back["id"] and endpoint["pinned_version"] == 1, endpoint


@pytest.mark.parametrize("error", ["refused", "ctrl-c"])
def test_a_scheduled_workflow_whose_deletion_fails_keeps_its_schedule(
    make_org, nectar, core_url, tmp_path, monkeypatch, error
):
    # Pruning a scheduled workflow first saves a version without the schedule; when the DELETE
    # then fails (a run the schedule started since the check: 409) or is interrupted, that version
    # is applied too and must be taken back, or the workflow silently stops running.
    from nectar.cli.client import CliError

    org = make_org()
    seed_for_pruning(org)
    repo = emptied(nectar, core_url, org, tmp_path)
    nightly = workflow_named(org, "nightly")["id"]
    with monkeypatch.context() as patched:
        failing_at(
            patched,
            f"workflows/{nightly}",
            CliError("a run of it has not ended") if error == "refused" else KeyboardInterrupt(),
        )
        failed = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert failed.status == (1 if error == "refused" else 130), failed.err
    assert workflow_named(org, "nightly")["definition"] == NIGHTLY, "still on its schedule"
    assert {w["name"] for w in listing(org, "workflows")} == {"echo", "caller", "nightly"}


def test_ctrl_c_during_a_push_undoes_what_was_applied_and_exits_130_with_one_line(
    make_org, nectar, core_url, tmp_path, monkeypatch
):
    org = make_org()
    seed_for_pruning(org)
    repo = emptied(nectar, core_url, org, tmp_path)
    with monkeypatch.context() as patched:
        failing_at(patched, "variables/OLD", KeyboardInterrupt())
        interrupted = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert interrupted.status == 130
    (line,) = interrupted.err.strip().splitlines()[-1:]
    assert line.startswith("nectar: interrupted at - variable 'OLD'; 3 applied step(s) undone"), line
    assert [entry for entry in interrupted.err.splitlines() if entry.startswith("nectar:")] == [line]
    assert {w["name"] for w in listing(org, "workflows")} == {"echo", "caller", "nightly"}
    assert len(listing(org, "endpoints")) == 1 and len(listing(org, "connections")) == 2


def test_prune_refuses_before_anything_when_a_workflow_it_would_delete_is_still_used(
    make_org, nectar, core_url, tmp_path
):
    org = make_org()
    seed_for_pruning(org)
    echo_id = workflow_named(org, "echo")["id"]
    rule = {"name": "page me", "channel": "workflow", "target": echo_id}
    assert org.browser.api("POST", "/api/v1/alert-rules", token=org.key, json=rule).status_code == 201
    queued = org.browser.api("POST", f"/api/v1/workflows/{echo_id}/runs", token=org.key, json={})
    assert queued.status_code == 202
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    (repo / "workflows/echo.json").unlink()  # caller, the endpoint and the webhook still name it
    result = nectar("push", "--prune", str(repo), url=core_url, key=org.key)
    assert result.status == 1 and "Nothing was pushed" in result.err
    assert "workflows/caller.json: calls workflow 'echo', which --prune would delete" in result.err
    assert "names workflow 'echo', which --prune would delete" in result.err
    assert "alert rule 'page me' uses it" in result.err
    assert "a run of it is still queued" in result.err
    assert {w["name"] for w in listing(org, "workflows")} == {"echo", "caller", "nightly"}


def test_invalid_json_names_the_file_and_line_and_nothing_is_sent(make_org, nectar, core_url, tmp_path):
    org = make_org()
    repo = tmp_path / "repo"
    (repo / "workflows").mkdir(parents=True)
    (repo / "workflows/good.json").write_text(json.dumps({"name": "good", "definition": ECHO}))
    (repo / "workflows/bad.json").write_text('{\n  "name": "bad",\n  "definition": {,}\n}\n')
    result = nectar("push", str(repo), url=core_url, key=org.key)
    assert result.status == 1
    assert result.err.strip().splitlines() == [
        f"nectar: {repo}/workflows/bad.json:3:18: invalid JSON: Expecting property name enclosed in double quotes."
    ]
    assert listing(org, "workflows") == []


def test_json_python_cannot_read_names_the_file_and_nothing_is_sent(make_org, nectar, core_url, tmp_path):
    """JSON that parses as text but not as values: nesting past the parser's depth, a number of more
    than 4300 digits. One line naming the file, no traceback."""
    org = make_org()
    contents = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "long": '{"name": "n", "definition": ' + "1" * 5000 + "}",
    }
    for case, text in contents.items():
        repo = tmp_path / case
        (repo / "workflows").mkdir(parents=True)
        (repo / "workflows/odd.json").write_text(text)
        result = nectar("push", str(repo), url=core_url, key=org.key)
        assert result.status == 1, case
        said = result.err.strip().splitlines()
        assert len(said) == 1 and said[0].startswith(f"nectar: {repo}/workflows/odd.json:"), (case, said)
        assert "invalid JSON" in said[0], (case, said)
    assert listing(org, "workflows") == []


def test_an_invalid_workflow_is_refused_with_its_problems_before_anything_is_applied(
    make_org, nectar, core_url, tmp_path
):
    org = make_org()
    repo = tmp_path / "repo"
    (repo / "workflows").mkdir(parents=True)
    (repo / "workflows/good.json").write_text(json.dumps({"name": "good", "definition": ECHO}))
    broken = {**ECHO, "steps": [{"id": "r", "type": "respond", "status": 999}]}
    (repo / "workflows/broken.json").write_text(json.dumps({"name": "broken", "definition": broken}))
    (repo / "endpoints").mkdir()
    (repo / "endpoints/x.json").write_text(json.dumps({"method": "GET", "path": "/x", "workflow": "missing"}))
    result = nectar("push", str(repo), url=core_url, key=org.key)
    assert result.status == 1 and "Traceback" not in result.err
    assert "Nothing was pushed" in result.err
    assert "workflows/broken.json: definition/steps/0/status" in result.err
    assert "endpoints/x.json: no workflow named 'missing'" in result.err
    assert listing(org, "workflows") == []


def test_a_failure_midway_undoes_what_was_applied(make_org, nectar, core_url, tmp_path):
    org = make_org()
    seed(org)
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=org.key).status == 0
    before = workflow_named(org, "echo")
    changed = {**ECHO, "steps": [{**ECHO["steps"][0], "body": "changed"}]}
    (repo / "workflows/echo.json").write_text(
        json.dumps({"name": "echo", "description": "says changed", "definition": changed})
    )
    new_connection = {
        "name": "billing",
        "service_key": "rest",
        "config": {"base_url": "https://billing.example.com", "auth": "none"},
    }
    (repo / "connections/billing.json").write_text(json.dumps(new_connection))
    (repo / "workflows/fresh.json").write_text(json.dumps({"name": "fresh", "definition": ECHO}))
    # Only the server checks an endpoint's path (the API has no dry run for endpoints): it refuses
    # this one after the workflow and the connection were applied.
    (repo / "endpoints/bad.json").write_text(
        json.dumps({"method": "GET", "path": "no-slash", "workflow": "echo"})
    )
    result = nectar("push", str(repo), url=core_url, key=org.key)
    assert result.status == 1, result.out
    assert "Push failed at + endpoint 'GET no-slash'" in result.err and "Traceback" not in result.err
    assert "undone: + connection 'billing'" in result.err and "undone: ~ workflow 'echo'" in result.err
    assert "undone: + workflow 'fresh'" in result.err
    assert [w["name"] for w in listing(org, "workflows")] == ["echo"], "the new workflow was deleted"
    assert [c["name"] for c in listing(org, "connections")] == ["crm"]
    after = workflow_named(org, "echo")
    assert after["definition"] == before["definition"] == ECHO, "rolled back to what it was"
    assert after["description"] == "says pong", "the description was put back too"
    assert len(listing(org, "endpoints")) == 1


def test_a_webhook_names_its_workflow_and_a_new_connection_takes_its_credentials_from_the_environment(
    make_org, nectar, core_url, tmp_path
):
    source, target = make_org(), make_org()
    seed(source)
    echo_id = workflow_named(source, "echo")["id"]
    hook = {
        "service_key": "webhook",
        "name": "orders hook",
        "config": {"workflow_id": echo_id},
        "credentials": {"secret": "0123456789abcdef-source"},
    }
    assert source.browser.api("POST", "/api/v1/connections", token=source.key, json=hook).status_code == 201
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=source.key).status == 0
    (hook_file,) = [p for p in repo.glob("connections/*.json") if "hook" in p.name]
    assert json.loads(hook_file.read_text()) == {
        "name": "orders hook",
        "service_key": "webhook",
        "config": {},
        "workflow": "echo",
    }

    refused = nectar(
        "push", str(repo), url=core_url, key=target.key, env={"NECTAR_CONNECTION_CRM": '{"token": "t"}'}
    )
    assert (
        refused.status == 1
        and "set NECTAR_CONNECTION_ORDERS_HOOK to its credentials (JSON: secret)" in refused.err
    )
    assert listing(target, "workflows") == [], "nothing was applied"
    bad = nectar(
        "push", str(repo), url=core_url, key=target.key, env={"NECTAR_CONNECTION_ORDERS_HOOK": "{oops"}
    )
    assert bad.status == 1 and "NECTAR_CONNECTION_ORDERS_HOOK:1:2: invalid JSON" in bad.err

    secret = {"NECTAR_CONNECTION_ORDERS_HOOK": json.dumps({"secret": "0123456789abcdef-target"})}
    pushed = nectar("push", str(repo), url=core_url, key=target.key, env=secret)
    assert pushed.status == 0, pushed.err
    (made,) = [c for c in listing(target, "connections") if c["name"] == "orders hook"]
    assert made["config"] == {"workflow_id": workflow_named(target, "echo")["id"]} != {"workflow_id": echo_id}


GREETER = {
    "trigger": {"type": "http"},
    "steps": [
        {"id": "token", "type": "transform", "expression": "secrets.TOKEN"},
        {
            "id": "r",
            "type": "respond",
            "status": 200,
            "body": {"say": "{{ vars.GREETING }} {{ vars.PLACE }}"},
        },
    ],
}


def test_variables_and_secrets_promote_with_each_organization_keeping_its_own(
    make_org, nectar, core_url, tmp_path, database, core_app
):
    development, staging, production = make_org(), make_org(), make_org()

    def put(org, what, name, value):
        answer = org.browser.api("PUT", f"/api/v1/{what}/{name}", token=org.key, json={"value": value})
        assert answer.status_code in (200, 201), answer.json

    put(development, "variables", "GREETING", "hello")
    put(development, "variables", "PLACE", "development")
    put(development, "secrets", "TOKEN", "development-secret")
    made = development.browser.api(
        "POST", "/api/v1/workflows", token=development.key, json={"name": "greeter", "definition": GREETER}
    )
    endpoint = {"method": "GET", "path": "/greet", "workflow_id": made.json["id"], "auth": "api_key"}
    assert (
        development.browser.api("POST", "/api/v1/endpoints", token=development.key, json=endpoint).status_code
        == 201
    )
    repo = tmp_path / "repo"
    assert nectar("pull", str(repo), url=core_url, key=development.key).status == 0
    assert json.loads((repo / "variables/GREETING.json").read_text()) == {
        "name": "GREETING",
        "value": "hello",
    }
    assert json.loads((repo / "secrets/TOKEN.json").read_text()) == {"name": "TOKEN"}
    assert "development-secret" not in "".join(p.read_text() for p in repo.rglob("*.json"))
    # PLACE differs per environment: without a value, each organization keeps its own.
    (repo / "variables/PLACE.json").write_text(json.dumps({"name": "PLACE"}))

    put(staging, "variables", "PLACE", "staging")
    refused = nectar("push", str(repo), url=core_url, key=staging.key)
    assert refused.status == 1 and "set NECTAR_SECRET_TOKEN to its value" in refused.err
    assert listing(staging, "workflows") == [] and [v["name"] for v in listing(staging, "variables")] == [
        "PLACE"
    ]
    pushed = nectar(
        "push", str(repo), url=core_url, key=staging.key, env={"NECTAR_SECRET_TOKEN": "staging-secret"}
    )
    assert pushed.status == 0, pushed.err

    lacking = nectar(
        "push", str(repo), url=core_url, key=production.key, env={"NECTAR_SECRET_TOKEN": "production-secret"}
    )
    assert lacking.status == 1 and "has no variable PLACE and the file gives no value" in lacking.err
    put(production, "variables", "PLACE", "production")
    pushed = nectar(
        "push", str(repo), url=core_url, key=production.key, env={"NECTAR_SECRET_TOKEN": "production-secret"}
    )
    assert pushed.status == 0, pushed.err
    again = nectar("push", str(repo), url=core_url, key=production.key)
    assert "Nothing to change" in again.out, "an existing secret is not set again"

    for org, place in ((staging, "staging"), (production, "production")):
        called = nectar("call", "GET", "/greet", url=core_url, key=org.key)
        assert json.loads(called.out) == {"say": f"hello {place}"}, called.err
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT org_id::text, value_ciphertext FROM organization_secrets WHERE name = 'TOKEN'"
        ).fetchall()
    ring = core_app.config["NECTAR_KEY_RING"]
    values = {
        o: ring.decrypt(bytes(secret)).decode() for o, secret in rows if o in (staging.id, production.id)
    }
    assert values == {staging.id: "staging-secret", production.id: "production-secret"}
