"""The CLI's HTTP client for core's public API: every failure becomes one line a person can act on."""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin

import requests

TIMEOUT_SECONDS = 30


class CliError(Exception):
    """Stops the command: the message is printed as is (one line where possible), the exit status is 1."""


class ApiRefused(CliError):
    """The API answered with an error status; `status` and the problem document are kept."""

    def __init__(self, message: str, status: int, problem: dict):
        super().__init__(message)
        self.status, self.problem = status, problem


class Api:
    """Core's /api/v1 (and an organization's endpoints) at `base_url`, as the holder of `api_key`."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url.rstrip("/") + "/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers["User-Agent"] = "nectar-cli"
        self.session.trust_env = False  # no .netrc: the key is the only credential sent

    def get(self, path: str, **params) -> dict:
        return self.json("GET", path, params=params or None)

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.json("POST", path, body=body if body is not None else {})

    def put(self, path: str, body: dict) -> dict:
        return self.json("PUT", path, body=body)

    def patch(self, path: str, body: dict) -> dict:
        return self.json("PATCH", path, body=body)

    def delete(self, path: str) -> None:
        self.json("DELETE", path)

    def json(self, method: str, path: str, *, body=None, params=None) -> dict:
        """The JSON answer of an /api/v1 call (`path` relative to /api/v1/); ApiRefused otherwise."""
        response = self.send(method, "api/v1/" + path.lstrip("/"), body=body, params=params)
        if not response.ok:
            raise refusal(method, response)
        try:
            return response.json() if response.content else {}
        except ValueError:
            raise CliError(
                f"{response.url} did not answer with JSON: is {self.base_url} core's address?"
            ) from None
        except RecursionError:
            raise CliError(
                f"{response.url}'s answer is not what core answers (JSON nested past any use): "
                f"is {self.base_url} core's address?"
            ) from None

    def send(self, method: str, path: str, *, body=None, params=None, data: bytes | None = None):
        """The raw response to `method path` (relative to the base URL); CliError when unreachable."""
        url = urljoin(self.base_url, path.lstrip("/"))
        try:
            return self.session.request(
                method,
                url,
                json=body,
                data=data,
                params=params,
                timeout=TIMEOUT_SECONDS,
                headers={"Content-Type": "application/json"} if data is not None else None,
            )
        except requests.exceptions.Timeout:
            raise CliError(f"{self.base_url} did not answer within {TIMEOUT_SECONDS} seconds.") from None
        except requests.exceptions.RequestException as error:
            reason = type(error).__name__
            raise CliError(
                f"Cannot reach {self.base_url} ({reason}): is the URL right and core running?"
            ) from None


def refusal(method: str, response) -> ApiRefused:
    """One line for an error answer: what was refused and why, naming a missing scope."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    where = f"{method} {response.request.path_url.split('?')[0]}"
    detail = problem.get("detail") or problem.get("title") or response.reason or "error"
    if response.status_code == 401:
        message = f"The API key was refused (401): {detail} Run `nectar login` with a valid key."
    elif response.status_code == 403 and problem.get("required_scope"):
        message = f"The API key lacks the scope {problem['required_scope']!r} that {where} needs (403)."
    else:
        message = f"{where} failed ({response.status_code}): {detail}"
        problems = problem_lines(problem.get("errors"))
        if problems:
            message += " " + "; ".join(problems)
    return ApiRefused(message, response.status_code, problem)


def problem_lines(errors) -> list[str]:
    """The `errors` of a problem document (a list of {path, message} or a map of field to messages)."""
    if isinstance(errors, list):
        return [
            f"{e.get('path', '')}: {e.get('message', '')}" if isinstance(e, dict) else str(e) for e in errors
        ]
    if isinstance(errors, dict):
        return [
            f"{field}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for field, v in errors.items()
        ]
    return []


# C0 and C1 control characters but tab and line feed: terminal escape sequences start with them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """`text` as the CLI writes it to a terminal: what a server sends is written by others (a run's
    error can hold an anonymous caller's input), so control characters are shown escaped (\\x1b),
    never obeyed."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def pretty(value) -> str:
    """JSON as the CLI prints and stores it: sorted keys, two-space indent, a final newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def json_object(text: str, source: str) -> dict:
    """`text` parsed as a JSON object; CliError naming `source` (a file, a variable), line and column."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{source}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}.") from None
    except RecursionError:
        raise CliError(f"{source}:1: invalid JSON: nested deeper than Python reads.") from None
    except ValueError as error:  # a number of more than 4300 digits
        raise CliError(f"{source}:1: invalid JSON: {str(error).split(';')[0]}.") from None
    if not isinstance(value, dict):
        raise CliError(f"{source}:1: expected a JSON object, found {type(value).__name__}.")
    return value
