"""/api/v1 routes for connectors imported from OpenAPI 3 documents."""

from __future__ import annotations

import json
import uuid

from flask import jsonify

from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.views import _body, _ctx, _iso, _user_id, api
from nectar.core.integrations import connectors
from nectar.shared.database import db


def connector_json(connector, *, with_document: bool = False) -> dict:
    result = {
        "id": str(connector.id),
        "name": connector.name,
        "title": connector.title,
        "base_url": connector.base_url,
        "document_bytes": connector.document_bytes,
        "created_at": _iso(connector.created_at),
        "operations": [
            {
                "operation_id": operation_id,
                "method": operation["method"],
                "path": operation["path"],
                "summary": operation["summary"],
                "callable": not operation["unsupported"],
            }
            for operation_id, operation in connector.operations.items()
        ],
    }
    if with_document:
        result["document"] = connector.document
    return result


@api.get("/connectors")
@operation("Connectors imported from OpenAPI documents", responses={200: m.ConnectorList})
def list_connectors():
    return jsonify(items=[connector_json(c) for c in connectors.list_connectors(db.session)])


@api.get("/connectors/<uuid:connector_id>")
@operation("A connector, with its document", responses={200: m.ConnectorDetail})
def get_connector(connector_id: uuid.UUID):
    return jsonify(connector_json(connectors.get_connector(db.session, connector_id), with_document=True))


@api.post("/connectors")
@operation(
    "Import an OpenAPI 3 document as a connector",
    body=m.NewConnector,
    responses={201: m.Connector},
    example={
        "name": "petstore",
        "document": "openapi: 3.0.0\ninfo: {title: Pets, version: '1'}\npaths: {}",
        "base_url": "https://pets.example.com/v1",
    },
)
def import_connector():
    body = _body()
    document = body.get("document")  # text or an object (the declared body checked which)
    if isinstance(document, dict):
        document = json.dumps(document)
    connector = connectors.import_connector(
        db.session,
        _ctx(),
        name=body.text("name", max_length=connectors.NAME_MAX, default=""),
        source=document,
        base_url=body.text("base_url", max_length=2000),
        user_id=_user_id(),
    )
    db.session.commit()
    return jsonify(connector_json(connector)), 201


@api.delete("/connectors/<uuid:connector_id>")
@operation("Delete a connector", responses={204: None})
def delete_connector(connector_id: uuid.UUID):
    connectors.delete_connector(db.session, _ctx(), connector_id)
    db.session.commit()
    return "", 204
