"""Expressions in workflows: JMESPath, a query language with no side effects and no access to
anything but the data it is given (never `eval`). Templates embed expressions in `{{ ... }}`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.S)
_WHOLE = re.compile(r"^\s*\{\{(.*?)\}\}\s*$", re.S)
_options = jmespath.Options(dict_cls=dict)


class ExpressionError(Exception):
    """An expression that does not parse or fails on the data."""


def expressions_in(template: str) -> Iterator[str]:
    for match in _TEMPLATE.finditer(template):
        yield match.group(1).strip()


def evaluate(expression: str, context: dict) -> Any:
    try:
        return jmespath.search(expression.strip(), context, options=_options)
    except JMESPathError as error:
        raise ExpressionError(f"{expression.strip()!r}: {error}") from None


def render(value: Any, context: dict) -> Any:
    """Fills templates in `value` (strings, lists and objects, recursively)."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole and "{{" not in whole.group(1):
            return evaluate(whole.group(1), context)
        return _TEMPLATE.sub(lambda m: _as_text(evaluate(m.group(1), context)), value)
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
    import json

    return json.dumps(value, separators=(",", ":"))
