"""/api/v1 routes for alert rules (a webhook rule's secret is in its creation's answer only)."""

from __future__ import annotations

import uuid

from flask import current_app, jsonify

from nectar.core.alerts import service
from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.views import _body, _ctx, _iso, _user_id, api
from nectar.shared.database import db


def rule_json(rule) -> dict:
    return {
        "id": str(rule.id),
        "name": rule.name,
        "workflow_id": str(rule.workflow_id) if rule.workflow_id else None,
        "threshold": rule.threshold,
        "window_minutes": rule.window_minutes,
        "channel": rule.channel,
        "target": rule.target,
        "enabled": rule.enabled,
        "has_secret": rule.secret_ciphertext is not None,
        "last_fired_at": _iso(rule.last_fired_at),
        "last_delivered_at": _iso(rule.last_delivered_at),
        "last_error": rule.last_error,
        "created_at": _iso(rule.created_at),
    }


@api.get("/alert-rules")
@operation("Alert rules", responses={200: m.AlertRuleList})
def list_alert_rules():
    return jsonify(items=[rule_json(r) for r in service.list_rules(db.session)])


@api.post("/alert-rules")
@operation(
    "Create an alert rule",
    body=m.NewAlertRule,
    responses={201: m.AlertRule},
    example={
        "name": "Failures",
        "channel": "email",
        "target": "ops@example.com",
        "threshold": 3,
        "window_minutes": 60,
    },
)
def create_alert_rule():
    keys = current_app.config["NECTAR_KEY_RING"]
    rule, secret = service.create_rule(db.session, _ctx(), keys, _body(), _user_id())
    db.session.commit()
    body = rule_json(rule)
    if secret is not None:
        body["secret"] = secret  # shown this once
    return jsonify(body), 201


@api.patch("/alert-rules/<uuid:rule_id>")
@operation("Change an alert rule", body=m.AlertRuleChange, responses={200: m.AlertRule})
def update_alert_rule(rule_id: uuid.UUID):
    rule = service.update_rule(db.session, _ctx(), service.get_rule(db.session, rule_id), _body())
    db.session.commit()
    return jsonify(rule_json(rule))


@api.delete("/alert-rules/<uuid:rule_id>")
@operation("Delete an alert rule", responses={204: None})
def delete_alert_rule(rule_id: uuid.UUID):
    service.delete_rule(db.session, _ctx(), rule_id)
    db.session.commit()
    return "", 204
