"""Alert jobs in core's worker: checking an organization's rules after its runs fail (queued by
the statements that record failed runs, runs/records.py), and delivering each alert that fired,
retried with backoff until its channel takes it."""

from __future__ import annotations

import uuid

import procrastinate

from nectar.core.alerts import delivery
from nectar.core.alerts.service import fire_due_rules
from nectar.core.runs.jobs import ActivationRetry, bound_app_context
from nectar.core.runs.records import CHECK_ALERTS_QUEUE, CHECK_ALERTS_TASK
from nectar.shared.database import db, scope_session
from nectar.shared.jobs import enqueue, enqueue_once

DELIVER_TASK = "core.deliver_alert"
blueprint = procrastinate.Blueprint()


class DeliveryRetry(ActivationRetry):
    """Through database outages as an activation; a channel that does not take the alert is tried
    again after 2, 4, 8 s... and then every half hour: sixteen attempts over about three hours."""

    attempts, longest_wait = 16, 1800


@blueprint.task(name=CHECK_ALERTS_TASK, queue=CHECK_ALERTS_QUEUE, retry=ActivationRetry())
def check_alerts(org_id: str) -> None:
    """Fires the organization's rules that are due, queueing a delivery for each in the same
    transaction (a decision is never lost or made twice), and a look again when the window of a
    rule held back ends."""
    with bound_app_context():
        org = uuid.UUID(org_id)
        scope_session(db.session, org_id=org)
        fired, held_back = fire_due_rules(db.session, org)
        for alert in fired:
            args = {"org_id": org_id, "rule_id": str(alert.rule_id), "alert": alert.body}
            enqueue(db.session, DELIVER_TASK, args, queue=CHECK_ALERTS_QUEUE)
        for rule, window_ends in held_back:
            enqueue_once(
                db.session,
                CHECK_ALERTS_TASK,
                {"org_id": org_id},
                queue=CHECK_ALERTS_QUEUE,
                queueing_lock=f"alerts:{org_id}:{rule.id}",
                scheduled_at=window_ends,
            )
        db.session.commit()


@blueprint.task(name=DELIVER_TASK, queue=CHECK_ALERTS_QUEUE, retry=DeliveryRetry())
def deliver_alert(org_id: str, rule_id: str, alert: dict) -> None:
    with bound_app_context():
        delivery.deliver(db.session, uuid.UUID(org_id), uuid.UUID(rule_id), alert)
