"""Expressions in workflows: JMESPath, a query language with no side effects and no access to
anything but the data it is given (never `eval`). Templates embed expressions in `{{ ... }}`."""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import jmespath
import orjson
from jmespath import functions, visitor
from jmespath.exceptions import JMESPathError

from nectar.core.workflows import time_limit
from nectar.shared.bad_input import MAX_JSON_DEPTH

_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str only ever alone: JSON's pairs are decoded whole
# The largest value a run may build (characters of text, as JSON). A template or expression that
# doubles a value on every step would otherwise exhaust memory long before any step limit.
MAX_VALUE_SIZE = 1_000_000
# The deepest a value may nest: as deep as any JSON body may (far more than data needs, and well
# inside what JSON encoders and jsonb take).
MAX_VALUE_DEPTH = MAX_JSON_DEPTH
# The most nodes one evaluation may visit: each visit can build a list as long as those before it
# (`[@, @][]` doubles one), so this bounds the memory an expression takes as well as its time.
# Loops over a thousand items with a dozen nodes each take a hundredth of it.
MAX_EXPRESSION_VISITS = 1_000_000
TIME_CHECK_EVERY = 1024  # visits between checks of the run's time limit


class ExpressionError(Exception):
    """An expression that does not parse or fails on the data."""


def value_extent(value: Any, limit: int = MAX_VALUE_SIZE) -> tuple[int, int]:
    """About how many characters `value` takes as JSON, and how many levels it nests; stops
    counting just past `limit` characters, so even a value built of shared references (x = [x, x]
    forty times) costs at most about `limit` steps."""
    size, depth, level = 0, 0, [value]
    while level and size <= limit:
        depth += 1
        deeper: list = []
        for item in level:
            if isinstance(item, str):
                size += len(item) + 2
            elif isinstance(item, dict):
                size += 2 + len(item)
                deeper.extend(item.keys())
                deeper.extend(item.values())
            elif isinstance(item, list | tuple):
                size += 2 + len(item)
                deeper.extend(item)
            else:
                size += 8
        level = deeper
    return size, depth


def check_size(value: Any, what: str = "a value") -> Any:
    size, depth = value_extent(value)
    if size > MAX_VALUE_SIZE:
        raise ExpressionError(f"{what} would be larger than {MAX_VALUE_SIZE:,} characters; refused")
    if depth > MAX_VALUE_DEPTH:
        raise ExpressionError(f"{what} would nest deeper than {MAX_VALUE_DEPTH} levels; refused")
    return value


def json_safe(value):
    """What jsonb can store: NaN and infinities become null, NUL characters are dropped, and lone
    surrogates (which "\\ud800" in JSON makes) become U+FFFD."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def journaled(value: Any) -> Any:
    """`value` as a run's journal gives it back: its JSON text read again, keys in their order,
    NULs, NaN and lone surrogates gone. A durable step's first activation goes on with this, so
    every replay sees the same value."""
    return json.loads(json_text(json_safe(value)))


def json_bytes(value: Any) -> bytes:
    """Compact JSON (UTF-8) of a workflow value, with UUIDs, datetimes (ISO 8601) and anything else
    as text, NaN and infinities as null. orjson writes it several times faster than json, which
    writes the same for what orjson refuses (integers past 64 bits, lone surrogates)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        text = json.dumps(json_safe(value), default=_as_json_text, ensure_ascii=False, separators=(",", ":"))
        return text.encode()


def _as_json_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def json_text(value: Any) -> str:
    return json_bytes(value).decode()


class _BoundedFunctions(functions.Functions):
    """JMESPath's functions, with the two that can build large text checked first."""

    @functions.signature({"types": ["string"]}, {"types": ["array-string"]})
    def _func_join(self, separator, array):
        check_size(array, "join()'s result")
        check_size(separator * len(array), "join()'s result")
        return separator.join(array)

    @functions.signature({"types": []})
    def _func_to_string(self, arg):
        return (
            arg if isinstance(arg, str) else super()._func_to_string(check_size(arg, "to_string()'s result"))
        )


class _Visits(threading.local):
    count = 0


class _BoundedInterpreter(visitor.TreeInterpreter):
    """JMESPath's interpreter, counting the nodes each evaluation on a thread visits: every
    TIME_CHECK_EVERY it checks the time limit, and past MAX_EXPRESSION_VISITS it stops."""

    def __init__(self, options: jmespath.Options):
        super().__init__(options)
        self.visits = _Visits()

    def visit(self, node, *args, **kwargs):
        visits = self.visits.count = self.visits.count + 1
        if visits % TIME_CHECK_EVERY == 0:
            if visits > MAX_EXPRESSION_VISITS:
                raise ExpressionError(
                    f"an expression took more than {MAX_EXPRESSION_VISITS:,} steps; refused"
                )
            time_limit.check()
        method = self._method_cache.get(node["type"])
        if method is None:  # as Visitor.visit
            method = self._method_cache[node["type"]] = getattr(
                self, f"visit_{node['type']}", self.default_visit
            )
        return method(node, *args, **kwargs)


# One interpreter for every evaluation: it keeps no state between searches but its counts (one per
# thread), and making one per search (as ParsedResult.search does) rebuilds its method cache each time.
_interpreter = _BoundedInterpreter(jmespath.Options(dict_cls=dict, custom_functions=_BoundedFunctions()))


def _templates(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, expression) of each `{{ ... }}` in `text`, each ending at the first `}}` after
    its `{{`. In one pass: the pattern `\\{\\{(.*?)\\}\\}` would rescan to the end from every `{{`
    with no `}}` after it, which is quadratic (a body of 20,000 `{{` took 11 s)."""
    start = text.find("{{")
    while start != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            return
        yield start, end + 2, text[start + 2 : end]
        start = text.find("{{", end + 2)


def _whole_template(text: str) -> str | None:
    """The expression when `text` is one `{{ ... }}` (with spaces around it at most), else None."""
    text = text.strip()
    return text[2:-2] if len(text) >= 4 and text.startswith("{{") and text.endswith("}}") else None


def template_parts(template: str) -> Iterator[tuple[int, str]]:
    """(offset, expression) of each `{{ ... }}` in `template`, the offset being where the
    expression's text starts: an error in it can point at its place in the template."""
    for start, _end, expression in _templates(template):
        yield start + 2, expression


@functools.lru_cache(maxsize=4096)  # endpoint calls evaluate the same few expressions every time
def compiled(expression: str):
    try:
        return jmespath.compile(expression)
    except RecursionError:  # jmespath's parser recurses once per nested ( or !
        raise ExpressionError("the expression nests too deeply") from None


def evaluate(expression: str, context: dict) -> Any:
    """The expression's value over `context`. Counts against the thread's time limit
    (time_limit.py), which raises TimeLimitExceeded past it."""
    _interpreter.visits.count = 0
    try:
        return _interpreter.visit(compiled(expression.strip()).parsed, context)
    except JMESPathError as error:
        raise ExpressionError(f"{expression.strip()!r}: {error}") from None


def render(value: Any, context: dict) -> Any:
    """Fills templates in `value` (strings, lists and objects, recursively)."""
    if isinstance(value, str):
        whole = _whole_template(value)
        if whole is not None and "{{" not in whole:
            return evaluate(whole, context)
        parts, size, last = [], 0, 0
        for start, end, expression in _templates(value):
            text = _as_text(evaluate(expression, context))
            size += len(text) + start - last
            if size > MAX_VALUE_SIZE:
                raise ExpressionError(f"the text would be larger than {MAX_VALUE_SIZE:,} characters; refused")
            parts += [value[last:start], text]
            last = end
        return "".join(parts) + value[last:]
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json_text(check_size(value, "the text"))
