"""What every form promises, checked on its page as served: each field people type into states its
limits in HTML (maxlength; required), and the server holds exactly those. One character more than
maxlength, or nothing in a required field, is refused with 422 and the message next to that field,
whatever the other fields hold."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from tests.browser import Browser

TYPED = {"text", "email", "password", "search", "url", "tel"}
FORM_REFUSED = 422


@dataclass
class Field:
    tag: str
    attrs: dict[str, str]
    value: str = ""
    hidden_from_people: bool = False  # inside aria-hidden (a honeypot)
    options: list[tuple[str, bool]] = field(default_factory=list)  # a select's (value, selected)

    @property
    def name(self) -> str:
        return self.attrs.get("name", "")

    @property
    def typed(self) -> bool:
        """A field a person types into."""
        if not self.name or self.hidden_from_people or "disabled" in self.attrs:
            return False
        return self.tag == "textarea" or (self.tag == "input" and self.attrs.get("type", "text") in TYPED)


@dataclass
class Form:
    action: str
    fields: list[Field] = field(default_factory=list)

    def defaults(self) -> dict[str, str]:
        """What submitting the form untouched sends."""
        data = {}
        for item in self.fields:
            kind = item.attrs.get("type", "text")
            if not item.name or "disabled" in item.attrs or kind in ("submit", "button", "reset"):
                continue
            if item.tag == "select":
                chosen = [value for value, selected in item.options if selected] or [
                    value for value, _ in item.options[:1]
                ]
                data[item.name] = chosen[0] if chosen else ""
            elif kind in ("checkbox", "radio"):
                if "checked" in item.attrs:
                    data[item.name] = item.attrs.get("value", "on")
            else:
                data[item.name] = item.value
        return data


class _Forms(HTMLParser):
    """The POST forms of a page, with their fields."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._open: Field | None = None  # a textarea or select being read
        self._hidden_depth: list[str] = []  # tags opened inside an aria-hidden element

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if self._hidden_depth or attributes.get("aria-hidden") == "true":
            self._hidden_depth.append(tag)
        if tag == "form":
            if attributes.get("method", "get").lower() == "post":
                self._form = Form(attributes.get("action", ""))
                self.forms.append(self._form)
            return
        if self._form is None:
            return
        hidden = bool(self._hidden_depth)
        if tag in ("input", "textarea", "select"):
            item = Field(tag, attributes, attributes.get("value", ""), hidden_from_people=hidden)
            self._form.fields.append(item)
            if tag != "input":
                self._open = item
        elif tag == "option" and self._open is not None and self._open.tag == "select":
            self._open.options.append((attributes.get("value", ""), "selected" in attributes))

    def handle_endtag(self, tag):
        if self._hidden_depth:
            self._hidden_depth.pop()
        if tag == "form":
            self._form = None
        elif tag in ("textarea", "select"):
            self._open = None

    def handle_data(self, data):
        if self._open is not None and self._open.tag == "textarea":
            self._open.value += data


def post_forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def error_next_to(html: str, name: str) -> bool:
    """The page marks the field `name` as refused, with its message inside the field's own block."""
    for block in re.findall(r'<div class="field[^"]*\bhas-error\b[^"]*">(.*?)</div>', html, re.S):
        if f'name="{name}"' in block and 'class="field-error"' in block:
            return True
    return False


def too_long(item: Field, limit: int) -> str:
    """One character over `limit`, still shaped like what the field expects."""
    if item.attrs.get("type") == "email":
        domain = "@example.com"
        return "a" * (limit + 1 - len(domain)) + domain
    return "x" * (limit + 1)


def form_limit_problems(browser: Browser, path: str) -> list[str]:
    """Checks every POST form on the page at `path`; returns what breaks the promise (empty: none)."""
    page = browser.get(path)
    assert page.status_code == 200, (path, page.status_code)
    problems = []
    for form in post_forms(page.get_data(as_text=True)):
        target = form.action or path
        for item in (f for f in form.fields if f.typed):
            where = f"{path} → {target} [{item.name}]"
            limit = item.attrs.get("maxlength")
            if limit is None:
                problems.append(f"{where}: no maxlength")
                continue
            cases = [("one character over maxlength", too_long(item, int(limit)))]
            if "required" in item.attrs:
                cases.append(("empty but required", ""))
            for case, value in cases:
                data = {**form.defaults(), item.name: value}
                response = browser.client.post(target, data=data)
                html = response.get_data(as_text=True)
                if response.status_code != FORM_REFUSED:
                    problems.append(f"{where} {case}: answered {response.status_code}, not {FORM_REFUSED}")
                elif not error_next_to(html, item.name):
                    problems.append(f"{where} {case}: no message next to the field")
    return problems
