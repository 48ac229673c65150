"""Input rejected: the one error every form and API of every service raises for input it will not
take, and the one shape it has in a problem document (RFC 9457 with an `errors` list).

A `Problem` says where and why: `path`, a JSON Pointer into a JSON body (or a document such as a
workflow), or `field`, the name of a form field, query parameter or header. An `InputRejected`
holds one or more, with the status to answer (422 unless the input could not even be read: 400,
or 415 for a charset). nectar.shared.web answers it for every service; `show_on_form` puts it next
to a page's fields."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

UNPROCESSABLE = 422


@dataclass(frozen=True)
class Problem:
    """One problem in the input: where (a JSON Pointer such as /steps/2/if, or a field's name) and what."""

    path: str | None
    message: str
    field: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The problem document's `errors` entry: `path` or `field`, and `message`."""
        where = {"path": self.path} if self.path is not None else {"field": self.field or "body"}
        return {**where, "message": self.message}

    @property
    def name(self) -> str:
        """The form field or top-level JSON member the problem is about ("body" when neither)."""
        if self.field is not None:
            return self.field
        return (self.path or "").lstrip("/").split("/")[0].replace("~1", "/").replace("~0", "~") or "body"


class InputRejected(ValueError):
    """Input refused, with the problems found (at least one) and the status to answer.

    `InputRejected(detail)` names no place (the problem is the body's); `path=` or `field=` names
    one; `problems=` gives several, `detail` then being the summary."""

    def __init__(
        self,
        detail: str,
        problems: Iterable[Problem] = (),
        *,
        path: str | None = None,
        field: str | None = None,
        status: int = UNPROCESSABLE,
    ):
        super().__init__(detail)
        self.detail, self.status = detail, status
        self.problems = list(problems) or [Problem(path, detail, field)]

    @property
    def pointer(self) -> str | None:
        """The JSON Pointer of the first problem (None when it names a field)."""
        return self.problems[0].path

    @property
    def field(self) -> str | None:
        """The field of the first problem (None when it is at a JSON Pointer)."""
        return self.problems[0].field

    def errors(self) -> list[dict[str, str]]:
        """The problem document's `errors` member."""
        return [problem.as_dict() for problem in self.problems]


def show_on_form(form: Any, rejected: InputRejected, default_field: str | None = None) -> list[str]:
    """Puts each problem under the WTForms field it names, or `default_field` when it names none of
    the form's. Returns the messages that found no field, for the page to show otherwise."""
    unplaced = []
    for problem in rejected.problems:
        name = problem.name if problem.name in form else default_field
        if name is None or name not in form:
            unplaced.append(problem.message)
        else:
            form[name].errors = [*form[name].errors, problem.message]
    return unplaced
