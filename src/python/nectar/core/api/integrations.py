"""/api/v1 routes for the catalog and the organization's connections (secrets never leave)."""

from __future__ import annotations

import uuid

from flask import current_app, jsonify

from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.views import _body, _ctx, _iso, _user_id, api
from nectar.core.integrations import service
from nectar.shared.database import db


def _keys():
    return current_app.config["NECTAR_KEY_RING"]


def connection_json(connection) -> dict:
    return {
        "id": str(connection.id),
        "service_key": connection.service_key,
        "name": connection.name,
        "config": connection.config,
        "has_credentials": connection.credentials_ciphertext is not None,
        "last_tested_at": _iso(connection.last_tested_at),
        "last_test_ok": connection.last_test_ok,
        "last_test_error": connection.last_test_error,
        "webhook_url": (
            f"/e/{connection.org_id}/_hooks/{connection.id}" if connection.service_key == "webhook" else None
        ),
    }


@api.get("/catalog")
@operation("The services one can connect", responses={200: m.Catalog})
def list_catalog():
    return jsonify(
        items=[
            {
                "key": c.key,
                "name": c.name,
                "description": c.description,
                "config_schema": c.config_schema,
                "credentials_schema": c.credentials_schema,
            }
            for c in service.catalog(db.session)
        ]
    )


@api.get("/connections")
@operation("Connections (never their credentials)", responses={200: m.ConnectionList})
def list_connections():
    return jsonify(items=[connection_json(c) for c in service.list_connections(db.session)])


@api.post("/connections")
@operation(
    "Create a connection",
    body=m.NewConnection,
    responses={201: m.Connection},
    example={"service_key": "webhook", "name": "orders hook"},
)
def create_connection():
    body = _body()
    connection = service.save_connection(
        db.session,
        _ctx(),
        _keys(),
        service_key=str(body.get("service_key")),
        name=body.text("name", max_length=100),
        config=body.get("config", {}),
        credentials=body.get("credentials", {}),
        user_id=_user_id(),
    )
    db.session.commit()
    return jsonify(connection_json(connection)), 201


@api.put("/connections/<uuid:connection_id>")
@operation("Change a connection", body=m.ConnectionChange, responses={200: m.Connection})
def update_connection(connection_id: uuid.UUID):
    body = _body()
    connection = service.get_connection(db.session, connection_id)
    connection = service.save_connection(
        db.session,
        _ctx(),
        _keys(),
        service_key=connection.service_key,
        name=body.text("name", max_length=100, default=connection.name),
        config=body.get("config", connection.config),
        credentials=body.get("credentials"),
        connection=connection,
    )
    db.session.commit()
    return jsonify(connection_json(connection))


@api.delete("/connections/<uuid:connection_id>")
@operation("Delete a connection", responses={204: None})
def delete_connection(connection_id: uuid.UUID):
    service.delete_connection(db.session, _ctx(), connection_id)
    db.session.commit()
    return "", 204


@api.post("/connections/<uuid:connection_id>/test")
@operation("Test a connection", responses={200: m.ConnectionTest})
def test_connection(connection_id: uuid.UUID):
    connection = service.get_connection(db.session, connection_id)
    ok, message = service.test_connection(
        db.session, _ctx(), _keys(), connection, current_app.config["NECTAR_OUTBOUND_POLICY"]
    )
    db.session.commit()
    return jsonify(ok=ok, message=message, connection=connection_json(connection))
