"""/api/v1 routes for the organization's variables and secrets: list, put by name, delete. A
secret's value goes in and never comes out: its list shows names and when each was set."""

from __future__ import annotations

from flask import current_app, jsonify

from nectar.core.api.views import _body, _ctx, _iso, api
from nectar.core.variables import service
from nectar.core.variables.service import SECRETS, VARIABLES
from nectar.shared.database import db
from nectar.shared.web import problem


@api.errorhandler(service.InvalidValue)
def _invalid(error: service.InvalidValue):
    return problem(422, str(error), errors=[p.as_dict() for p in error.problems])


def _dates(row) -> dict:
    return {"created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def variable_json(row) -> dict:
    return {"name": row.name, "value": row.value, **_dates(row)}


def secret_json(row) -> dict:
    return {"name": row.name, **_dates(row)}  # never its value


@api.get("/variables")
def list_variables():
    return jsonify(items=[variable_json(row) for row in service.listed(db.session, VARIABLES)])


@api.put("/variables/<name>")
def put_variable(name: str):
    row, created = service.put(db.session, _ctx(), VARIABLES, name, _body().get("value"))
    db.session.commit()
    return jsonify(variable_json(row)), 201 if created else 200


@api.delete("/variables/<name>")
def delete_variable(name: str):
    service.delete(db.session, _ctx(), VARIABLES, name)
    db.session.commit()
    return "", 204


@api.get("/secrets")
def list_secrets():
    return jsonify(items=[secret_json(row) for row in service.listed(db.session, SECRETS)])


@api.put("/secrets/<name>")
def put_secret(name: str):
    keys = current_app.config["NECTAR_KEY_RING"]
    row, created = service.put(db.session, _ctx(), SECRETS, name, _body().get("value"), keys)
    db.session.commit()
    return jsonify(secret_json(row)), 201 if created else 200


@api.delete("/secrets/<name>")
def delete_secret(name: str):
    service.delete(db.session, _ctx(), SECRETS, name)
    db.session.commit()
    return "", 204
