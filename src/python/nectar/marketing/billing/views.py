"""Billing pages: pricing and checkout, success and cancel, the customer-portal link, the test
checkout that stands in for Stripe without keys, and Stripe's webhook endpoint."""

from __future__ import annotations

import re
from dataclasses import asdict

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request

from nectar.core.contract.plans import EVERY_PLAN
from nectar.marketing.billing import service, webhooks
from nectar.marketing.billing.backends import BillingUnavailable, TestCheckoutOff
from nectar.marketing.billing.config import (
    billing_backend,
    billing_config,
    configure_billing,
    load_billing_config,
)
from nectar.marketing.billing.forms import CheckoutForm, ConfirmForm, PortalForm
from nectar.marketing.billing.plans import current_plans, find_plan
from nectar.marketing.billing.queue import enqueue_sandbox_delivery
from nectar.marketing.billing.stripe_api import StripeUnavailable
from nectar.marketing.extensions import csrf
from nectar.marketing.limits import RateLimited, refused
from nectar.marketing.links import (
    CHECKOUT_CANCEL_PATH,
    CHECKOUT_SUCCESS_PATH,
    PORTAL_PATH,
    TEST_CHECKOUT_PATH,
    app_links,
)
from nectar.shared.database import db
from nectar.shared.tokens import TokenInvalid
from nectar.shared.web import external_url, form_status, problem

billing = Blueprint("billing", __name__)
CHECKOUT_SESSION_ID = re.compile(r"cs_(test|live)_[A-Za-z0-9]{1,200}")


@billing.record_once
def _load_config(state) -> None:
    # Read once when the app is built; tests replace it with configure_billing.
    configure_billing(state.app, load_billing_config(state.app.config["NECTAR_SETTINGS"]))


def _settings():
    return current_app.config["NECTAR_SETTINGS"]


def _pricing_page(submitted: CheckoutForm | None = None, *, error: str | None = None, status: int = 200):
    backend = billing_backend()
    plans = current_plans(db.session, backend)
    forms, error_plan = {}, None
    for plan in plans:
        if not plan.paid or not plan.price_id or not backend.sells_online:
            continue  # no form on this card
        if submitted is not None and submitted.plan.data == plan.key:
            forms[plan.key], error_plan = submitted, plan.key  # shown again with what was typed
        else:
            forms[plan.key] = CheckoutForm(formdata=None, plan=plan.key, nonce=service.new_nonce())
    page = render_template(
        "marketing/billing/pricing.html",
        plans=plans,
        forms=forms,
        mode=backend.mode,
        error=error,
        error_plan=error_plan,  # the card that shows the error; None: shown above the cards
        portal_form=PortalForm(formdata=None),
        every_plan=EVERY_PLAN,
    )
    return page, status


@billing.get("/pricing")
def pricing():
    return _pricing_page()


@billing.post("/billing/checkout")
def checkout():
    form = CheckoutForm()
    if not form.validate_on_submit():
        return _pricing_page(form, status=form_status(form))
    start = service.CheckoutStart(
        plan=form.plan.data,
        email=form.email.data,
        organization_name=form.organization_name.data,
        nonce=form.nonce.data or "",
        address=request.remote_addr,
    )
    try:
        destination = service.start_checkout(db.session, billing_backend(), start, app_links())
    except RateLimited as limited:
        page, _ = _pricing_page(form, error=str(limited))
        return refused(limited, page)
    except service.NotForSale as not_for_sale:
        return _pricing_page(form, error=str(not_for_sale), status=400)
    except (BillingUnavailable, StripeUnavailable) as unavailable:
        db.session.rollback()
        return _pricing_page(form, error=str(unavailable), status=503)
    return redirect(destination, code=303)


@billing.get(CHECKOUT_SUCCESS_PATH)
def success():
    session_id = request.args.get("session_id", "")
    if not CHECKOUT_SESSION_ID.fullmatch(session_id):
        abort(404, "There is no checkout at this address. If you just paid, check your email.")
    status = service.checkout_status(db.session, session_id)
    plan = find_plan(current_plans(db.session, billing_backend()), status.plan)
    return render_template("marketing/billing/success.html", status=status, plan=plan)


@billing.get(CHECKOUT_CANCEL_PATH)
def cancel():
    plan = find_plan(current_plans(db.session, billing_backend()), request.args.get("plan"))
    return render_template("marketing/billing/cancel.html", plan=plan)


@billing.route(PORTAL_PATH, methods=["GET", "POST"])
def portal():
    form = PortalForm()
    if not form.validate_on_submit():
        return render_template("marketing/billing/portal.html", form=form), form_status(form)
    try:
        service.request_portal_link(
            db.session,
            _settings().secret_key,
            form.email.data,
            request.remote_addr,
            lambda token: external_url("billing.portal_link", token=token),
        )
    except RateLimited as limited:
        return refused(
            limited, render_template("marketing/billing/portal.html", form=form, error=str(limited))
        )
    db.session.commit()
    return render_template("marketing/billing/portal_sent.html")


@billing.route(f"{PORTAL_PATH}/<token>", methods=["GET", "POST"])
def portal_link(token: str):
    # Opening the portal is a POST: a mail scanner that follows the link must not open a session.
    form = ConfirmForm()
    if not form.validate_on_submit():
        return render_template("marketing/billing/portal_open.html", form=form)
    try:
        url = service.open_portal(
            billing_backend(), _settings().secret_key, token, external_url("billing.pricing")
        )
    except TokenInvalid as invalid:
        return render_template("marketing/billing/portal_open.html", form=form, error=str(invalid)), 400
    except (BillingUnavailable, StripeUnavailable) as unavailable:
        return render_template("marketing/billing/portal_open.html", form=form, error=str(unavailable)), 503
    return redirect(url, code=303)


def _sandbox_session(token: str):
    try:
        return billing_backend().test_checkout(token)
    except TestCheckoutOff as off:
        abort(404, str(off))
    except TokenInvalid:
        abort(
            400,
            "This test checkout has expired or its address is incomplete. Start again from the pricing page.",
        )


@billing.route(f"{TEST_CHECKOUT_PATH}<token>", methods=["GET", "POST"])
def sandbox_checkout(token: str):
    checkout = _sandbox_session(token)
    form = ConfirmForm()
    if form.validate_on_submit():
        # What Stripe does after a payment: send the events, then the customer to the success page.
        enqueue_sandbox_delivery(db.session, asdict(checkout))
        db.session.commit()
        return redirect(checkout.success_url, code=303)
    return render_template("marketing/billing/sandbox.html", checkout=checkout, form=form)


@billing.post(webhooks.WEBHOOK_PATH)
@csrf.exempt
def stripe_webhook():
    secret = billing_config().webhook_secret
    if secret is None:
        return problem(503, "Stripe webhooks are off: STRIPE_WEBHOOK_SECRET is not set.")
    try:
        event = webhooks.verify(request.get_data(), request.headers.get(webhooks.SIGNATURE_HEADER), secret)
    except webhooks.InvalidWebhook as invalid:
        return problem(400, str(invalid))
    stored = webhooks.store(db.session, event)
    db.session.commit()
    return jsonify(received=True, duplicate=not stored)
