"""Documents anyone may read without signing in: the workflow language's JSON Schema at a stable
address that is also its `$id`, so editors validate workflow files against it."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from nectar.core.workflows.definition import WORKFLOW_SCHEMA
from nectar.shared.web import external_url

schemas = Blueprint("schemas", __name__, url_prefix="/schemas")


def published_workflow_schema() -> dict:
    """The workflow JSON Schema, its `$id` the address this deployment serves it at."""
    return {**WORKFLOW_SCHEMA, "$id": external_url("schemas.workflow_v1")}


@schemas.get("/workflow-v1.json")
def workflow_v1():
    response = jsonify(published_workflow_schema())
    response.mimetype = "application/schema+json"
    response.headers["Access-Control-Allow-Origin"] = "*"  # editors and web tools fetch it from anywhere
    response.cache_control.public, response.cache_control.max_age = True, 3600
    response.add_etag()
    return response.make_conditional(request)
