"""Billing's jobs on marketing's queue: names, and enqueueing them in the caller's transaction.
The tasks themselves are in jobs.py (run by `marketing.pex worker`)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from nectar.shared.jobs import enqueue

QUEUE = "marketing"
PROCESS_EVENT = "billing.process_event"
PROVISION = "billing.provision"
SYNC_PLAN = "billing.sync_plan"
DELIVER_SANDBOX_EVENTS = "billing.deliver_sandbox_events"
SWEEP = "billing.sweep"
REPORT_USAGE = "billing.report_usage"


def _subscription_lock(subscription_id: uuid.UUID | str) -> str:
    # Provisioning and plan changes of one subscription run one at a time, in order.
    return f"billing.subscription:{subscription_id}"


def enqueue_event(session: Session, event_id: str) -> None:
    enqueue(session, PROCESS_EVENT, {"event_id": event_id}, queue=QUEUE)


def enqueue_provision(session: Session, subscription_id: uuid.UUID | str) -> None:
    args = {"subscription_id": str(subscription_id)}
    enqueue(session, PROVISION, args, queue=QUEUE, lock=_subscription_lock(subscription_id))


def enqueue_plan_sync(session: Session, subscription_id: uuid.UUID | str) -> None:
    args = {"subscription_id": str(subscription_id)}
    enqueue(session, SYNC_PLAN, args, queue=QUEUE, lock=_subscription_lock(subscription_id))


def enqueue_sandbox_delivery(session: Session, checkout: dict) -> None:
    enqueue(session, DELIVER_SANDBOX_EVENTS, {"checkout": checkout}, queue=QUEUE)
