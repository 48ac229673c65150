"""Every environment variable is read in nectar/shared/config.py and listed in the README.

The source tree is read as syntax (ast), so no spelling of `os.environ` escapes: an alias
(`import os as o`, `from os import environ`), a subscript, `.get`, or passing it to a function.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nectar.shared import config
from nectar.shared.config import Role, Service

SOURCE = Path("src/python/nectar")
CONFIG = SOURCE / "shared/config.py"
README = Path("README.md")
ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
ENV_HELPERS = {"env_str", "env_int", "env_bool"}
# Modules that must touch the process environment as a whole, and why. Reading one variable is
# never a reason: that goes through shared/config.py.
ALLOWED = {
    # Starts the embedded server and writes its URLs into the environment, for this process's
    # settings and the processes it starts; gives the server's subprocess the environment.
    "shared/embedded_postgres.py": "writes the embedded database's URLs; passes the environment on",
    # The dev launcher copies the environment, adds the run's tokens and ports, and hands it to
    # the three services it starts.
    "devstack/main.py": "copies the environment for the services it starts",
}


def environment_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) for every use of the process environment or of an env_* reader in `tree`."""
    os_names = {"os"}
    direct = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {alias.asname or alias.name for alias in node.names if alias.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix"):
            for alias in node.names:
                if alias.name in ENVIRONMENT_NAMES:
                    direct[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module == "nectar.shared.config":
            for alias in node.names:
                if alias.name in ENV_HELPERS:
                    yield node.lineno, f"imports {alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            yield node.lineno, f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.Name) and node.id in direct:
            yield node.lineno, f"{direct[node.id]} (from os)"
        elif isinstance(node, ast.Attribute) and node.attr in ENV_HELPERS:
            yield node.lineno, f"calls {node.attr}"


def modules() -> list[Path]:
    found = sorted(SOURCE.rglob("*.py"))
    assert len(found) > 100, f"the source tree is not where the test looks ({SOURCE.resolve()})"
    return found


def test_only_shared_config_reads_the_environment():
    offenders = []
    used_by_allowed = set()
    for path in modules():
        relative = path.relative_to(SOURCE).as_posix()
        if relative == "shared/config.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        uses = list(environment_uses(tree))
        if relative in ALLOWED and any(what.startswith("os.") for _line, what in uses):
            used_by_allowed.add(relative)
            # Allowed to hand the environment on as a whole, never to read one variable from it.
            uses = [
                (line, what) for line, what in uses if not what.startswith("os.") or reads_one(tree, line)
            ]
        offenders += [f"{relative}:{line}: {what}" for line, what in uses]
    assert offenders == [], "read the environment in nectar/shared/config.py instead:\n" + "\n".join(
        offenders
    )
    assert used_by_allowed == set(ALLOWED), "an allowed module no longer needs it: shorten ALLOWED"


def reads_one(tree: ast.AST, line: int) -> bool:
    """Whether the environment is subscripted for reading, or asked with .get / `in`, on `line`."""
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) != line:
            continue
        target = getattr(node, "value", None) if isinstance(node, ast.Subscript) else None
        if target is not None and isinstance(node.ctx, ast.Load) and _is_environ(target):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("get", "pop", "setdefault") and _is_environ(node.func.value):
                return True
        if isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            return True
        if isinstance(node, ast.Attribute) and node.attr in ("getenv", "getenvb"):
            return True
    return False


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("environ", "environb")


@pytest.mark.parametrize(
    "source, found",
    [
        ("import os\nos.environ['X']", ["os.environ"]),
        ("import os as o\no.getenv('X')", ["o.getenv"]),
        ("from os import environ as e\ne.get('X')", ["environ (from os)"]),
        ("from os import getenv\nvalue = (\n  getenv('X'))", ["getenv (from os)"]),
        ("from nectar.shared.config import env_str\nenv_str({}, 'X')", ["imports env_str"]),
        ("from nectar.shared import config\nconfig.env_int({}, 'X', 1)", ["calls env_int"]),
        ("import os\nos.path.join('a', 'b')\nenviron = {}\nenviron.get('X')", []),
    ],
)
def test_the_scan_sees_every_spelling(source, found):
    assert [what for _line, what in environment_uses(ast.parse(source))] == found


class RecordingEnviron(dict):
    """An environment that remembers every variable asked for."""

    def __init__(self, values: dict[str, str]):
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.asked.add(name)
        return super().__contains__(name)


def variables_read_by_config(tmp_path) -> set[str]:
    urls = {role.url_variable: f"postgresql://{role}:pw@127.0.0.1:5432/nectar" for role in Role}
    environ = RecordingEnviron({**urls, "NECTAR_VAR_DIR": str(tmp_path)})
    for service in Service:
        config.load_settings(service, environ)
    config.load_serve_settings(environ)
    config.load_smtp_settings(environ)
    config.load_stripe_settings(environ)
    config.running_pex(environ)
    config.load_cli_settings(environ)
    return environ.asked


def test_every_variable_read_in_config_is_in_the_readme(tmp_path):
    read = variables_read_by_config(tmp_path)
    # Every name written out in config.py is among those the loaders above read: a new loader
    # must be added to variables_read_by_config, so its variables are checked too.
    tree = ast.parse(CONFIG.read_text())
    literal = {
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ENV_HELPERS
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
    }
    assert literal and literal <= read, f"not read by any loader the test runs: {sorted(literal - read)}"
    listed = set(re.findall(r"^\| *([^|]+)\|", configuration_section(), re.MULTILINE))
    listed = {name for cell in listed for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    assert read - listed == set(), f"add these to the README's configuration table: {sorted(read - listed)}"


def configuration_section() -> str:
    text = README.read_text()
    start = text.index("\n## Configuration")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]
