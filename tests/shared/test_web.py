"""What every service's app does before its views run (nectar.shared.web.create_service_app),
tried on the real apps: a NUL character in the address or a form is a clear 400, never a 500.
The rest of the edge's rules are tried in test_bad_input.py."""

from __future__ import annotations

import json
import uuid

import pytest
from flask import Blueprint, request

from nectar.core.app import create_app as create_core_app
from nectar.marketing.app import create_app as create_marketing_app
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from nectar.shared.web import create_service_app, keeps_raw_input
from tests.browser import Browser


@pytest.fixture(scope="module")
def marketing(settings_for):
    app = create_marketing_app(settings_for(Service.MARKETING))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def core(settings_for):
    app = create_core_app(settings_for(Service.CORE))
    yield app
    with app.app_context():
        db.engine.dispose()


def _refused(response) -> bool:
    return response.status_code == 400 and "NUL character" in response.get_data(as_text=True)


def _email() -> str:
    return f"nul-{uuid.uuid4().hex[:10]}@example.com"


def _contact(**overrides) -> dict:
    return {"name": "Ada", "email": _email(), "message": "Hello", **overrides}


@pytest.mark.parametrize(
    "path",
    ["/blog/a%00b", "/contact?utm_source=a%00b", "/newsletter?source=x%00", "/pricing?%00=1"],
)
def test_a_nul_in_a_public_address_is_a_clear_400(marketing, path):
    response = marketing.test_client().get(path)
    assert _refused(response)
    assert "text/html" in response.content_type  # a page for a browser, with the reason


@pytest.mark.parametrize(
    "url, data",
    [
        ("/contact", _contact(name="A\x00da")),
        ("/contact", _contact(utm_source="news\x00letter")),
        ("/newsletter", {"email": _email(), "source": "blog\x00"}),
        ("/billing/checkout", {"plan": "pro", "email": _email(), "organization_name": "Acme\x00 Inc"}),
    ],
)
def test_a_nul_in_a_public_form_is_a_clear_400_and_nothing_is_stored(marketing, database, url, data):
    browser = Browser(marketing, token_page="/contact")
    response = browser.post(url, data)
    assert _refused(response)
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT count(*) FROM leads WHERE email = %s", (data["email"],)).fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT count(*) FROM newsletter_subscribers WHERE email = %s", (data["email"],)
        ).fetchone() == (0,)


def test_a_json_body_is_judged_at_the_edge_and_still_read_raw_by_the_view(marketing):
    # Stripe's webhook verifies its signature over the raw body: the edge parses the body without
    # consuming it, and refuses what no view could store before any view runs.
    body = json.dumps({"id": "evt_1", "data": {"object": {"note": "a\u0000b"}}}).encode()
    refused = marketing.test_client().post(
        "/stripe/webhook",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
    )
    assert refused.status_code == 400 and refused.mimetype == "application/problem+json"
    assert refused.json["errors"][0]["path"] == "/data/object/note"
    clean = json.dumps({"id": "evt_1", "note": "ab"}).encode()
    unsigned = marketing.test_client().post(
        "/stripe/webhook",
        data=clean,
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
    )
    assert unsigned.status_code == 400 and "signature" in unsigned.json["detail"]


def test_core_refuses_a_nul_too_and_answers_an_api_client_in_json(core):
    client = core.test_client()
    assert _refused(client.get("/login?next=%2Forg%00"))
    api = client.get("/api/v1/organization?x=%00", headers={"Accept": "application/json"})
    assert api.status_code == 400 and api.mimetype == "application/problem+json"
    assert "NUL character" in api.json["detail"]
    form = Browser(core, token_page="/login").post("/login", {"email": "a\x00@example.com", "password": "x"})
    assert _refused(form)


def test_a_blueprint_that_keeps_raw_input_gets_its_body_unread(settings_for):
    # Like core's incoming webhooks: a signed body must reach the view byte for byte (its address
    # and headers are still checked).
    app = create_service_app(settings_for(Service.MARKETING), __name__, lambda: "head")
    raw, parsed = Blueprint("raw", __name__), Blueprint("parsed", __name__)
    keeps_raw_input(raw)

    @raw.post("/raw")
    def echo_raw():
        return request.get_data()

    @parsed.post("/parsed")
    def echo_parsed():
        return request.get_data()

    app.register_blueprint(raw)
    app.register_blueprint(parsed)
    body = b"text=a%00b&signature=abc"
    client = app.test_client()
    kept = client.post("/raw", data=body, content_type="application/x-www-form-urlencoded")
    assert kept.status_code == 200 and kept.data == body
    assert _refused(client.post("/raw?q=%00", data=body, content_type="application/x-www-form-urlencoded"))
    assert _refused(client.post("/parsed", data=body, content_type="application/x-www-form-urlencoded"))
