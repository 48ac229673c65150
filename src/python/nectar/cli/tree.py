"""The directory `pull` writes and `push` reads: one JSON file per object, in a folder per kind,
keys sorted and files named after the object, so a git diff shows what changed and nothing else.

    workflows/<name>.json    {"name", "description", "definition"}
    endpoints/<METHOD>_<path>.json  {"method", "path", "workflow" (its name), "auth", ...}
    connections/<name>.json  {"name", "service_key", "config", "workflow" (a webhook's)}  (never credentials)
    variables/<NAME>.json    {"name", "value"}  (without "value": each organization keeps its own)
    secrets/<NAME>.json      {"name"}  (that the organization needs it; never its value)

Objects are matched by name (an endpoint by method and path), never by id, so a directory pulled
from one organization can be pushed to another.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from nectar.cli.client import CliError, json_object, pretty

KINDS = ("variables", "secrets", "connections", "workflows", "endpoints")
# What each kind's file must hold, and what it may.
REQUIRED = {
    "variables": {"name"},
    "secrets": {"name"},
    "workflows": {"name", "definition"},
    "endpoints": {"method", "path", "workflow"},
    "connections": {"name", "service_key"},
}
OPTIONAL = {
    "variables": {"value"},
    "secrets": set(),
    "workflows": {"description"},
    "endpoints": {"auth", "request_schema", "description"},
    "connections": {"config", "workflow"},
}


def key_of(kind: str, item: dict) -> str:
    """What an object is matched by: its name, or an endpoint's `METHOD path`."""
    if kind == "endpoints":
        return f"{str(item['method']).upper()} {item['path']}"
    return item["name"]


def file_stem(key: str) -> str:
    """A file name for `key`: readable, and different for keys that would otherwise collide."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", key.replace(" ", "_")).strip("-._") or "item"
    if stem != key:
        stem += "-" + hashlib.sha256(key.encode()).hexdigest()[:6]
    return stem


def write_tree(directory: Path, objects: dict[str, list[dict]]) -> int:
    """Writes every object's file and removes the JSON files of objects that no longer exist;
    returns how many files changed."""
    changed = 0
    for kind in KINDS:
        folder = directory / kind
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {}
        for item in objects.get(kind, []):
            wanted[f"{file_stem(key_of(kind, item))}.json"] = pretty(item)
        for stale in folder.glob("*.json"):
            if stale.name not in wanted:
                stale.unlink()
                changed += 1
        for name, text in sorted(wanted.items()):
            path = folder / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                changed += 1
    return changed


@dataclass(frozen=True)
class Item:
    """One object read from the directory, and the file it came from (for messages)."""

    kind: str
    key: str
    body: dict
    file: Path


def read_tree(directory: Path) -> dict[str, dict[str, Item]]:
    """Every object in `directory` by kind and key; CliError naming the file (and line) of the
    first unreadable, malformed or duplicated one. Reads everything before anything is sent."""
    if not directory.is_dir():
        raise CliError(f"{directory}: no such directory (run `nectar pull {directory}` first).")
    tree: dict[str, dict[str, Item]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        for path in sorted((directory / kind).glob("*.json")):
            body = _load(path)
            _check_fields(kind, path, body)
            key = key_of(kind, body)
            if key in tree[kind]:
                raise CliError(f"{path}: {kind[:-1]} {key!r} is also defined in {tree[kind][key].file}.")
            tree[kind][key] = Item(kind, key, body, path)
    return tree


def _load(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"{path}: cannot read it ({error}).") from None
    return json_object(text, str(path))


def _check_fields(kind: str, path: Path, body: dict) -> None:
    missing = sorted(REQUIRED[kind] - body.keys())
    unknown = sorted(body.keys() - REQUIRED[kind] - OPTIONAL[kind])
    if missing or unknown:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        raise CliError(
            f"{path}: {'; '.join(parts)} (a {kind[:-1]} has {', '.join(sorted(REQUIRED[kind] | OPTIONAL[kind]))})."
        )
    texts = [f for f in ("name", "service_key", "method", "path", "workflow") if f in body]
    for field in texts:
        if not isinstance(body[field], str) or not body[field].strip():
            raise CliError(f"{path}: {field} must be a non-empty string.")
    if kind == "variables" and not isinstance(body.get("value", ""), str):
        raise CliError(f"{path}: value must be a string (variables hold text).")
    if kind == "workflows" and not isinstance(body["definition"], dict):
        raise CliError(f"{path}: definition must be a JSON object (a workflow document).")
    if kind == "connections" and not isinstance(body.get("config", {}), dict):
        raise CliError(f"{path}: config must be a JSON object.")
