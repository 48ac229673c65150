"""/api/v1 routes for the organization's variables and secrets: list, put by name, delete. A
secret's value goes in and never comes out: its list shows names and when each was set."""

from __future__ import annotations

from flask import current_app, jsonify

from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.views import _body, _ctx, _iso, api
from nectar.core.variables import service
from nectar.core.variables.service import SECRETS, VARIABLES
from nectar.shared.database import db


def _dates(row) -> dict:
    return {"created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def variable_json(row) -> dict:
    return {"name": row.name, "value": row.value, **_dates(row)}


def secret_json(row) -> dict:
    return {"name": row.name, **_dates(row)}  # never its value


@api.get("/variables")
@operation("The organization's variables", responses={200: m.VariableList})
def list_variables():
    return jsonify(items=[variable_json(row) for row in service.listed(db.session, VARIABLES)])


@api.put("/variables/<name>")
@operation(
    "Set a variable (vars.NAME in workflows)",
    body=m.NewValue,
    responses={200: m.Variable, 201: m.Variable},
    example={"value": "https://staging.example.com"},
)
def put_variable(name: str):
    row, created = service.put(db.session, _ctx(), VARIABLES, name, _body().get("value"))
    db.session.commit()
    return jsonify(variable_json(row)), 201 if created else 200


@api.delete("/variables/<name>")
@operation("Delete a variable", responses={204: None})
def delete_variable(name: str):
    service.delete(db.session, _ctx(), VARIABLES, name)
    db.session.commit()
    return "", 204


@api.get("/secrets")
@operation("The organization's secrets: names and dates, never values", responses={200: m.SecretList})
def list_secrets():
    return jsonify(items=[secret_json(row) for row in service.listed(db.session, SECRETS)])


@api.put("/secrets/<name>")
@operation(
    "Set a secret (secrets.NAME in workflows; never returned)",
    body=m.NewValue,
    responses={200: m.Secret, 201: m.Secret},
)
def put_secret(name: str):
    keys = current_app.config["NECTAR_KEY_RING"]
    row, created = service.put(db.session, _ctx(), SECRETS, name, _body().get("value"), keys)
    db.session.commit()
    return jsonify(secret_json(row)), 201 if created else 200


@api.delete("/secrets/<name>")
@operation("Delete a secret", responses={204: None})
def delete_secret(name: str):
    service.delete(db.session, _ctx(), SECRETS, name)
    db.session.commit()
    return "", 204
