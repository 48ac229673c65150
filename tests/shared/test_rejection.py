"""The one "input rejected" error: its problem document, and its place on a form."""

from __future__ import annotations

from http import HTTPStatus

from flask import Flask
from flask_wtf import FlaskForm
from wtforms import StringField

from nectar.shared.rejection import InputRejected, Problem, show_on_form
from nectar.shared.web import rejection_response


def test_a_rejection_names_each_problem_by_path_or_field():
    several = InputRejected(
        "The workflow document is not valid.",
        [Problem("/steps/0/url", "not a URL"), Problem(None, "too long", field="Idempotency-Key")],
    )
    assert several.status == 422 and str(several) == "The workflow document is not valid."
    assert several.errors() == [
        {"path": "/steps/0/url", "message": "not a URL"},
        {"field": "Idempotency-Key", "message": "too long"},
    ]
    unplaced = InputRejected("Send a JSON object.", status=400)
    assert unplaced.errors() == [{"field": "body", "message": "Send a JSON object."}]
    assert InputRejected("No.", path="/a~1b/0").problems[0].name == "a/b"


class _Form(FlaskForm):
    name = StringField()
    email = StringField()


def test_a_rejection_goes_next_to_the_fields_it_names_and_the_rest_comes_back():
    app = Flask(__name__)
    app.config.update(SECRET_KEY="x" * 32, WTF_CSRF_ENABLED=False)
    with app.test_request_context("/"):
        form = _Form()
        rejected = InputRejected(
            "Not valid.",
            [Problem("/name", "Use 2 to 200 characters."), Problem(None, "Taken.", field="email")]
            + [Problem(None, "Nothing changed.", field="body")],
        )
        assert show_on_form(form, rejected) == ["Nothing changed."]
        assert form.name.errors == ["Use 2 to 200 characters."] and form.email.errors == ["Taken."]
        assert show_on_form(_Form(), InputRejected("Elsewhere.", field="role"), "email") == []


def test_the_one_handler_answers_a_problem_document_with_the_rejections_status():
    app = Flask(__name__)
    with app.test_request_context("/api/v1/x"):
        response = rejection_response(InputRejected("Bad.", path="/x"))
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": HTTPStatus(422).phrase,
        "status": 422,
        "detail": "Bad.",
        "errors": [{"path": "/x", "message": "Bad."}],
    }
