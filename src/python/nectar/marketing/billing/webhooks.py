"""Receiving Stripe's webhooks: verify the signature over the raw body, store the event once by its
id, and queue its processing in the same transaction. Nothing else happens before the 2xx answer,
so Stripe is answered fast and an event is never lost between receipt and processing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import stripe
from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.billing.queue import enqueue_event
from nectar.shared.bad_input import loads_json
from nectar.shared.rejection import InputRejected

WEBHOOK_PATH = "/stripe/webhook"
TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "Stripe-Signature"

_STORE = text(
    "INSERT INTO stripe_events (id, type, payload, stripe_created, livemode) "
    "VALUES (:id, :type, CAST(:payload AS jsonb), :created, :livemode) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


class InvalidWebhook(Exception):
    """The request is not a genuine, fresh Stripe event; `str()` says why (for the 400 answer)."""


def verify(payload: bytes, header: str | None, secret: str) -> dict:
    """The event in `payload`, if `header` signs it with `secret` within the tolerance (either way:
    a signature dated in the future is refused like a stale one), and it is an event we can store."""
    if not header:
        raise InvalidWebhook(f"The {SIGNATURE_HEADER} header is missing.")
    now = time.time()
    try:
        body = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_SECONDS)
    except UnicodeDecodeError:
        raise InvalidWebhook("The body is not UTF-8 text.") from None
    except stripe.SignatureVerificationError as error:
        raise InvalidWebhook(f"The signature does not verify: {error.user_message}.") from None
    if _signed_at(header) > now + TOLERANCE_SECONDS:
        raise InvalidWebhook("The signature is dated in the future; check the clock.")
    try:
        event = loads_json(body)
    except InputRejected as bad:
        raise InvalidWebhook(bad.detail) from None
    data = event.get("data") if isinstance(event, dict) else None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and 0 < len(event["type"]) <= 100
        and isinstance(event.get("created"), int)
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    ):
        raise InvalidWebhook("The body is not a Stripe event (id, type, created, data.object).")
    if not 0 < event["created"] <= now + TOLERANCE_SECONDS:
        raise InvalidWebhook("The event's created time is not a time Stripe could have made it.")
    return event


def _signed_at(header: str) -> int:
    """The t= of a Stripe-Signature header (verify_header has read it already, so it is there)."""
    stamp = next(part for part in header.split(",") if part.strip().startswith("t="))
    return int(stamp.strip()[2:])


def store(session: Session, event: dict) -> bool:
    """Stores the event and queues its processing, once per event id; False for a repeat delivery."""
    stored = session.execute(
        _STORE,
        {
            "id": event["id"],
            "type": event["type"],
            "payload": json.dumps(event),
            "created": event["created"],
            "livemode": bool(event.get("livemode")),
        },
    ).scalar()
    if stored is None:
        return False
    enqueue_event(session, event["id"])
    return True


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe computes it (for the test checkout)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
