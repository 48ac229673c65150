"""Billing's settings, read from the environment once when the app is built, and the backend
chosen from them (backends.py).

With STRIPE_SECRET_KEY, checkout and the portal go to Stripe. Without it, outside production, the
pricing page offers a local test checkout whose events are signed with a development webhook secret
and go through the same webhook endpoint; in production, no key means billing is off.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app

from nectar.marketing.billing.backends import BillingBackend, choose_backend
from nectar.shared.config import (
    STRIPE_API_BASE,
    ConfigError,
    Service,
    Settings,
    development_secret,
    load_stripe_settings,
)

CONFIG_KEY = "NECTAR_BILLING"
BACKEND_KEY = "NECTAR_BILLING_BACKEND"
DEFAULT_API_BASE = STRIPE_API_BASE
DEV_SECRET_FILE = "stripe-dev-webhook-secret"  # noqa: S105 - a file name


@dataclass(frozen=True)
class BillingConfig:
    secret_key: str | None = None
    # What webhook signatures are checked with (and the test checkout signs with): STRIPE_WEBHOOK_SECRET,
    # or outside production the development secret. None (production without it): webhooks are off.
    webhook_secret: str | None = None
    price_ids: dict[str, str] = field(default_factory=dict)
    api_base: str = DEFAULT_API_BASE
    meter_event_name: str = "nectar_runs"  # the Billing Meter paid plans' daily runs are reported to
    # Where customers sign in to core (links in emails and on the success page).
    core_public_url: str = "http://127.0.0.1:3001"
    production: bool = False


def load_billing_config(settings: Settings, environ: Mapping[str, str] | None = None) -> BillingConfig:
    """Checks the STRIPE_* variables (read by nectar.shared.config.load_stripe_settings from
    `environ`, default the process's); raises ConfigError when production is half configured."""
    stripe = load_stripe_settings(environ)
    secret_key, webhook_secret = stripe.secret_key, stripe.webhook_secret
    if settings.is_production and secret_key and not webhook_secret:
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET is not set; with STRIPE_SECRET_KEY, production must verify Stripe's webhooks"
        )
    if secret_key and not secret_key.startswith(("sk_", "rk_")):
        raise ConfigError(
            "STRIPE_SECRET_KEY must be a Stripe secret key (sk_live_..., sk_test_... or rk_...)"
        )
    if not webhook_secret and not settings.is_production:
        webhook_secret = development_webhook_secret(settings.var_dir)
    return BillingConfig(
        secret_key=secret_key,
        webhook_secret=webhook_secret,
        price_ids=stripe.price_ids,
        api_base=stripe.api_base,
        meter_event_name=stripe.meter_event_name,
        core_public_url=settings.public_urls[Service.CORE],
        production=settings.is_production,
    )


def configure_billing(app: Flask, config: BillingConfig) -> None:
    """Binds the configuration and the backend chosen from it, once, to the app."""
    app.config[CONFIG_KEY] = config
    app.config[BACKEND_KEY] = choose_backend(config)


def billing_config() -> BillingConfig:
    return current_app.config[CONFIG_KEY]


def billing_backend() -> BillingBackend:
    return current_app.config[BACKEND_KEY]


def development_webhook_secret(var_dir: Path) -> str:
    """One secret per var directory, shared by the web process and the worker (SECRET_KEY may be
    a per-process random key in development, so it cannot be derived from that)."""
    return development_secret(var_dir / DEV_SECRET_FILE, lambda: f"whsec_dev_{secrets.token_urlsafe(32)}")
