"""A local stand-in for Stripe's API, for the one thing tests cannot reach: Stripe.

It is a real HTTP server on loopback speaking Stripe's protocol: form-encoded requests with nested
`a[b][0]` keys, a secret key in `Authorization: Bearer`, JSON objects and Stripe's error bodies, and
the `Idempotency-Key` header honoured as Stripe does (the same key and parameters replay the first
answer; the same key with other parameters is an `idempotency_error`). The official SDK talks to it
through `base_addresses={"api": fake.url}`. Every request is recorded for assertions.

It also makes what Stripe would send when a checkout completes (objects and events), and signs
webhook payloads the way Stripe does, computed here independently of the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from werkzeug.datastructures import MultiDict
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

API_VERSION = "2025-10-29.clover"
MONTH = 30 * 24 * 3600


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    headers: dict[str, str]
    status: int = 0


def decode_form(form: MultiDict) -> dict:
    """Stripe's form encoding (`metadata[plan]=pro`, `line_items[0][price]=...`) as nested JSON."""
    root: dict = {}
    for key, value in form.items(multi=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node):
    if isinstance(node, dict):
        if node and all(key.isdigit() for key in node):
            return [_lists(node[key]) for key in sorted(node, key=int)]
        return {key: _lists(value) for key, value in node.items()}
    return node


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def event(kind: str, obj: dict, created: int | None = None) -> dict:
    """An event envelope as Stripe delivers it."""
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": new_id("req"), "idempotency_key": None},
        "type": kind,
    }


def price(
    price_id: str, amount: int, interval: str = "month", currency: str = "usd", interval_count: int = 1
) -> dict:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": currency,
        "livemode": False,
        "product": new_id("prod"),
        "recurring": {"interval": interval, "interval_count": interval_count, "usage_type": "licensed"},
        "type": "recurring",
        "unit_amount": amount,
    }


def subscription(
    customer: str,
    price_object: dict,
    *,
    subscription_id: str | None = None,
    status: str = "active",
    metadata: dict | None = None,
    quantity: int = 1,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    period_end: int | None = None,
) -> dict:
    """A Subscription object in the current API version (the period lives on the item)."""
    now = int(time.time())
    subscription_id = subscription_id or new_id("sub")
    return {
        "id": subscription_id,
        "object": "subscription",
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "created": now,
        "currency": price_object["currency"],
        "customer": customer,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": new_id("si"),
                    "object": "subscription_item",
                    "current_period_start": now,
                    "current_period_end": period_end or now + MONTH,
                    "price": price_object,
                    "quantity": quantity,
                    "subscription": subscription_id,
                }
            ],
            "has_more": False,
        },
        "livemode": False,
        "metadata": metadata or {},
        "status": status,
    }


def invoice(subscription_object: dict, *, status: str = "paid", email: str | None = None) -> dict:
    item = subscription_object["items"]["data"][0]
    return {
        "id": new_id("in"),
        "object": "invoice",
        "amount_due": item["price"]["unit_amount"],
        "amount_paid": item["price"]["unit_amount"] if status == "paid" else 0,
        "attempt_count": 1,
        "billing_reason": "subscription_cycle",
        "currency": item["price"]["currency"],
        "customer": subscription_object["customer"],
        "customer_email": email,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": item["price"]["unit_amount"],
                    "pricing": {"price_details": {"price": item["price"]["id"]}, "type": "price_details"},
                    "quantity": item["quantity"],
                }
            ],
        },
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "metadata": subscription_object["metadata"],
                "subscription": subscription_object["id"],
            },
        },
        "status": status,
    }


class HeldAnswer:
    """An answer the fake has made (its effect done, an idempotency key's answer kept) but not
    sent: `started` is set when the request arrives; it is sent once `release()` is called."""

    def __init__(self):
        self.started = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait(self) -> None:
        self.started.set()
        self._released.wait(30)


class SlowRead(HeldAnswer):
    """A read of one object held by the fake: `started` is set when it arrives; it is answered
    with the older state once `release()` is called."""

    def __init__(self, older: dict):
        super().__init__()
        self.older = json.loads(json.dumps(older))

    def answer(self) -> dict:
        self.wait()
        return self.older


@dataclass
class StripeFake:
    secret_key: str = field(default_factory=lambda: f"sk_test_fake_{secrets.token_hex(8)}")
    prices: dict[str, dict] = field(default_factory=dict)
    objects: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    # Billing Meters by event name, the meter events accepted, and how many of the next ones fail
    # as Stripe's own trouble would (500): what a retry must cure without billing twice.
    meters: set[str] = field(default_factory=set)
    meter_events: list[dict] = field(default_factory=list)
    meter_failures: int = 0

    def __post_init__(self):
        self._held: dict[str, SlowRead] = {}  # object id -> how its next read is answered
        self._held_answers: dict[tuple[str, str], HeldAnswer] = {}  # (method, path) -> its next answer
        self._idempotent: dict[str, tuple[str, int, dict]] = {}
        self._created_with: dict[str, dict] = {}  # checkout session id -> the parameters it was made with
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StripeFake:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_price(self, price_id: str, amount: int) -> dict:
        self.prices[price_id] = price(price_id, amount)
        return self.prices[price_id]

    def put(self, obj: dict) -> dict:
        """Stores an object as Stripe has it now (what a retrieve returns)."""
        self.objects[obj["id"]] = obj
        return obj

    def answer_next_read_slowly(self, object_id: str, older: dict) -> SlowRead:
        """The next GET of `object_id` answers `older` (the state before a change, as a read that
        began before it would see) and waits until the returned SlowRead is released."""
        held = SlowRead(older)
        self._held[object_id] = held
        return held

    def hold_next_answer(self, method: str, path: str) -> HeldAnswer:
        """The next `method path` request is carried out, and its answer held until released."""
        held = HeldAnswer()
        self._held_answers[(method, path)] = held
        return held

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def complete_checkout(self, session_id: str) -> list[dict]:
        """Pays a checkout session as a customer would on Stripe's page; returns the events Stripe
        sends for it (subscription created, invoice paid, checkout completed)."""
        session = self.objects[session_id]
        request = self._created_with[session_id]
        line = request["line_items"][0]
        customer = self.put({"id": new_id("cus"), "object": "customer", "email": session["customer_email"]})
        sub = self.put(
            subscription(
                customer["id"],
                self.prices[line["price"]],
                metadata=(request.get("subscription_data") or {}).get("metadata") or {},
                quantity=int(line.get("quantity", 1)),
            )
        )
        session.update(
            customer=customer["id"],
            subscription=sub["id"],
            status="complete",
            payment_status="paid",
            customer_details={"email": session["customer_email"], "name": None},
            url=None,
        )
        return [
            event("customer.subscription.created", sub),
            event("invoice.paid", invoice(sub, email=session["customer_email"])),
            event("checkout.session.completed", dict(session)),
        ]

    # The HTTP side.

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        params = decode_form(request.form) if request.method == "POST" else dict(request.args)
        recorded = Recorded(request.method, request.path, params, dict(request.headers))
        with self._lock:
            self.requests.append(recorded)
            status, body, replayed = self._answer(request, params)
            held = self._held.pop(request.path.rsplit("/", 1)[-1], None) if request.method == "GET" else None
            held_answer = self._held_answers.pop((request.method, request.path), None)
        if held is not None and status == 200:
            body = held.answer()  # outside the lock: other requests are answered meanwhile
        if held_answer is not None:
            held_answer.wait()
        recorded.status = status
        response = Response(json.dumps(body), status=status, content_type="application/json")
        response.headers["Request-Id"] = new_id("req")
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response(environ, start_response)

    def _answer(self, request: Request, params: dict) -> tuple[int, dict, bool]:
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return 401, _error("invalid_request_error", "Invalid API Key provided."), False
        key = request.headers.get("Idempotency-Key")
        fingerprint = json.dumps([request.method, request.path, params], sort_keys=True)
        if request.method == "POST" and key:
            if key in self._idempotent:
                first, status, body = self._idempotent[key]
                if first != fingerprint:
                    message = (
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request."
                    )
                    return 400, _error("idempotency_error", message), False
                return status, body, True
        status, body = self._route(request.method, request.path, params)
        if request.method == "POST" and key and status < 500:
            self._idempotent[key] = (fingerprint, status, body)
        return status, body, False

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        if method == "POST" and path == "/v1/checkout/sessions":
            return self._create_checkout(params)
        if method == "POST" and path == "/v1/billing_portal/sessions":
            return self._create_portal(params)
        if method == "POST" and path == "/v1/billing/meter_events":
            return self._create_meter_event(params)
        match = re.fullmatch(r"/v1/(checkout/sessions|subscriptions|customers)/([\w-]+)", path)
        if method == "GET" and match:
            obj = self.objects.get(match.group(2))
            if obj is not None:
                return 200, obj
            return 404, _error(
                "invalid_request_error", f"No such object: '{match.group(2)}'", "resource_missing"
            )
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create_checkout(self, params: dict) -> tuple[int, dict]:
        for required in ("mode", "success_url"):
            if not params.get(required):
                return 400, _error(
                    "invalid_request_error", f"Missing required param: {required}.", "parameter_missing"
                )
        for line in params.get("line_items") or []:
            if line.get("price") not in self.prices:
                return 400, _error(
                    "invalid_request_error", f"No such price: '{line.get('price')}'", "resource_missing"
                )
        session_id = new_id("cs_test")
        now = int(time.time())
        session = self.put(
            {
                "id": session_id,
                "object": "checkout.session",
                "cancel_url": params.get("cancel_url"),
                "client_reference_id": params.get("client_reference_id"),
                "created": now,
                "customer": params.get("customer"),
                "customer_email": params.get("customer_email"),
                "expires_at": now + 86400,
                "livemode": False,
                "metadata": params.get("metadata") or {},
                "mode": params["mode"],
                "payment_status": "unpaid",
                "status": "open",
                "subscription": None,
                "success_url": params["success_url"],
                "url": f"{self.url}/c/pay/{session_id}",
            }
        )
        self._created_with[session_id] = params
        return 200, session

    def _create_meter_event(self, params: dict) -> tuple[int, dict]:
        if self.meter_failures > 0:
            self.meter_failures -= 1
            return 500, _error("api_error", "An unknown error occurred on Stripe's side.")
        payload = params.get("payload") or {}
        if params.get("event_name") not in self.meters:
            return 400, _error(
                "invalid_request_error", f"No active meter found for event name {params.get('event_name')!r}."
            )
        customer = payload.get("stripe_customer_id")
        if customer not in self.objects:
            return 400, _error("invalid_request_error", f"No such customer: '{customer}'", "resource_missing")
        if not str(payload.get("value", "")).isdigit():
            return 400, _error("invalid_request_error", "The payload's value must be a whole number.")
        timestamp = int(params.get("timestamp") or time.time())
        if not time.time() - 35 * 86400 <= timestamp <= time.time() + 300:
            return 400, _error("invalid_request_error", "Timestamp must be within the past 35 days.")
        identifier = params.get("identifier") or new_id("mev")
        if any(e["identifier"] == identifier for e in self.meter_events):
            return 400, _error(
                "invalid_request_error", f"An event already exists with identifier {identifier}.", "duplicate"
            )
        created = {
            "object": "billing.meter_event",
            "created": int(time.time()),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }
        self.meter_events.append(created)
        return 200, created

    def _create_portal(self, params: dict) -> tuple[int, dict]:
        customer = params.get("customer")
        if customer not in self.objects:
            return 400, _error("invalid_request_error", f"No such customer: '{customer}'", "resource_missing")
        portal_id = new_id("bps")
        return 200, {
            "id": portal_id,
            "object": "billing_portal.session",
            "created": int(time.time()),
            "customer": customer,
            "livemode": False,
            "return_url": params.get("return_url"),
            "url": f"{self.url}/p/session/{portal_id}",
        }


def _error(kind: str, message: str, code: str | None = None) -> dict:
    body = {"type": kind, "message": message}
    if code:
        body["code"] = code
    return {"error": body}
