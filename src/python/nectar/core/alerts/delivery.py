"""Delivering an alert through its rule's channel: email (through the outbox, counted against the
organization's mail quota), a Slack connection, a signed webhook, or an error workflow's run.

A delivery job may run more than once (a retry after a failure, or after its worker died), so each
channel is told once per alert where it can be: the email has a dedupe key (the outbox's unique
index; core may add to the outbox but not read it), the error workflow's
run an idempotency key, and Slack and webhook requests carry `Idempotency-Key: <alert id>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.alerts.service import page_url
from nectar.core.builder.service import version_of
from nectar.core.integrations.service import connection_named, post_to_slack
from nectar.core.org_mail.service import (
    NAME_IN_SUBJECT,
    MailLimitReached,
    charge,
    is_suppressed,
    organization_headers,
    unsubscribe_url,
)
from nectar.core.runs.queries import run_for_key
from nectar.core.runs.queue import QueueFull, queue_run
from nectar.core.runs.records import ALERT_TRIGGER
from nectar.core.runs.runner import outbound_policy
from nectar.core.workflows import outbound
from nectar.schema.models import AlertRule, Organization, Workflow
from nectar.shared.database import scope_session
from nectar.shared.encryption import DecryptionFailed
from nectar.shared.mail import Email, one_line, queue_email, quoted

SIGNATURE_HEADER = "X-Nectar-Signature"
ALERT_CATEGORY = "alert"
TIMEOUT_SECONDS = 10


class DeliveryFailed(Exception):
    """The channel did not take the alert now (down, an error answer, the mail quota): retried."""


class Undeliverable(Exception):
    """The channel cannot take the alert at all (its connection or workflow is gone, the address
    unsubscribed): recorded on the rule, not retried."""


def deliver(session: Session, org_id: uuid.UUID, rule_id: uuid.UUID, alert: dict) -> None:
    """Delivers `alert` through its rule's channel and notes the outcome on the rule; raises
    DeliveryFailed (after committing the error) when a later attempt may succeed. An alert whose
    rule was deleted or turned off since is dropped."""
    scope_session(session, org_id=org_id)
    rule = session.get(AlertRule, rule_id)
    if rule is None or not rule.enabled:
        return
    try:
        _CHANNELS[rule.channel](session, rule, alert)
    except (Undeliverable, DeliveryFailed) as error:
        session.rollback()
        rule = session.get(AlertRule, rule_id)
        if rule is not None:
            rule.last_error = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {error}"[:2000]
        session.commit()
        if isinstance(error, DeliveryFailed):
            raise
        return
    rule.last_delivered_at, rule.last_error = datetime.now(UTC), None
    session.commit()


def summary(alert: dict) -> str:
    """One line saying what happened, with the names people chose in quotation marks."""
    rule, run, failures = alert["rule"], alert["failed_run"], alert["failures"]
    workflow = quoted(run["workflow_name"] or "a deleted workflow", NAME_IN_SUBJECT)
    if failures == 1:
        return f"A run of {workflow} failed"
    counted = f"{failures} or more" if failures >= 1000 else str(failures)
    minutes = rule["window_minutes"]
    within = f"within {minutes} minute{'s' if minutes != 1 else ''}"
    if rule["workflow_id"]:
        return f"{counted} runs of {workflow} failed {within}"
    return f"{counted} runs failed {within}, the latest of {workflow}"


def _details(alert: dict) -> str:
    run = alert["failed_run"]
    return (
        f"Alert rule: {quoted(alert['rule']['name'], 100)}\n"
        f"Latest failed run: {run['url']}\n"
        f"Finished: {run['finished_at']}\n"
        f"Error: {one_line(run['error'] or 'none recorded', 500)}\n"
    )


def _email(session: Session, rule: AlertRule, alert: dict) -> None:
    if is_suppressed(session, rule.target):
        raise Undeliverable(f"{rule.target} unsubscribed from this organization's email")
    org = session.get(Organization, rule.org_id)
    unsubscribe = unsubscribe_url(org.id, rule.target)
    name = quoted(org.name, NAME_IN_SUBJECT)
    message = Email(
        to=rule.target,
        subject=f"[Nectar Studio · {name}] Alert: {summary(alert)}",
        body_text=(
            f"An alert rule of the organization {name} on Nectar Studio fired: {summary(alert)}.\n\n"
            f"{_details(alert)}\n"
            f"Alert rules: {page_url('alert_pages.index')}\n\n"
            "--\n"
            f"Sent for {name} because one of its admins chose this address for alerts. "
            f"To get no more email from {name}, open:\n{unsubscribe}\n"
        ),
        category=ALERT_CATEGORY,
        headers=organization_headers(org.name, unsubscribe),
        dedupe_key=f"alert:{alert['id']}",
    )
    try:
        with session.begin_nested():
            queue_email(session, message)
    except IntegrityError:
        return  # queued by an attempt whose worker died before the job was marked done
    try:
        charge(session, org.id, org.plan)
    except MailLimitReached as limit:  # it frees up within the hour: tried again later
        raise DeliveryFailed(str(limit)) from None


def _slack(session: Session, rule: AlertRule, alert: dict) -> None:
    connection = connection_named(session, rule.target)
    if connection is None or connection.service_key != "slack":
        raise Undeliverable(f"no Slack connection named {rule.target!r} any more")
    text = f":rotating_light: {summary(alert)}.\n{_details(alert)}"
    try:
        post_to_slack(connection, _keys(), outbound_policy(), text, idempotency_key=alert["id"])
    except (ValueError, outbound.OutboundRefused) as error:
        raise DeliveryFailed(str(error)) from None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Nectar-Signature of a webhook body: `t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`.
    A receiver recomputes it with the rule's secret, and refuses old timestamps (replays)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _webhook(session: Session, rule: AlertRule, alert: dict) -> None:
    try:
        secret = _keys().decrypt(rule.secret_ciphertext).decode()
    except DecryptionFailed as error:  # its key was removed from the settings: tried again later
        raise DeliveryFailed(str(error)) from None
    body = json.dumps(alert, separators=(",", ":"), sort_keys=True)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": alert["id"],
        SIGNATURE_HEADER: signature(secret, int(time.time()), body.encode()),
    }
    try:
        result = outbound.send(
            "POST", rule.target, policy=outbound_policy(), headers=headers, body=body, timeout=TIMEOUT_SECONDS
        )
    except outbound.OutboundUnavailable as error:
        raise DeliveryFailed(str(error)) from None
    except outbound.OutboundRefused as error:  # an address it may never call: trying again cannot help
        raise Undeliverable(str(error)) from None
    if not 200 <= result.status < 300:
        raise DeliveryFailed(f"the webhook answered {result.status}")


def _workflow(session: Session, rule: AlertRule, alert: dict) -> None:
    workflow = session.get(Workflow, uuid.UUID(rule.target))
    if workflow is None:
        raise Undeliverable("the error workflow was deleted")
    version = version_of(session, workflow.id, workflow.current_version) if workflow.is_active else None
    if version is None:
        raise Undeliverable(f"the error workflow {quoted(workflow.name, 100)} has no active version")
    key = f"alert:{alert['id']}"
    if run_for_key(session, workflow.id, key) is None:  # not started by an earlier attempt
        run_input = {
            "alert_id": alert["id"],
            "fired_at": alert["fired_at"],
            "failures": alert["failures"],
            "rule": alert["rule"],
            "failed_run": alert["failed_run"],
        }
        try:
            queue_run(session, rule.org_id, workflow.id, version.id, ALERT_TRIGGER, run_input, key=key)
        except QueueFull as full:  # the queue drains, the quota resets: said on the rule, tried again
            raise DeliveryFailed(str(full)) from None


_CHANNELS = {"email": _email, "slack": _slack, "webhook": _webhook, "workflow": _workflow}


def _keys():
    return current_app.config["NECTAR_KEY_RING"]
