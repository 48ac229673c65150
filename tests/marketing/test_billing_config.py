"""Billing's environment: read once at start, and a clear one-line refusal when it cannot work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nectar.marketing.billing.backends import BillingMode, choose_backend
from nectar.marketing.billing.config import load_billing_config
from nectar.shared.config import Service


def run_marketing(database, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **database.environ(**environ), "PYTHONPATH": os.pathsep.join(sys.path)}
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        if name not in environ:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "nectar.marketing.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"STRIPE_SECRET_KEY": "pk_live_publishable_by_mistake"},
            "STRIPE_SECRET_KEY must be a Stripe secret key",
        ),
        (
            {"NECTAR_ENV": "production", "STRIPE_SECRET_KEY": "sk_test_not_a_real_key"},
            "STRIPE_WEBHOOK_SECRET is not set",
        ),
    ],
)
def test_a_billing_setup_that_cannot_work_stops_the_worker_with_one_line(database, environ, message):
    finished = run_marketing(database, "worker", "--once", **environ)
    assert finished.returncode == 2
    assert finished.stderr.strip().count("\n") == 0 and message in finished.stderr


def test_modes_follow_the_keys(settings_for, tmp_path):
    development = settings_for(Service.MARKETING, NECTAR_VAR_DIR=str(tmp_path))
    production = settings_for(
        Service.MARKETING,
        NECTAR_ENV="production",
        NECTAR_VAR_DIR=str(tmp_path / "prod"),
        CORE_PUBLIC_URL="https://app.example.com/",
    )

    test_mode = load_billing_config(development, {})
    assert choose_backend(test_mode).mode is BillingMode.TEST
    secret = test_mode.webhook_secret
    assert secret.startswith("whsec_dev_") and load_billing_config(development, {}).webhook_secret == secret

    off = load_billing_config(production, {})
    assert choose_backend(off).mode is BillingMode.OFF and off.webhook_secret is None
    assert not (tmp_path / "prod").exists(), "production never makes a development secret"

    stripe = load_billing_config(
        production,
        {
            "STRIPE_SECRET_KEY": "sk_test_abc",
            "STRIPE_WEBHOOK_SECRET": "whsec_live",
            "STRIPE_PRICE_STARTER": "price_s",
            "STRIPE_PRICE_PRO": "price_p",
        },
    )
    assert choose_backend(stripe).mode is BillingMode.STRIPE and stripe.webhook_secret == "whsec_live"
    assert stripe.price_ids == {"starter": "price_s", "pro": "price_p"}
    assert stripe.core_public_url == "https://app.example.com"
