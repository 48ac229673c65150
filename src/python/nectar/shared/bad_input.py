"""Input no service can use, refused once at the edge, before any view runs: text PostgreSQL cannot
hold (NUL, lone surrogates, bytes that are not UTF-8), JSON that is not data (NaN, Infinity, nesting
past MAX_JSON_DEPTH), a file where text is expected, and a body in a "charset" that is not one.

`create_service_app` runs `check_address` and `check_body` before every request of every service,
and Flask reads JSON with `loads_json` (StrictJSONProvider); code that reads a body itself (Stripe's
webhook, core's tenant endpoints) uses the same functions, so every body is judged by one set of
rules. Behind them, nectar.shared.database checks each value an ORM flush writes against its column."""

from __future__ import annotations

import codecs
import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.datastructures import MultiDict

from nectar.shared.rejection import InputRejected

# Far more than data needs, and inside what jsonb and JSON encoders take (orjson stops at 254).
MAX_JSON_DEPTH = 100
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str only ever alone: JSON's pairs decode whole
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


def refused_text(value: str) -> str | None:
    """Why `value` cannot be text in the database (PostgreSQL text holds no NUL, and UTF-8 has no
    lone surrogates), or None when it can."""
    if "\x00" in value:
        return "a NUL character (\\u0000), which no text may hold"
    if not value.isascii() and _LONE_SURROGATE.search(value):
        return "a lone surrogate (\\ud800 to \\udfff), which is not Unicode text"
    return None


def check_text(value: str, *, field: str | None = None, pointer: str | None = None, what: str = "") -> str:
    """`value`, or InputRejected naming where it came from when it cannot be stored as text."""
    reason = refused_text(value)
    if reason is not None:
        where = what or (f"The field “{_printable(field)}”" if field is not None else "The input")
        raise InputRejected(f"{where} holds {reason}.", path=pointer, field=field, status=400)
    return value


def loads_json(raw: bytes | str, what: str = "The body") -> Any:
    """JSON as every service reads it: UTF-8 (or -16, -32) text holding data jsonb can store, so no
    NaN or Infinity, no nesting deeper than MAX_JSON_DEPTH and no NUL or lone surrogate in a string
    or key. Raises InputRejected with a JSON Pointer to the first offence."""
    try:
        text = raw.decode(json.detect_encoding(raw)) if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InputRejected(f"{what} is not UTF-8 text.", status=400) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InputRejected(f"{what} nests deeper than {MAX_JSON_DEPTH} levels.", status=400) from None
    except ValueError as error:
        raise InputRejected(f"{what} is not valid JSON: {error}.", status=400) from None
    _check_tree(value, what)
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # json.loads would make one per call


def _check_tree(value: Any, what: str) -> None:
    """Depth (counted as levels: the value itself is level 1, its items and keys level 2) and text,
    walked without recursion. A pointer is spelled out only for what is refused: every call to a
    tenant endpoint walks its body here."""
    pending: list[tuple[Any, tuple, int]] = [(value, (), 1)]
    while pending:
        item, path, level = pending.pop()
        if level > MAX_JSON_DEPTH:
            raise InputRejected(
                f"{what} nests deeper than {MAX_JSON_DEPTH} levels.", path=_pointer(path), status=400
            )
        if isinstance(item, str):
            if refused_text(item) is not None:
                check_text(item, pointer=_pointer(path), what=f"The value at {_pointer(path) or '/'}")
        elif isinstance(item, dict):
            for key, child in item.items():
                if refused_text(key) is not None:
                    where = _pointer((*path, key))
                    check_text(key, pointer=where, what=f"The name of the member at {where}")
                pending.append((child, (*path, key), level + 1))
        elif isinstance(item, list):
            pending.extend((child, (*path, index), level + 1) for index, child in enumerate(item))


def _pointer(path: tuple) -> str:
    """RFC 6901, printable: a NUL or lone surrogate in a key is shown as its escape."""
    return "".join("/" + _printable(str(part)).replace("~", "~0").replace("/", "~1") for part in path)


def _printable(value: str | None) -> str:
    return "".join(f"\\u{ord(c):04x}" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value or "")


def text_charset(mimetype_params: dict[str, str]) -> str:
    """The text encoding a body declares: UTF-8 when none, or one Python does not know (read rather
    than refused); 415 for a codec that is not a text encoding (base64, hex, rot13, zlib)."""
    name = mimetype_params.get("charset")
    if not name:
        return "utf-8"
    try:
        codec = codecs.lookup(name)
    except LookupError:
        return "utf-8"
    if not codec._is_text_encoding:  # noqa: SLF001 - the codecs module's own mark for str <-> bytes codecs
        raise InputRejected(
            f"“{_printable(name)}” is not a text encoding; send UTF-8.", status=415, field="Content-Type"
        )
    return codec.name


def decode_text(raw: bytes, mimetype_params: dict[str, str], what: str = "The body") -> str:
    """A text body in its declared charset (undecodable bytes replaced), checked as text."""
    charset = text_charset(mimetype_params)
    try:
        text = raw.decode(charset, errors="replace")
    except (UnicodeError, ValueError):  # a codec without "replace" (idna) that meets bytes it refuses
        raise InputRejected(
            f"{what} cannot be read as {charset}.", status=415, field="Content-Type"
        ) from None
    return check_text(text, what=what)


def check_address(request: Request) -> None:
    """The path, the query and the headers: UTF-8 text without NUL (a header is Latin-1 by WSGI)."""
    environ = request.environ
    path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    try:  # WSGI hands both over as Latin-1; what is ASCII and unescaped is UTF-8 already
        if not path.isascii():
            path.encode("latin-1").decode("utf-8")
        if "%" in query or not query.isascii():
            unquote_to_bytes(query).decode("utf-8")
    except UnicodeError:
        raise InputRejected("The address is not UTF-8 text.", field="address", status=400) from None
    check_text(request.path, field="path", what="The address")
    _check_fields(request.args, "query parameter")
    for key, value in environ.items():  # the headers, read as cheaply as core's tenant calls need
        if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
            name = key[5:].replace("_", "-").title()
            raise InputRejected(f"The header {name} holds a NUL character.", field=name, status=400)


def check_body(request: Request) -> None:
    """A form's fields, a JSON body (parsed once here; the views' get_json reads the cache), or a
    text body in its charset."""
    if not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", ""):
        return
    text_charset(request.mimetype_params)
    if request.mimetype == _FORM:
        try:  # werkzeug would replace what is not UTF-8; a form is UTF-8 (HTML's rule), so refuse it
            unquote_to_bytes(request.get_data().replace(b"+", b" ")).decode("utf-8")
        except UnicodeError:
            raise InputRejected("The form is not UTF-8 text.", field="body", status=400) from None
        _check_fields(request.form, "field")
    elif request.mimetype == _MULTIPART:
        if request.files:
            name = next(iter(request.files))
            raise InputRejected(
                f"The field “{_printable(name)}” is a file; this address takes text only.",
                field=name,
                status=400,
            )
        _check_fields(request.form, "field")
    elif request.is_json and request.get_data():
        request.get_json()
    elif request.mimetype.startswith("text/"):
        decode_text(request.get_data(), request.mimetype_params)


def _check_fields(fields: MultiDict, kind: str) -> None:
    for name, value in fields.items(multi=True):
        check_text(name, field=name, what=f"A {kind} name")
        check_text(value, field=name, what=f"The {kind} “{_printable(name)}”")


# PostgreSQL's integer (int4): version numbers and other counts a client may name.
MAX_INTEGER = 2**31 - 1
# The longest email address any form or API takes (RFC 3696's 64 + 1 + 255, rounded as the columns are).
MAX_EMAIL_LENGTH = 320


class JsonObject(dict):
    """A JSON body's object, whose fields a view reads with their kind and limits checked: a field
    that is not what it should be is a InputRejected (422) naming it by JSON Pointer."""

    def text(self, name: str, *, max_length: int, default: str | None = None) -> str | None:
        value = self.get(name, default)
        if value is not None and not isinstance(value, str):
            raise InputRejected(f"{name} must be a string.", status=422, path=_pointer((name,)))
        if value is not None and len(value) > max_length:
            raise InputRejected(
                f"{name} is at most {max_length:,} characters.", status=422, path=_pointer((name,))
            )
        return value

    def whole_number(self, name: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            detail = f"{name} must be a whole number from {minimum:,} to {maximum:,}."
            raise InputRejected(detail, status=422, path=_pointer((name,)))
        return value


class StrictJSONProvider(DefaultJSONProvider):
    """The app's JSON (Flask reads request bodies with it): loads_json. Session cookies pass through
    it too, harmlessly: they hold this app's own signed data."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_json(s)


class CheckedRequest(Request):
    """Flask's request, letting loads_json's InputRejected through (Flask would make it a bare 400)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if isinstance(e, InputRejected):
            raise e
        return super().on_json_loading_failed(e)
