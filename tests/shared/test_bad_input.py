"""The edge's rules (nectar.shared.bad_input), on an app built as every service's is: what no view
could store is refused before any view runs, with a problem document that says where."""

from __future__ import annotations

import io
import json

import pytest
from flask import Blueprint, jsonify, request
from sqlalchemy import text

from nectar.schema.models import Organization
from nectar.shared.bad_input import MAX_JSON_DEPTH, JsonObject, loads_json, text_charset
from nectar.shared.config import Service
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import DATABASE_REFUSED, create_service_app

views = Blueprint("views", __name__)


@views.post("/echo")
def echo():
    return jsonify(json=request.get_json(silent=True), form=request.form.to_dict())


@views.post("/organizations")
def add_organization():
    db.session.add(Organization(name=request.form["name"], slug=request.form["slug"]))
    db.session.flush()
    return "made", 201


@views.get("/overflow")
def overflow():
    return str(db.session.scalar(text("SELECT 2147483647 + :one"), {"one": 1}))


@pytest.fixture(scope="module")
def client(settings_for):
    app = create_service_app(settings_for(Service.MARKETING), __name__, lambda: "head")
    app.register_blueprint(views)
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def _json(client, body: str, content_type: str = "application/json"):
    return client.post("/echo", data=body.encode("utf-8", "surrogatepass"), content_type=content_type)


@pytest.mark.parametrize(
    "body, pointer",
    [
        ('{"a": [{"b": "x\\u0000y"}]}', "/a/0/b"),
        ('{"a": {"b\\ud800": 1}}', "/a/b\\ud800"),
        ('{"a~/b": "\\udc00"}', "/a~0~1b"),
        ('["\\u0000"]', "/0"),
    ],
)
def test_nul_and_lone_surrogates_anywhere_in_json_are_refused_naming_where(client, body, pointer):
    response = _json(client, body)
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.json["errors"][0]["path"] == pointer, response.json


@pytest.mark.parametrize(
    "body, detail",
    [
        ('{"a": NaN}', "NaN"),
        ('{"a": [Infinity]}', "Infinity"),
        ('{"a": -Infinity}', "Infinity"),
        ("[" * 1000 + "]" * 1000, f"deeper than {MAX_JSON_DEPTH} levels"),
        (
            '{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1),
            f"deeper than {MAX_JSON_DEPTH} levels",
        ),
        ('{"a": ', "not valid JSON"),
        ('{"n": 1' + "0" * 5000 + "}", "not valid JSON"),
    ],
)
def test_json_that_is_not_data_is_a_400_not_a_500(client, body, detail):
    response = _json(client, body)
    assert response.status_code == 400 and detail in response.json["detail"], response.json


def test_json_as_deep_as_allowed_reaches_the_view_parsed_once(client):
    deepest = "[" * (MAX_JSON_DEPTH - 1) + "1" + "]" * (MAX_JSON_DEPTH - 1)
    response = _json(client, deepest)
    assert response.status_code == 200
    assert _json(client, '{"café": "\\ud83d\\ude00"}').json["json"] == {
        "café": "\U0001f600"
    }  # a pair is fine


@pytest.mark.parametrize("charset", ["base64", "hex", "rot13", "zlib"])
def test_a_charset_that_is_not_a_text_encoding_is_a_415(client, charset):
    form = client.post(
        "/echo", data="a=b", content_type=f"application/x-www-form-urlencoded; charset={charset}"
    )
    assert form.status_code == 415 and charset in form.get_data(as_text=True)
    api = _json(client, "{}", f"application/json; charset={charset}")
    assert api.status_code == 415 and api.json["errors"][0]["field"] == "Content-Type"


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "latin-1", "x-no-such-charset"])
def test_text_encodings_and_unknown_charsets_are_read(client, charset):
    response = client.post(
        "/echo", data="a=b", content_type=f"application/x-www-form-urlencoded; charset={charset}"
    )
    assert response.status_code == 200 and response.json["form"] == {"a": "b"}


def test_a_file_where_text_is_expected_is_a_400_naming_the_field(client):
    response = client.post(
        "/echo",
        data={"name": "Ada", "avatar": (io.BytesIO(b"\x89PNG"), "a.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert (
        "text/html" in response.content_type and "avatar" in page and "file" in page
    )  # a page for a browser


def test_bytes_that_are_not_utf8_are_refused_in_the_address_and_forms(client):
    assert client.post("/echo?q=%ED%A0%80").status_code == 400
    # As a WSGI server hands over a path with a byte that is not UTF-8 (the test client would replace it).
    assert client.post("/", environ_overrides={"PATH_INFO": "/echo\xff"}).status_code == 400
    form = client.post("/echo", data=b"name=a%ED%A0%80b", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 400 and "not UTF-8" in form.get_data(as_text=True)
    fine = client.post(
        "/echo?q=caf%C3%A9", data=b"name=caf%C3%A9", content_type="application/x-www-form-urlencoded"
    )
    assert fine.status_code == 200 and fine.json["form"] == {"name": "café"}


def test_a_nul_in_a_header_is_refused(client):
    response = client.post("/echo", headers={"User-Agent": "a\x00b", "Accept": "application/json"})
    assert response.status_code == 400 and response.json["errors"][0]["field"] == "User-Agent"


def test_a_value_longer_than_its_column_is_a_422_naming_it_before_the_database_sees_it(client):
    response = client.post(
        "/organizations", data={"name": "x" * 201, "slug": "fine"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["errors"] == [{"field": "name", "message": "name is at most 200 characters."}]


def test_a_value_the_database_refuses_anyway_is_a_422_not_a_500(client):
    response = client.get("/overflow", headers={"Accept": "application/json"})
    assert response.status_code == 422 and response.json["detail"] == DATABASE_REFUSED


def test_json_fields_are_read_with_their_kind_and_limits():
    body = JsonObject({"name": "Ada", "count": 3, "flag": True, "big": 2**40, "list": []})
    assert body.text("name", max_length=3) == "Ada" and body.text("missing", max_length=1, default="d") == "d"
    assert body.whole_number("count", minimum=1) == 3 and body.whole_number("missing") is None
    for read in (
        lambda: body.text("name", max_length=2),
        lambda: body.text("count", max_length=10),
        lambda: body.whole_number("flag"),
        lambda: body.whole_number("big"),
        lambda: body.whole_number("list"),
    ):
        with pytest.raises(InputRejected) as refused:
            read()
        assert refused.value.status == 422 and refused.value.pointer.startswith("/")


def test_loads_json_reads_utf16_and_refuses_what_is_not_text():
    assert loads_json('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    with pytest.raises(InputRejected, match="not UTF-8"):
        loads_json(b'{"a": "\xff"}')
    assert json.loads('"\\ud800"') == "\ud800"  # what the standard library would have let through


def test_text_charsets_are_named_by_their_codec():
    assert text_charset({}) == "utf-8" and text_charset({"charset": "UTF8"}) == "utf-8"
    assert text_charset({"charset": "no-such"}) == "utf-8"
    with pytest.raises(InputRejected) as refused:
        text_charset({"charset": "base64"})
    assert refused.value.status == 415
