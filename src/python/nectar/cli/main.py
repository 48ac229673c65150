"""`nectar`: workflows as code against core's public API (docs/cli.md).

    nectar login [--url URL] [--key-stdin]     store the server and an API key (0600), or use
                                               NECTAR_URL and NECTAR_API_KEY
    nectar pull DIR                            the organization's objects into DIR, one file each
    nectar push DIR [--dry-run] [--prune]      DIR into the organization, all or nothing
    nectar call METHOD PATH [-d JSON|@FILE|-]  an /api/v1 path or one of the organization's endpoints
    nectar runs list|show RUN|tail RUN         runs, one run, or one run followed until it ends

Results go to stdout, progress and errors to stderr; an error is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nectar.cli import sync
from nectar.cli.client import Api, ApiRefused, CliError, pretty, shown
from nectar.shared.config import CliSettings, load_cli_settings

FINISHED = ("succeeded", "failed", "cancelled")
TAIL_POLL_SECONDS = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.command(args, load_cli_settings()) or 0
    except CliError as error:
        print(f"nectar: {shown(str(error))}", file=sys.stderr)
        return 1
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        # JSON without what core always sends (a broken or hostile server): one line all the same.
        print(
            f"nectar: the server's answer is not what core answers ({type(error).__name__}: {shown(str(error))}); "
            "is the URL core's address?",
            file=sys.stderr,
        )
        return 1
    except EOFError:
        print(
            "nectar: the input ended before the answer (give --url, and the key with --key-stdin)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as interrupted:
        print(f"nectar: {interrupted or 'interrupted'}", file=sys.stderr)
        return 130


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="nectar", description="Nectar Studio workflows as code, over the public API."
    )
    commands = top.add_subparsers(required=True, metavar="COMMAND")

    login_command = commands.add_parser("login", help="store the server URL and an API key")
    login_command.add_argument("--url", help="core's address, e.g. https://core.example.com")
    login_command.add_argument(
        "--key-stdin", action="store_true", help="read the key from stdin, not a prompt"
    )
    login_command.set_defaults(command=login)

    pull_command = commands.add_parser("pull", help="write the organization's objects into DIR")
    pull_command.add_argument("directory", type=Path, metavar="DIR")
    pull_command.set_defaults(command=pull)

    push_command = commands.add_parser("push", help="make the organization match DIR")
    push_command.add_argument("directory", type=Path, metavar="DIR")
    push_command.add_argument("--dry-run", action="store_true", help="print the changes, send none")
    push_command.add_argument("--prune", action="store_true", help="also remove what DIR no longer has")
    push_command.set_defaults(command=push)

    call_command = commands.add_parser(
        "call", help="call an /api/v1 path or one of the organization's endpoints"
    )
    call_command.add_argument("method", type=str.upper, metavar="METHOD")
    call_command.add_argument(
        "path", metavar="PATH", help="/api/v1/... or an endpoint's path, e.g. /orders/7"
    )
    call_command.add_argument("-d", "--data", help="JSON body, @FILE, or - for stdin")
    call_command.set_defaults(command=call)

    runs_command = commands.add_parser("runs", help="list, show or follow runs")
    runs_actions = runs_command.add_subparsers(required=True, metavar="ACTION")
    runs_list = runs_actions.add_parser("list", help="the newest runs")
    runs_list.add_argument("--workflow", help="only this workflow's runs (its name)")
    runs_list.add_argument("--status", help="only runs with this status")
    runs_list.add_argument("--limit", type=int, default=20)
    runs_list.set_defaults(command=runs_list_command)
    for name, command, help_text in (
        ("show", runs_show, "one run, its input, output and steps (JSON)"),
        ("tail", runs_tail, "follow a run, printing each step as it ends, until the run ends"),
    ):
        action = runs_actions.add_parser(name, help=help_text)
        action.add_argument("run_id", metavar="RUN")
        action.set_defaults(command=command)
    return top


def progress(message: str) -> None:
    print(f"… {shown(message)}", file=sys.stderr, flush=True)


def connect(settings: CliSettings) -> Api:
    """The API as configured: NECTAR_URL and NECTAR_API_KEY first, then the login file."""
    stored = read_login(settings.config_file)
    url = settings.url or stored.get("url")
    key = settings.api_key or stored.get("api_key")
    if not url or not key:
        raise CliError("Not logged in: run `nectar login`, or set NECTAR_URL and NECTAR_API_KEY.")
    return Api(url, key)


def read_login(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise CliError(
            f"{path}: cannot read the login ({type(error).__name__}); run `nectar login` again."
        ) from None
    return stored if isinstance(stored, dict) else {}


def login(args, settings: CliSettings) -> int:
    url = args.url or settings.url or input("Core URL (e.g. https://core.example.com): ").strip()
    if args.key_stdin:
        key = sys.stdin.readline().strip()
    else:
        key = settings.api_key or _prompt_key()
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{url!r} is not an http(s) URL.")
    if not key:
        raise CliError("No API key given.")
    organization = Api(url, key).get("organization")  # proves the URL and key before storing them
    write_login(settings.config_file, {"url": url.rstrip("/"), "api_key": key})
    name = shown(str(organization.get("name", "the organization")))
    print(f"Logged in to {name} at {url} (saved in {settings.config_file}).")
    return 0


def _prompt_key() -> str:
    import getpass

    return getpass.getpass("API key (nsk_..., not echoed): ").strip()


def write_login(path: Path, values: dict) -> None:
    """Writes the login file readable by its owner only: created 0600, never wider for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), stat.S_IRUSR | stat.S_IWUSR)
        file.write(pretty(values))
    os.replace(temporary, path)


def pull(args, settings: CliSettings) -> int:
    counts, changed = sync.pull(connect(settings), args.directory, progress)
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    print(f"Pulled {summary} into {args.directory} ({changed} file(s) changed).")
    return 0


def push(args, settings: CliSettings) -> int:
    api = connect(settings)
    sync.push(
        api,
        args.directory,
        prune=args.prune,
        dry_run=args.dry_run,
        given=sync.FromEnvironment(settings.connection_credentials, settings.secrets),
        out=lambda line: print(shown(line)),
        progress=progress,
    )
    return 0


def call(args, settings: CliSettings) -> int:
    api = connect(settings)
    data = _body(args.data)
    path = args.path if args.path.startswith("/") else "/" + args.path
    if not path.startswith("/api/"):
        path = f"/e/{api.get('organization')['id']}{path}"  # one of the organization's endpoints
    response = api.send(args.method, path, data=data)
    try:
        print(shown(pretty(response.json())), end="")
    except ValueError:
        print(shown(response.text))
    if not response.ok:
        print(
            f"nectar: {args.method} {path} answered {response.status_code} {response.reason}", file=sys.stderr
        )
        return 1
    return 0


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "-":
        text = sys.stdin.read()
    elif data.startswith("@"):
        try:
            text = Path(data[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise CliError(f"{data[1:]}: cannot read it ({error.strerror}).") from None
    else:
        text = data
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"the body is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})."
        ) from None
    return text.encode()


def runs_list_command(args, settings: CliSettings) -> int:
    api = connect(settings)
    names = {w["id"]: w["name"] for w in api.get("workflows")["items"]}
    params = {"limit": str(args.limit)}
    if args.status:
        params["status"] = args.status
    if args.workflow:
        ids = [i for i, name in names.items() if name == args.workflow]
        if not ids:
            raise CliError(f"No workflow named {args.workflow!r} in this organization.")
        params["workflow_id"] = ids[0]
    for run in api.get("runs", **params)["items"]:
        name = names.get(run["workflow_id"], run["workflow_id"])
        print(shown(f"{run['id']}  {run['status']:<9}  {run['trigger']:<8}  {run['queued_at']}  {name}"))
    return 0


def runs_show(args, settings: CliSettings) -> int:
    print(shown(pretty(_run(connect(settings), args.run_id))), end="")
    return 0


def runs_tail(args, settings: CliSettings) -> int:
    """Prints each step once it is recorded and the run's status when it changes, until it ends."""
    api = connect(settings)
    shown_steps, shown_status = 0, None
    while True:
        run = _run(api, args.run_id)
        for step in run.get("steps", [])[shown_steps:]:
            print(shown(json.dumps(step, sort_keys=True, ensure_ascii=False)), flush=True)
        shown_steps = len(run.get("steps", []))
        if run["status"] != shown_status:
            shown_status = run["status"]
            progress(f"run {run['id']} is {shown_status}")
        if run["status"] in FINISHED:
            if run.get("error"):
                print(shown(f"error: {run['error']}"), flush=True)
            return 0 if run["status"] == "succeeded" else 1
        time.sleep(TAIL_POLL_SECONDS)


def _run(api: Api, run_id: str) -> dict:
    try:
        return api.get(f"runs/{run_id}")
    except ApiRefused as refused:
        if refused.status == 404:
            raise CliError(f"No run {run_id} in this organization.") from None
        raise


if __name__ == "__main__":
    sys.exit(main())
