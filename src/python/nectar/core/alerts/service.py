"""Alert rules: an organization says whom to tell when its runs fail, and the check that decides
when a rule fires.

A failed run (not one an alert started) queues one check of its organization's rules
(runs/records.py). A rule fires when `threshold` runs of its workflow (any workflow, without one)
failed within its window, at most once per window: the decision is one UPDATE that only succeeds
when the rule has not fired within its window, so concurrent checks and storms of failures make one
alert. Failures held back by the window are looked at again when it ends, so the last burst of a
storm is told too. Each alert is delivered by a job of its own (delivery.py), retried until the
channel takes it.

All functions work inside the session's tenant scope; ids from another organization are simply
not found.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.integrations.service import connection_named
from nectar.core.org_mail.service import single_address
from nectar.core.runs.records import SILENT_FAILURES
from nectar.core.runs.runner import outbound_policy
from nectar.core.workflows import outbound
from nectar.core.workflows.definition import Problem
from nectar.schema.models import AlertRule, Workflow
from nectar.schema.models.alerts import ALERT_CHANNELS, MAX_WINDOW_MINUTES
from nectar.schema.models.columns import max_length
from nectar.shared.encryption import KeyRing
from nectar.shared.rejection import InputRejected

MAX_RULES = 50  # per organization
MAX_THRESHOLD = 1000  # failures counted for one decision; more are "1000 or more"
NAME_MAX = max_length(AlertRule.name)
TARGET_MAX = max_length(AlertRule.target)
FIELDS = ("name", "workflow_id", "threshold", "window_minutes", "channel", "target", "enabled")
TARGET_HELP = {
    "email": "an email address",
    "slack": "the name of a Slack connection",
    "webhook": "an http or https URL",
    "workflow": "the id of a workflow",
}


INVALID_RULE = "The alert rule is not valid."


def _require_admin(ctx: OrgContext) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change alert rules.")


def list_rules(session: Session) -> list[AlertRule]:
    return list(session.scalars(select(AlertRule).order_by(AlertRule.created_at, AlertRule.id)))


def get_rule(session: Session, rule_id: uuid.UUID) -> AlertRule:
    rule = session.get(AlertRule, rule_id)
    if rule is None:
        raise LookupError("no such alert rule")
    return rule


def create_rule(
    session: Session, ctx: OrgContext, keys: KeyRing, data: dict, user_id: uuid.UUID | None = None
) -> tuple[AlertRule, str | None]:
    """Creates a rule from `data` (FIELDS; name, channel and target required). Returns it and, for a
    webhook, its signing secret: shown this once, stored encrypted."""
    _require_admin(ctx)
    values = _checked(session, data, required=("name", "channel", "target"))
    # Counted under a lock, so concurrent creations cannot pass the limit together.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"alerts:{ctx.org_id}"}
    )
    if session.scalar(select(func.count()).select_from(AlertRule)) >= MAX_RULES:
        raise InputRejected(
            INVALID_RULE, [Problem("/", f"An organization has at most {MAX_RULES} alert rules.")]
        )
    rule = AlertRule(id=uuid.uuid4(), org_id=ctx.org_id, created_by=user_id, **values)
    secret = None
    if rule.channel == "webhook":
        secret = "whsec_" + secrets.token_urlsafe(32)
        rule.secret_ciphertext, rule.key_id = keys.encrypt(secret.encode())
    _flush(session, rule)
    return rule, secret


def update_rule(session: Session, ctx: OrgContext, rule: AlertRule, data: dict) -> AlertRule:
    """Changes the fields `data` names. The channel stays: a new channel is a new rule."""
    _require_admin(ctx)
    for name, value in _checked(session, data, current=rule).items():
        setattr(rule, name, value)
    _flush(session, rule)
    return rule


def delete_rule(session: Session, ctx: OrgContext, rule_id: uuid.UUID) -> None:
    _require_admin(ctx)
    session.delete(get_rule(session, rule_id))


def _flush(session: Session, rule: AlertRule) -> None:
    session.add(rule)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        if "uq_alert_rules_org_id_name" not in str(error.orig):
            raise
        raise InputRejected(
            INVALID_RULE, [Problem("/name", f"An alert rule named {rule.name!r} exists already.")]
        ) from None


def _checked(
    session: Session, data: dict, *, required: tuple[str, ...] = (), current: AlertRule | None = None
) -> dict:
    """The rule's values from `data`, or InputRejected naming every field that is wrong."""
    unknown = (str(name).replace("~", "~0").replace("/", "~1") for name in data if name not in FIELDS)
    problems = [Problem(f"/{name}", "Unknown field.") for name in unknown]
    problems += [Problem(f"/{name}", "Required.") for name in required if name not in data]
    values: dict = {}
    for name in FIELDS:
        if name not in data:
            continue
        if data[name] is None and name != "workflow_id":
            problems.append(Problem(f"/{name}", "Required; null is not a value here."))
            continue
        try:
            values[name] = _FIELD_CHECKS[name](session, data[name])
        except ValueError as error:
            problems.append(Problem(f"/{name}", str(error)))
    channel = current.channel if current is not None else values.get("channel")
    if current is not None and values.get("channel", channel) != channel:
        problems.append(Problem("/channel", "A rule keeps its channel; create a new rule for another."))
    elif "target" in values and channel is not None:
        try:
            values["target"] = _target(session, channel, values["target"])
        except ValueError as error:
            problems.append(Problem("/target", str(error)))
    if problems:
        raise InputRejected(INVALID_RULE, problems)
    return values


def _text(value, limit: int) -> str:
    """Text fit to store: a string, no NUL or other control character, no lone surrogate."""
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    value = value.strip()
    if any(ord(char) < 32 or 0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise ValueError("Must not hold control characters or invalid Unicode.")
    if not 1 <= len(value) <= limit:
        raise ValueError(f"Use 1 to {limit} characters.")
    return value


def _whole(value, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # a form's field
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"A whole number from {low} to {high}.")
    return value


def _workflow(session: Session, value) -> uuid.UUID | None:
    if value in (None, ""):
        return None
    try:
        workflow_id = uuid.UUID(_text(value, 36))
    except ValueError:
        raise ValueError("A workflow's id, or null for any workflow.") from None
    if session.get(Workflow, workflow_id) is None:
        raise ValueError("No such workflow in this organization.")
    return workflow_id


def _enabled(_session: Session, value) -> bool:
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"  # a form's field
    if not isinstance(value, bool):
        raise ValueError("true or false.")
    return value


def _channel(_session: Session, value) -> str:
    if value not in ALERT_CHANNELS:
        raise ValueError(f"One of {', '.join(ALERT_CHANNELS)}.")
    return value


_FIELD_CHECKS = {
    "name": lambda _session, value: _text(value, NAME_MAX),
    "workflow_id": _workflow,
    "threshold": lambda _session, value: _whole(value, 1, MAX_THRESHOLD),
    "window_minutes": lambda _session, value: _whole(value, 1, MAX_WINDOW_MINUTES),
    "channel": _channel,
    "target": lambda _session, value: _text(value, TARGET_MAX),
    "enabled": _enabled,
}


def _target(session: Session, channel: str, target: str) -> str:
    """The channel's target, normalised, or ValueError saying what it should be."""
    if channel == "email":
        return single_address(target)
    if channel == "slack":
        connection = connection_named(session, target)
        if connection is None or connection.service_key != "slack":
            raise ValueError(f"No Slack connection named {target!r} in this organization.")
        return target
    if channel == "webhook":
        try:  # the check every delivery makes again: a private or internal address is never called
            outbound.check_url(target, outbound_policy())
        except outbound.OutboundUnavailable:
            pass  # it may resolve by the time an alert is sent
        except outbound.OutboundRefused as error:
            raise ValueError(f"Not an address alerts may call: {error}.") from None
        return target
    return str(_workflow(session, target))


@dataclass(frozen=True)
class Alert:
    """A rule that fired: what its delivery tells, as the delivery job's arguments carry it."""

    rule_id: uuid.UUID
    body: dict


_RECENT_FAILURES = text(f"""
    SELECT r.id, r.workflow_id, w.name AS workflow_name, r.version_id, r.trigger, r.error, r.started_at,
           r.finished_at, count(*) OVER () AS failures
    FROM (SELECT id, workflow_id, version_id, trigger, error, started_at, finished_at FROM workflow_runs
          WHERE status = 'failed' AND {SILENT_FAILURES}
            AND finished_at > now() - make_interval(mins => :window_minutes)
            AND (CAST(:workflow_id AS uuid) IS NULL OR workflow_id = CAST(:workflow_id AS uuid))
          ORDER BY finished_at DESC LIMIT {MAX_THRESHOLD}) AS r
    LEFT JOIN workflows w ON w.id = r.workflow_id
    ORDER BY r.finished_at DESC LIMIT 1
    """)  # noqa: S608 - built from constants only
# The decision: fired now, unless it fired within its window already (the row lock makes
# concurrent checks wait, and the later one then sees the earlier one's time).
_FIRE = text(
    "UPDATE alert_rules SET last_fired_at = now() WHERE id = :id AND enabled "
    "AND (last_fired_at IS NULL OR last_fired_at <= now() - make_interval(mins => window_minutes)) "
    "RETURNING last_fired_at"
)


def fire_due_rules(
    session: Session, org_id: uuid.UUID
) -> tuple[list[Alert], list[tuple[AlertRule, datetime]]]:
    """Decides, in the session's transaction, which of the organization's enabled rules fire now.
    Returns their alerts, and the rules that would have fired but for their window, with when
    their window ends (to look again then)."""
    fired, held_back = [], []
    for rule in session.scalars(select(AlertRule).where(AlertRule.enabled).order_by(AlertRule.id)):
        latest = session.execute(
            _RECENT_FAILURES, {"window_minutes": rule.window_minutes, "workflow_id": rule.workflow_id}
        ).one_or_none()
        if latest is None or latest.failures < rule.threshold:
            continue
        fired_at = session.scalar(_FIRE, {"id": rule.id})
        if fired_at is None:
            session.refresh(rule, ["last_fired_at", "enabled"])
            if rule.enabled and rule.last_fired_at is not None:  # not turned off meanwhile
                held_back.append((rule, rule.last_fired_at + timedelta(minutes=rule.window_minutes)))
            continue
        fired.append(Alert(rule.id, _alert_body(rule, latest, fired_at, org_id)))
    return fired, held_back


def _alert_body(rule: AlertRule, latest, fired_at: datetime, org_id: uuid.UUID) -> dict:
    """What every channel tells: the rule, how many runs failed in its window, and the latest."""
    return {
        "id": str(uuid.uuid4()),
        "type": "workflow_runs.failed",
        "organization_id": str(org_id),
        "fired_at": fired_at.astimezone(UTC).isoformat(),
        "failures": latest.failures,
        "rule": {
            "id": str(rule.id),
            "name": rule.name,
            "workflow_id": str(rule.workflow_id) if rule.workflow_id else None,
            "threshold": rule.threshold,
            "window_minutes": rule.window_minutes,
        },
        "failed_run": {
            "id": str(latest.id),
            "workflow_id": str(latest.workflow_id),
            "workflow_name": latest.workflow_name,
            "version_id": str(latest.version_id),
            "trigger": latest.trigger,
            "error": latest.error,
            "started_at": _iso(latest.started_at),
            "finished_at": _iso(latest.finished_at),
            "url": page_url("workflow_pages.run_detail", run_id=latest.id),
        },
    }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def page_url(endpoint: str, **values) -> str:
    """The public address of one of core's pages, built outside a request (in the worker)."""
    path = current_app.url_map.bind("").build(endpoint, values)
    return current_app.config["NECTAR_SETTINGS"].public_url + path
