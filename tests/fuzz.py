"""Bad input sent to every route of a service, derived from its URL map, so a new route is fuzzed
the day it exists.

For each rule and method: the address with real ids for its variables, the fields of the form that
posts to it (read from the service's own pages) or, for a JSON route, a vocabulary of the fields the
API reads; then NUL characters, lone surrogates and invalid UTF-8, over-long strings, a file where
text is expected, JSON nested a thousand levels deep, NaN and Infinity, and odd charsets, in the
path, the query, the headers and the body.

`Fuzz.check` sends them in two phases and asserts: no answer is a 5xx (nor a 422 that only the
database's refusal produced); while sending what every route must refuse, no table gains or loses a
row (`table_counts`); and no request, whatever it was, stored an over-long value (`poison_stored`)."""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote_from_bytes, urlencode, urlsplit

import psycopg
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from nectar.shared.web import DATABASE_REFUSED

# Longer than any text field or tenant body accepts (blog bodies take 200,000 characters, tenant
# endpoints 256 KiB); in the address and headers, as long as gunicorn lets through (a request line
# of 4094 bytes, header fields of 8190).
LONG = "fuzz" * 75_000
LONG_LINE = "fuzz" * 1000
NUL = "a\x00b"
SURROGATE = "a\ud800b"
# What a client that encodes a lone surrogate as UTF-8 anyway (CESU) sends: not UTF-8 at all.
BAD_BYTES = b"a\xed\xa0\x80b"
DEEP = "[" * 1000 + "]" * 1000
CHARSETS = ("base64", "hex", "rot13", "utf-7", "x-no-such-charset")
QUERY_FIELDS = ("q", "next", "token", "page")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
STRONG_PASSWORD = "correct horse battery staple fuzz"
# Mutations a route may legitimately accept when it ignores the field (they are phase "bounded":
# the check is that the poison is never stored); every other mutation must be refused outright.
BOUNDED = ("long", "huge", "json-text")
# JSON as the text of a form field: text to a form, poison to a view that parses it.
JSON_TEXTS = {"nul": '{"a": "\\u0000"}', "NaN": '{"a": NaN}', "deep": '{"a": ' + DEEP + "}"}


@dataclass(frozen=True)
class Finding:
    """A request the service answered with a 5xx (or an exception that escaped it)."""

    method: str
    url: str
    mutation: str
    status: int
    detail: str

    def __str__(self) -> str:
        return f"{self.status} {self.method} {self.url[:120]} [{self.mutation}]: {self.detail[:200]}"


@dataclass
class FormField:
    name: str
    kind: str  # input type, "textarea" or "select"
    value: str = ""


@dataclass
class Form:
    action: str
    method: str
    fields: list[FormField] = field(default_factory=list)


class _FormReader(HTMLParser):
    """The forms of a page: action, method and named fields with their values as shown."""

    def __init__(self, page_url: str):
        super().__init__()
        self.page_url, self.forms, self._form, self._field = page_url, [], None, None

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = Form(
                attributes.get("action") or self.page_url, attributes.get("method", "get").upper()
            )
            self.forms.append(self._form)
        elif tag == "option" and self._field is not None and self._field.kind == "select":
            value = attributes.get("value", "")
            if "selected" in attributes or (not self._field.value and value):
                self._field.value = value
        elif self._form is None or not attributes.get("name"):
            return
        elif tag == "input":
            kind = attributes.get("type", "text").lower()
            if kind in ("submit", "button", "reset", "image") or (
                kind in ("checkbox", "radio") and "checked" not in attributes
            ):
                return
            self._form.fields.append(FormField(attributes["name"], kind, attributes.get("value", "")))
        elif tag in ("textarea", "select"):
            self._field = FormField(attributes["name"], tag)
            self._form.fields.append(self._field)

    def handle_data(self, data):
        if self._field is not None and self._field.kind == "textarea":
            self._field.value += data

    def handle_endtag(self, tag):
        if tag in ("textarea", "select"):
            self._field = None
        elif tag == "form":
            self._form = None


def forms_on(page: str, page_url: str) -> list[Form]:
    reader = _FormReader(page_url)
    reader.feed(page)
    return reader.forms


@dataclass
class Principal:
    """Who sends a request: a test client (with its cookies), headers it adds, and how to get a CSRF
    token for its session. `still_in()` says whether it is still signed in; `sign_in()` does it again;
    `sign(body)` gives the headers that sign a raw body (a webhook's)."""

    client: object
    headers: dict[str, str] = field(default_factory=dict)
    token_page: str | None = None
    still_in: Callable[[], bool] = lambda: True
    sign_in: Callable[[], None] = lambda: None
    sign: Callable[[bytes], dict[str, str]] | None = None  # headers that sign a raw body
    _token: str | None = None

    def csrf_token(self) -> str:
        if self._token is None and self.token_page:
            page = self.client.get(self.token_page, headers=self.headers).get_data(as_text=True)
            for form in forms_on(page, self.token_page):
                for form_field in form.fields:
                    if form_field.name == "csrf_token":
                        self._token = form_field.value
        return self._token or ""

    def renew(self) -> None:
        if not self.still_in():
            self.sign_in()
            self._token = None


@dataclass
class Fuzz:
    """Fuzzes `app`'s routes. `value_for(rule, name)` gives a real value for a URL variable (a route
    with a variable it does not know fails the test with a KeyError until it is named). `queries` adds
    a query string (a token, say) to an endpoint's address. `principal_for(rule)` chooses who sends a
    route's requests. `json_routes(rule)` says which routes take JSON bodies, whose fields come from
    `json_fields` (name: a valid value, or a callable making one). `extra_rules` are routes answered
    outside the URL map (core's tenant endpoints)."""

    app: object
    value_for: Callable[[Rule, str], str]
    principal_for: Callable[[Rule], Principal]
    queries: dict[str, str] = field(default_factory=dict)
    json_routes: Callable[[Rule], bool] = lambda rule: False
    json_fields: dict[str, object] = field(default_factory=dict)
    extra_rules: list[Rule] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    phase: str = "refused"
    _forms: dict[tuple[str, str], Form] = field(default_factory=dict)
    _address: int = 0

    def rules(self) -> Iterator[tuple[Rule, str]]:
        for rule in [*sorted(self.app.url_map.iter_rules(), key=lambda r: r.rule), *self.extra_rules]:
            if rule.endpoint in ("static", "shared_ui.favicon") or rule.endpoint.endswith(".static"):
                continue  # files from the package: no input reaches code (the only routes left out)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method

    def url_of(self, rule: Rule, **overrides: str) -> str:
        values = {name: self.value_for(rule, name) for name in rule.arguments if name not in overrides}
        return _join(
            rule.build(values | overrides, append_unknown=False)[1], self.queries.get(rule.endpoint, "")
        )

    def learn_forms(self) -> None:
        """Reads the forms of every page (GET route) as each route's principal sees it."""
        adapter = self.app.url_map.bind("localhost")
        for rule, method in self.rules():
            if method != "GET" or self.json_routes(rule):
                continue
            principal = self.principal_for(rule)
            principal.renew()
            url = self.url_of(rule)
            response = principal.client.get(url, headers=self._headers(principal))
            if "html" not in response.content_type:
                continue
            for form in forms_on(response.get_data(as_text=True), url):
                path = urlsplit(form.action).path
                with suppress(HTTPException):  # a form that posts elsewhere (another service's address)
                    endpoint, _values = adapter.match(path, method=form.method)
                    self._forms.setdefault((endpoint, form.method), form)

    def check(self, database) -> None:
        """Learns the forms, then sends every mutation and asserts what the service promises: no 5xx
        (nor a value only the database refused), no row stored by a refused request, and no over-long
        value stored by any."""
        self.learn_forms()  # before counting: a page may record that it was seen (admin's audit log)
        with database.server.connect_as_superuser(database.name) as conn:
            before = table_counts(conn)
            findings = self.run("refused")
            after = table_counts(conn)
            findings += self.run("bounded")
            stored = poison_stored(conn)
        print(f"{sum(self.statuses.values())} requests: {dict(sorted(self.statuses.items()))}")
        assert not findings, "\n".join(str(finding) for finding in findings)
        assert {
            table: (before.get(table), rows) for table, rows in after.items() if before.get(table) != rows
        } == {}
        assert stored == [], "an over-long value was stored"

    def run(self, phase: str) -> list[Finding]:
        """Sends the mutations of `phase`: "refused" (no route may accept them) or "bounded"
        (over-long strings and huge numbers); returns what answered 5xx."""
        self.phase, earlier = phase, len(self.findings)
        for rule, method in self.rules():
            principal = self.principal_for(rule)
            principal.renew()
            self._fuzz_route(rule, method, principal)
        return self.findings[earlier:]

    # -- one route ----------------------------------------------------------------------------------

    def _fuzz_route(self, rule: Rule, method: str, principal: Principal) -> None:
        url = self.url_of(rule)
        form = self._forms.get((rule.endpoint, method))
        base_query = "" if "?" in url or not form else urlsplit(form.action).query
        query_fields = [f.name for f in form.fields] if form and method == "GET" else []
        for name in rule.arguments:
            if rule._converters[name].__class__.__name__ in ("UnicodeConverter", "PathConverter"):
                for label, value in (("nul", "%00"), ("bad-utf8", "%ED%A0%80"), ("long", LONG_LINE)):
                    poisoned = self.url_of(rule, **{name: "POISON"}).replace("POISON", value)
                    self._send(principal, method, poisoned, f"path {name} {label}")
        for label, value in (("nul", NUL.encode()), ("bad-utf8", BAD_BYTES), ("long", LONG_LINE.encode())):
            names = [*query_fields, *QUERY_FIELDS]
            query = "&".join(f"{n}={quote_from_bytes(value)}" for n in names)
            self._send(principal, method, _join(url, base_query, query), f"query {label}")
        self._send(principal, method, url, "header nul", headers={"User-Agent": NUL, "X-Request-Id": NUL})
        self._send(
            principal,
            method,
            url,
            "header long",
            headers={"Idempotency-Key": LONG_LINE, "User-Agent": LONG_LINE},
        )
        if method not in UNSAFE_METHODS:
            return
        if self.json_routes(rule):
            self._fuzz_json(principal, method, url)
        else:
            self._fuzz_form(principal, method, _join(url, base_query), form)
        self._fuzz_json_body(principal, method, url)

    def _fuzz_form(self, principal: Principal, method: str, url: str, form: Form | None) -> None:
        fields = [f for f in (form.fields if form else []) if f.name != "csrf_token"]
        names = [f.name for f in fields]

        def body(**changes) -> dict:
            values = {f.name: _baseline(f) for f in fields} | changes
            return {"csrf_token": principal.csrf_token(), **values}

        for name in [*names, "fuzz"]:
            self._send(principal, method, url, f"form {name} nul", form=body(**{name: NUL}))
            raw = urlencode(body(), doseq=True) + f"&{name}=" + quote_from_bytes(BAD_BYTES)
            self._send(principal, method, url, f"form {name} bad-utf8", raw=raw, content_type=_FORM)
        for name in names:
            self._send(principal, method, url, f"form {name} long", form=body(**{name: LONG}))
            for label, text in JSON_TEXTS.items():  # for a field that takes JSON (admin's settings)
                self._send(
                    principal, method, url, f"form {name} {label} json-text", form=body(**{name: text})
                )
            upload = (io.BytesIO(b"not text \x00\xff"), "upload.bin", "application/octet-stream")
            self._send(principal, method, url, f"form {name} file", form=body(**{name: upload}))
        self._send(principal, method, url, "form key nul", form=body(**{NUL: "x"}))
        self._send_in_charsets(principal, method, url, "form", urlencode(body(fuzz=NUL), doseq=True), _FORM)

    def _fuzz_json(self, principal: Principal, method: str, url: str) -> None:
        def body(**changes) -> dict:
            values = {name: value() if callable(value) else value for name, value in self.json_fields.items()}
            return values | changes

        # Refused whatever the route reads: every field poisoned at once.
        for label, value in (("nul", NUL), ("surrogate", SURROGATE)):
            self._send(
                principal,
                method,
                url,
                f"json fields {label}",
                raw=_dumps({n: value for n in self.json_fields}),
            )
        raw = _dumps({n: "<deep>" for n in self.json_fields}).replace('"<deep>"', DEEP)
        self._send(principal, method, url, "json fields deep", raw=raw)
        # Limits are the route's own: one field at a time, the others valid.
        for name in self.json_fields:
            for label, value in (("long", LONG), ("huge", 10**30)):
                self._send(principal, method, url, f"json {name} {label}", raw=_dumps(body(**{name: value})))
        self._send(principal, method, url, "json key nul", raw=_dumps(body(**{NUL: 1})))
        self._send(principal, method, url, "json key surrogate", raw=_dumps(body(**{SURROGATE: 1})))
        upload = (io.BytesIO(b"{}"), "body.json", "application/json")
        self._send(principal, method, url, "json as a file", form={"file": upload})
        self._send_in_charsets(principal, method, url, "json", _dumps(body(fuzz=NUL)), _JSON)

    def _fuzz_json_body(self, principal: Principal, method: str, url: str) -> None:
        """Bodies no JSON reader may accept, sent to every route (a form route may still be asked)."""
        for label, raw in (
            ("deep", DEEP),
            ("deep object", '{"a":' * 1000 + "1" + "}" * 1000),
            ("NaN", '{"name": NaN, "value": NaN}'),
            ("Infinity", '{"name": -Infinity}'),
            ("malformed", '{"name": '),
            ("nul", '{"name": "a\\u0000b"}'),
            ("surrogate", '{"name": "a\\udc00b"}'),
        ):
            self._send(principal, method, url, f"body {label}", raw=raw)
        self._send_in_charsets(principal, method, url, "text", b"e30=\x00", "text/plain")

    def _send_in_charsets(self, principal: Principal, method: str, url: str, kind: str, raw, mimetype: str):
        """`raw`, which holds a NUL, declared in each odd charset: refused whichever it is."""
        for charset in CHARSETS:
            content_type = f"{mimetype}; charset={charset}"
            self._send(
                principal, method, url, f"{kind} charset {charset}", raw=raw, content_type=content_type
            )

    # -- sending ------------------------------------------------------------------------------------

    def _headers(self, principal: Principal, extra: dict | None = None) -> dict:
        # Each request from its own address: per-address throttles must not hide what lies behind them.
        self._address += 1
        address = f"10.{self._address >> 16 & 255}.{self._address >> 8 & 255}.{self._address & 255}"
        return {"X-Forwarded-For": address, **principal.headers, **(extra or {})}

    def _send(
        self, principal, method, url, mutation, *, form=None, raw=None, content_type=None, headers=None
    ):
        if (mutation.rsplit(" ", 1)[-1] in BOUNDED) != (self.phase == "bounded"):
            return
        kwargs: dict = {"method": method, "headers": self._headers(principal, headers)}
        if form is not None:
            kwargs["data"] = form
        elif raw is not None:
            kwargs["data"] = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
            kwargs["content_type"] = content_type or _JSON
            if principal.sign is not None:
                kwargs["headers"].update(principal.sign(kwargs["data"]))
        try:
            response = principal.client.open(url, **kwargs)
        except Exception as error:  # noqa: BLE001 - an exception that escaped the app is a finding too
            self.findings.append(Finding(method, url, mutation, 0, f"{type(error).__name__}: {error}"))
            return
        text = response.get_data(as_text=True)
        self.statuses[response.status_code] += 1
        if (
            response.status_code >= 500 or DATABASE_REFUSED in text
        ):  # refused by the database: not checked first
            detail = text
            try:
                detail = json.loads(detail).get("detail", detail)
            except ValueError:
                pass
            self.findings.append(Finding(method, url, mutation, response.status_code, detail))


_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


def _join(url: str, *queries: str) -> str:
    query = "&".join(q for q in queries if q)
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


def _dumps(value) -> str:
    return json.dumps(value)  # lone surrogates and NUL become \ud800 and \u0000, as a client sends them


def _baseline(form_field: FormField) -> str:
    """A valid value for a field, so that a poisoned one is the only thing wrong with a submission."""
    if form_field.value:
        return form_field.value
    if form_field.kind == "email":
        return f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    if form_field.kind == "password":
        return STRONG_PASSWORD
    if form_field.kind == "date":
        return "2031-01-01"
    if form_field.kind == "datetime-local":
        return "2031-01-01T10:00"
    if form_field.kind == "number":
        return "1"
    return f"fuzz-{uuid.uuid4().hex[:8]}"  # fits a slug or a key as well as a name


def table_counts(
    conn: psycopg.Connection, leave_out: tuple[str, ...] = ("rate_limit_buckets",)
) -> dict[str, int]:
    """Rows in every table of the public schema (counters of attempts left out: refusing counts them)."""
    tables = [
        row[0]
        for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        if row[0] not in leave_out
    ]
    return {
        table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables
    }  # noqa: S608


def poison_stored(conn: psycopg.Connection) -> list[str]:
    """Every column of every table holding 5,000 characters of the over-long poison (a value cut to
    a column's length first is fine, and so is a tenant endpoint's address or header of LONG_LINE,
    which its run keeps)."""
    columns = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'USER-DEFINED')"
    ).fetchall()
    found = []
    for table, column in columns:
        sql = f'SELECT count(*) FROM "{table}" WHERE strpos("{column}"::text, %s) > 0'  # noqa: S608
        if conn.execute(sql, (LONG[:5000],)).fetchone()[0]:
            found.append(f"{table}.{column}")
    return found
