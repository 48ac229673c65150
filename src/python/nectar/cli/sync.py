"""`pull` and `push`: an organization's workflows, endpoints, connections, variables and secrets (their
names) as a directory.

A push reads and checks everything first (files, then the API's own validation of each workflow
document, references by name, connections' credentials), prints the plan, and only then applies it;
if a step fails midway the steps already applied are undone in reverse order, as far as the API
allows (see `undo`), and the command says exactly what stayed.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nectar.cli.client import Api, CliError, json_object, pretty, problem_lines
from nectar.cli.tree import KINDS, key_of, read_tree, write_tree

Progress = Callable[[str], None]
SINGULAR = {
    "workflows": "workflow",
    "endpoints": "endpoint",
    "connections": "connection",
    "variables": "variable",
    "secrets": "secret",
}
# How the API says a workflow reads a variable or secret the organization lacks (see `check`).
MISSING_VALUE = re.compile(r"has no (variable|secret) named '([A-Z0-9_]+)'")


@dataclass(frozen=True)
class FromEnvironment:
    """What a push may send that is never in the directory: connections' credentials (JSON, by
    NECTAR_CONNECTION_<NAME>) and secrets' values (by NECTAR_SECRET_<NAME>)."""

    credentials: dict[str, str]
    secrets: dict[str, str]


# What an object looks like in the directory; the API's answers and the files are both brought to
# this shape, so comparing two of them is comparing what the directory can express.
def workflow_doc(body: dict) -> dict:
    doc = {"name": body["name"], "definition": body["definition"]}
    if body.get("description"):
        doc["description"] = body["description"]
    return doc


def endpoint_doc(body: dict, workflow_name: str) -> dict:
    doc = {
        "method": str(body["method"]).upper(),
        "path": body["path"],
        "workflow": workflow_name,
        "auth": body.get("auth") or "api_key",
    }
    for optional in ("request_schema", "description"):
        if body.get(optional) is not None:
            doc[optional] = body[optional]
    return doc


def connection_doc(body: dict, workflow_names: dict[str, str]) -> dict:
    """A connection without credentials; a webhook's workflow by name (`workflow`), as its id
    differs from one organization to the next."""
    config = dict(body.get("config") or {})
    doc = {"name": body["name"], "service_key": body["service_key"], "config": config}
    if config.get("workflow_id") in workflow_names:
        doc["workflow"] = workflow_names[config.pop("workflow_id")]
    return doc


@dataclass
class Current:
    """An object as the organization has it: its directory shape and the API's own answer."""

    doc: dict
    raw: dict


def fetch_state(api: Api, progress: Progress) -> dict[str, dict[str, Current]]:
    """The organization's objects by kind and key (one request per workflow, for its definition)."""
    state: dict[str, dict[str, Current]] = {kind: {} for kind in KINDS}
    for variable in api.get("variables")["items"]:
        state["variables"][variable["name"]] = Current(_normalised("variables", variable), variable)
    for secret in api.get("secrets")["items"]:
        state["secrets"][secret["name"]] = Current({"name": secret["name"]}, secret)
    listed = api.get("workflows")["items"]
    names = {}
    for number, summary in enumerate(sorted(listed, key=lambda w: w["name"]), 1):
        progress(f"reading workflows {number}/{len(listed)}")
        workflow = api.get(f"workflows/{summary['id']}")
        state["workflows"][workflow["name"]] = Current(workflow_doc(workflow), workflow)
        names[workflow["id"]] = workflow["name"]
    for connection in api.get("connections")["items"]:
        state["connections"][connection["name"]] = Current(connection_doc(connection, names), connection)
    for endpoint in api.get("endpoints")["items"]:
        doc = endpoint_doc(endpoint, names.get(endpoint["workflow_id"], endpoint["workflow_id"]))
        state["endpoints"][key_of("endpoints", doc)] = Current(doc, endpoint)
    return state


def pull(api: Api, directory: Path, progress: Progress) -> tuple[dict[str, int], int]:
    """Writes the organization's objects into `directory`; (count per kind, files changed)."""
    state = fetch_state(api, progress)
    objects = {kind: [state[kind][key].doc for key in sorted(state[kind])] for kind in KINDS}
    changed = write_tree(directory, objects)
    return {kind: len(items) for kind, items in objects.items()}, changed


@dataclass
class Change:
    kind: str
    key: str
    action: str  # create, update or delete
    before: dict | None
    after: dict | None
    file: Path | None = None

    @property
    def title(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.action]
        return f"{sign} {SINGULAR[self.kind]} {self.key!r}"

    def diff(self) -> str:
        before = pretty(self.before).splitlines(keepends=True) if self.before else []
        after = pretty(self.after).splitlines(keepends=True) if self.after else []
        label = f"{self.kind}/{self.key}"
        return "".join(difflib.unified_diff(before, after, f"{label} (organization)", f"{label} (directory)"))


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str, action: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind and c.action == action]


def make_plan(desired, current, *, prune: bool) -> Plan:
    plan = Plan()
    for kind in KINDS:
        for key, item in sorted(desired[kind].items()):
            after = _normalised(kind, item.body)
            have = current[kind].get(key)
            if have is None:
                plan.changes.append(Change(kind, key, "create", None, after, item.file))
                continue
            before = have.doc
            if kind == "variables" and "value" not in after:
                continue  # a value each organization sets for itself: the push only needs it there
            if before != after:
                plan.changes.append(Change(kind, key, "update", before, after, item.file))
        for key in sorted(current[kind].keys() - desired[kind].keys()):
            if not prune:
                continue
            plan.changes.append(Change(kind, key, "delete", current[kind][key].doc, None))
    return plan


def _normalised(kind: str, body: dict) -> dict:
    if kind == "variables":  # without a value: the organization's own (one per environment)
        return {k: v for k, v in body.items() if k in ("name", "value")}
    if kind == "secrets":
        return {"name": body["name"]}
    if kind == "workflows":
        return workflow_doc(body)
    if kind == "endpoints":
        return endpoint_doc(body, body["workflow"])
    doc = connection_doc(body, {})
    if "workflow" in body:
        doc["workflow"] = body["workflow"]
    return doc


def credentials_variable(name: str) -> str:
    """The environment variable that holds a connection's credentials (JSON) for a push."""
    return "NECTAR_CONNECTION_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def credentials_for(name: str, given: dict[str, str]) -> dict | None:
    variable = credentials_variable(name)
    raw = given.get(variable.removeprefix("NECTAR_CONNECTION_"))
    if raw is None:
        return None
    return json_object(raw, variable)


def check(api: Api, plan: Plan, desired, current, given: FromEnvironment, progress: Progress) -> None:
    """Everything the push will send, checked before anything is: CliError listing every problem."""
    problems = []
    known_workflows = set(desired["workflows"]) | set(current["workflows"])
    to_check = [c for c in plan.changes if c.kind == "workflows" and c.action != "delete"]
    for number, change in enumerate(to_check, 1):
        progress(f"validating workflows {number}/{len(to_check)}")
        answer = api.post("workflows/validate", {"definition": change.after["definition"]})
        errors = [e for e in answer.get("errors") or [] if not _provided(e, desired)]
        problems += [f"{change.file}: definition{line}" for line in problem_lines(errors)]
        for target in called_workflows(change.after["definition"]):
            if target not in known_workflows and not _is_uuid(target):
                problems.append(
                    f"{change.file}: calls workflow {target!r}, which is neither in the directory nor the organization"
                )
    for change in plan.changes:
        named = (
            change.after.get("workflow") if change.action != "delete" and change.kind != "workflows" else None
        )
        if named is not None and named not in known_workflows:
            problems.append(
                f"{change.file}: no workflow named {change.after['workflow']!r} in the directory or the organization"
            )
    problems += _deletion_problems(api, plan, desired, current)
    for change in plan.of("variables", "create"):
        if "value" not in change.after:
            problems.append(
                f"{change.file}: the organization has no variable {change.key} and the file gives no value; "
                "set it there first (each organization's own), or add a value"
            )
    for change in plan.of("secrets", "create"):
        if change.key not in given.secrets:
            problems.append(
                f"{change.file}: the organization has no secret {change.key}; set NECTAR_SECRET_{change.key} "
                "to its value to create it"
            )
    catalog = (
        {entry["key"]: entry for entry in api.get("catalog")["items"]}
        if plan.of("connections", "create") or plan.of("connections", "update")
        else {}
    )
    for change in plan.of("connections", "create") + plan.of("connections", "update"):
        entry = catalog.get(change.after["service_key"])
        if entry is None:
            problems.append(f"{change.file}: no connector {change.after['service_key']!r} in the catalog")
            continue
        credentials = credentials_for(change.key, given.credentials)
        if change.action == "update" and change.before["service_key"] != change.after["service_key"]:
            problems.append(
                f"{change.file}: the organization's {change.key!r} is a {change.before['service_key']} connection; "
                "delete it (push --prune without the file) before pushing another kind under that name"
            )
        required = (entry.get("credentials_schema") or {}).get("required") or []
        if change.action == "create" and credentials is None and required:
            problems.append(
                f"{change.file}: the organization has no connection {change.key!r}; set "
                f"{credentials_variable(change.key)} to its credentials (JSON: {', '.join(required)}) to create it"
            )
    if problems:
        raise CliError("Nothing was pushed; fix these first:\n  " + "\n  ".join(problems))


def _deletion_problems(api: Api, plan: Plan, desired, current) -> list[str]:
    """What would make the API refuse to delete a workflow `--prune` removes (see the API's
    DELETE /workflows/{id}), found before anything is applied: what stays in the directory and
    names it, alert rules on it, and its runs not ended. (A schedule is stopped by the push
    itself, and endpoints and webhooks that the directory no longer has are deleted first.)"""
    deleted = {
        change.key: current["workflows"][change.key].raw["id"] for change in plan.of("workflows", "delete")
    }
    if not deleted:
        return []
    problems = []
    refs = {**{name: name for name in deleted}, **{wid: name for name, wid in deleted.items()}}
    for _key, item in sorted(desired["workflows"].items()):
        for target in called_workflows(item.body.get("definition")):
            if target in refs:
                problems.append(f"{item.file}: calls workflow {refs[target]!r}, which --prune would delete")
    for kind in ("endpoints", "connections"):
        for _key, item in sorted(desired[kind].items()):
            if item.body.get("workflow") in deleted:
                problems.append(
                    f"{item.file}: names workflow {item.body['workflow']!r}, which --prune would delete"
                )
    ids = {wid: name for name, wid in deleted.items()}
    for rule in api.get("alert-rules")["items"]:
        watched = rule.get("workflow_id") if rule.get("workflow_id") in ids else None
        started = (
            rule.get("target") if rule.get("channel") == "workflow" and rule.get("target") in ids else None
        )
        for wid in {watched, started} - {None}:
            problems.append(
                f"workflow {ids[wid]!r}: alert rule {rule['name']!r} uses it; delete the rule first"
            )
    for name, wid in sorted(deleted.items()):
        for status in ("queued", "running", "waiting"):
            if api.get("runs", workflow_id=wid, status=status, limit=1)["items"]:
                problems.append(f"workflow {name!r}: a run of it is still {status}; wait for it or cancel it")
                break
    return problems


def _provided(error, desired) -> bool:
    """Whether a validation problem is a variable or secret the organization lacks but the push
    creates before the workflow (saving it is then checked again, by the API)."""
    found = MISSING_VALUE.search(error.get("message", "")) if isinstance(error, dict) else None
    return (
        found is not None
        and found.group(2) in desired["variables" if found.group(1) == "variable" else "secrets"]
    )


def called_workflows(definition) -> list[str]:
    """The workflows a definition's call_workflow steps name, nested steps included."""
    found = []
    if isinstance(definition, dict):
        if definition.get("type") == "call_workflow" and isinstance(definition.get("workflow"), str):
            found.append(definition["workflow"])
        for value in definition.values():
            found += called_workflows(value)
    elif isinstance(definition, list):
        for value in definition:
            found += called_workflows(value)
    return found


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class PushInterrupted(KeyboardInterrupt):
    """Ctrl-C during a push, after what was applied was undone: its one line says how far."""


class Journal:
    """The steps a push applied, each with how to take it back (None: the API cannot)."""

    def __init__(self):
        self.steps: list[tuple[str, Callable[[], None] | None, str]] = []

    def applied(self, what: str, undo: Callable[[], None] | None, why_not: str = "") -> None:
        self.steps.append((what, undo, why_not))

    def undo(self) -> list[str]:
        lines = []
        for what, undo, why_not in reversed(self.steps):
            if undo is None:
                lines.append(f"  kept: {what} ({why_not})")
                continue
            try:
                undo()
                lines.append(f"  undone: {what}")
            except CliError as error:
                lines.append(f"  NOT undone: {what} ({error})")
        return lines


def apply(api: Api, plan: Plan, current, given: FromEnvironment, progress: Progress) -> int:
    """Applies the plan in dependency order (workflows, connections, endpoints, then removals);
    on a failure undoes what it applied and raises CliError saying what happened."""
    journal = Journal()
    steps = _ordered_steps(api, plan, current, given, journal)
    try:
        for number, (title, step) in enumerate(steps, 1):
            progress(f"applying {number}/{len(steps)}: {title}")
            step()
    except KeyboardInterrupt:
        report = journal.undo()
        kept = [line.strip() for line in report if not line.lstrip().startswith("undone:")]
        raise PushInterrupted(
            f"interrupted at {title}; {len(report) - len(kept)} applied step(s) undone"
            + (f", {len(kept)} not: " + "; ".join(kept) if kept else "")
        ) from None
    except CliError as error:
        report = journal.undo()
        raise CliError(
            f"Push failed at {title}: {error}\nWhat had been applied was rolled back:\n" + "\n".join(report)
            if report
            else f"Push failed at {title}: {error}\nNothing had been applied."
        ) from None
    return len(steps)


def _ordered_steps(api: Api, plan: Plan, current, given: FromEnvironment, journal: Journal):
    workflow_ids = {name: have.raw["id"] for name, have in current["workflows"].items()}
    steps = []

    def connection_body(change: Change) -> dict:
        config = dict(change.after["config"])
        if "workflow" in change.after:
            config["workflow_id"] = workflow_ids[change.after["workflow"]]
        body = {"name": change.after["name"], "config": config}
        credentials = credentials_for(change.key, given.credentials)
        if credentials is not None:
            body["credentials"] = credentials
        return body

    def create_connection(change: Change):
        made = api.post(
            "connections", {**connection_body(change), "service_key": change.after["service_key"]}
        )
        journal.applied(change.title, lambda: api.delete(f"connections/{made['id']}"))

    def update_connection(change: Change):
        have = current["connections"][change.key].raw
        api.put(f"connections/{have['id']}", connection_body(change))
        old = {"name": have["name"], "config": have["config"]}
        journal.applied(change.title, lambda: api.put(f"connections/{have['id']}", old))

    def create_workflow(change: Change):
        body = {"name": change.after["name"], "definition": change.after["definition"]}
        if change.after.get("description"):
            body["description"] = change.after["description"]
        made = api.post("workflows", body)
        workflow_ids[change.key] = made["id"]
        journal.applied(change.title, lambda: remove_workflow(made["id"], change.after["definition"]))

    def remove_workflow(workflow_id: str, definition: dict):
        """Deletes a workflow; one on a schedule is first given a version without it (the API
        keeps a scheduled workflow, so that a person deleting one sees it runs on its own)."""
        if (definition.get("trigger") or {}).get("type") != "schedule":
            api.delete(f"workflows/{workflow_id}")
            return
        unscheduled = {**definition, "trigger": {"type": "manual"}}
        note = "nectar push: schedule stopped before deletion"
        saved = api.post(f"workflows/{workflow_id}/versions", {"definition": unscheduled, "note": note})
        try:
            api.delete(f"workflows/{workflow_id}")
        except (CliError, KeyboardInterrupt):
            # Not deleted (a run the schedule started since the check, say): the version before,
            # the scheduled one (a version saved is always the current one), is current again,
            # or the workflow would stay, silently no longer running on its schedule.
            api.post(f"workflows/{workflow_id}/rollback", {"version": saved["version"] - 1})
            raise

    def delete_workflow(change: Change):
        have = current["workflows"][change.key].raw
        # An endpoint pruned with it that is pinned to one of its versions comes back pinned to the
        # same number: the versions up to the highest pin are put back first, so that number runs
        # what it ran (not the current definition, nor a version that does not exist).
        pins = [
            e.raw["pinned_version"]
            for e in current["endpoints"].values()
            if e.raw["workflow_id"] == have["id"] and e.raw.get("pinned_version")
        ]
        earlier = []
        if pins:
            listed = api.get(f"workflows/{have['id']}/versions")["items"]
            earlier = sorted((v for v in listed if v["version"] <= max(pins)), key=lambda v: v["version"])
        remove_workflow(have["id"], change.before["definition"])
        del workflow_ids[change.key]

        def recreate():
            definitions = [v["definition"] for v in earlier] + [change.before["definition"]]
            body = {"name": change.key, "definition": definitions[0]}
            if change.before.get("description"):
                body["description"] = change.before["description"]
            made = api.post("workflows", body)["id"]
            workflow_ids[change.key] = made
            for definition in definitions[1:]:
                api.post(
                    f"workflows/{made}/versions", {"definition": definition, "note": "nectar push: undo"}
                )

        journal.applied(change.title, recreate)

    def update_workflow(change: Change):
        have = current["workflows"][change.key].raw
        if change.after["definition"] != change.before["definition"]:
            api.post(
                f"workflows/{have['id']}/versions",
                {"definition": change.after["definition"], "note": "nectar push"},
            )
            back = {"version": have["current_version"]}
            journal.applied(change.title, lambda: api.post(f"workflows/{have['id']}/rollback", back))
        if change.after.get("description") != change.before.get("description"):
            api.patch(f"workflows/{have['id']}", {"description": change.after.get("description")})
            old = {"description": change.before.get("description")}
            journal.applied(
                f"{change.title} (description)", lambda: api.patch(f"workflows/{have['id']}", old)
            )

    def endpoint_body(doc: dict, pinned_version=None) -> dict:
        body = {k: v for k, v in doc.items() if k != "workflow"}
        body["workflow_id"] = workflow_ids.get(doc["workflow"], doc["workflow"])
        if pinned_version is not None:
            body["pinned_version"] = pinned_version  # a pin is the organization's own: a push keeps it
        return body

    def create_endpoint(change: Change):
        made = api.post("endpoints", endpoint_body(change.after))
        journal.applied(change.title, lambda: api.delete(f"endpoints/{made['id']}"))

    def update_endpoint(change: Change):
        have = current["endpoints"][change.key]
        pinned = have.raw.get("pinned_version")
        body = endpoint_body(change.after, pinned)
        if body["workflow_id"] != have.raw["workflow_id"]:
            # A pin is a version of the workflow the endpoint leaves; the new one may lack it.
            body.pop("pinned_version", None)
        api.put(f"endpoints/{have.raw['id']}", body)

        def undo():  # its workflow's id when undone: a workflow it left may have been pruned and put back
            old = endpoint_body(have.doc, pinned)
            old["workflow_id"] = workflow_ids.get(have.doc["workflow"], have.raw["workflow_id"])
            api.put(f"endpoints/{have.raw['id']}", old)

        journal.applied(change.title, undo)

    def delete_endpoint(change: Change):
        have = current["endpoints"][change.key]
        api.delete(f"endpoints/{have.raw['id']}")

        def recreate():  # its workflow's id when undone: a pruned workflow comes back with a new one
            body = endpoint_body(have.doc, have.raw.get("pinned_version"))
            api.post(
                "endpoints",
                {**body, "workflow_id": workflow_ids.get(have.doc["workflow"], have.raw["workflow_id"])},
            )

        journal.applied(change.title, recreate)

    def delete_connection(change: Change):
        api.delete(f"connections/{current['connections'][change.key].raw['id']}")
        journal.applied(change.title, None, "its credentials are gone with it and are never readable")

    def put_variable(name: str, value: str):
        api.put(f"variables/{name}", {"value": value})

    def create_variable(change: Change):
        put_variable(change.key, change.after["value"])
        journal.applied(change.title, lambda: api.delete(f"variables/{change.key}"))

    def update_variable(change: Change):
        put_variable(change.key, change.after["value"])
        journal.applied(change.title, lambda: put_variable(change.key, change.before["value"]))

    def delete_variable(change: Change):
        api.delete(f"variables/{change.key}")
        journal.applied(change.title, lambda: put_variable(change.key, change.before["value"]))

    def create_secret(change: Change):
        api.put(f"secrets/{change.key}", {"value": given.secrets[change.key]})
        journal.applied(change.title, lambda: api.delete(f"secrets/{change.key}"))

    def delete_secret(change: Change):
        api.delete(f"secrets/{change.key}")
        journal.applied(change.title, None, "a secret's value is never readable, so it cannot be put back")

    def add(change: Change, action):
        steps.append((change.title, lambda: action(change)))

    # Variables and secrets first (saving a workflow that reads one checks it exists), then
    # workflows (a webhook connection and an endpoint name one; steps name connections only when
    # they run). Workflows are deleted after the endpoints that use them and callers before the
    # workflows they call (undone in reverse: a callee is back before its caller); one a pruned
    # webhook starts only after that connection. Connections and secrets are deleted last: what
    # they hold cannot be put back if something after them failed.
    started_by_pruned = {c.before.get("workflow") for c in plan.of("connections", "delete")}
    deletions = list(reversed(_calls_first(plan.of("workflows", "delete"), lambda c: c.before)))
    order = [
        (create_variable, plan.of("variables", "create")),
        (update_variable, plan.of("variables", "update")),
        (create_secret, plan.of("secrets", "create")),
        (create_workflow, _calls_first(plan.of("workflows", "create"))),
        (update_workflow, plan.of("workflows", "update")),
        (create_connection, plan.of("connections", "create")),
        (update_connection, plan.of("connections", "update")),
        (create_endpoint, plan.of("endpoints", "create")),
        (update_endpoint, plan.of("endpoints", "update")),
        (delete_endpoint, plan.of("endpoints", "delete")),
        (delete_workflow, [c for c in deletions if c.key not in started_by_pruned]),
        (delete_variable, plan.of("variables", "delete")),
        (delete_connection, plan.of("connections", "delete")),
        (delete_workflow, [c for c in deletions if c.key in started_by_pruned]),
        (delete_secret, plan.of("secrets", "delete")),
    ]
    for step, changes in order:
        for change in changes:
            add(change, step)
    return steps


def _calls_first(changes: list[Change], doc=lambda c: c.after) -> list[Change]:
    """Workflows ordered so that one a call_workflow step names comes before its caller (`doc`:
    the side of each change whose definition counts)."""
    pending = {c.key: c for c in changes}
    ordered = []
    while pending:
        ready = [
            c
            for key, c in sorted(pending.items())
            if not set(called_workflows(doc(c)["definition"])) & (pending.keys() - {key})
        ]
        ready = ready or [pending[min(pending)]]  # a cycle: the API refuses it, and says why
        for change in ready:
            ordered.append(change)
            del pending[change.key]
    return ordered


def push(
    api: Api,
    directory: Path,
    *,
    prune: bool,
    dry_run: bool,
    given: FromEnvironment,
    out,
    progress: Progress,
) -> Plan:
    desired = read_tree(directory)  # every file parsed and checked before the first request
    current = fetch_state(api, progress)
    plan = make_plan(desired, current, prune=prune)
    check(api, plan, desired, current, given, progress)
    for note in plan.notes:
        out(f"note: {note}")
    for change in plan.changes:
        out(change.title)
        if dry_run or change.action == "update":
            text = change.diff()
            if text:
                out(text.rstrip("\n"))
    if not plan.changes:
        out("Nothing to change: the organization matches the directory.")
        return plan
    if dry_run:
        out(f"{len(plan.changes)} change(s) would be made (dry run: nothing was sent).")
        return plan
    applied = apply(api, plan, current, given, progress)
    out(f"Pushed: {applied} change(s) applied.")
    return plan
