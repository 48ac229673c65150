"""The pricing page is rendered from the plans core enforces (nectar.core.contract.plans): each
card lists exactly its plan's limits, included usage, features and support, and nothing else."""

from __future__ import annotations

import html
import re

import pytest

from nectar.core.contract.plans import EVERY_PLAN, PLANS, Feature
from nectar.marketing.billing.config import BillingConfig
from tests.marketing.billing_helpers import WEBHOOK_SECRET, billing_app, browser, close_app


@pytest.fixture(scope="module")
def app(settings_for):
    app = billing_app(settings_for, BillingConfig(webhook_secret=WEBHOOK_SECRET))
    yield app
    close_app(app)


def cards(page: str) -> dict[str, list[str]]:
    """Each plan card's listed lines, by plan key."""
    found = {}
    for key, card in re.findall(
        r'<article class="card plan[^"]*" id="plan-(\w+)">(.*?)</article>', page, re.S
    ):
        lines = re.search(r'<ul class="plan-features">(.*?)</ul>', card, re.S).group(1)
        found[key] = [html.unescape(line) for line in re.findall(r"<li>(.*?)</li>", lines)]
    return found


def test_each_card_lists_what_core_enforces_for_that_plan(app):
    page = browser(app).get("/pricing").get_data(as_text=True)
    shown = cards(page)
    on_sale = [plan for plan in PLANS.values() if plan.on_sale]
    assert list(shown) == [plan.key for plan in on_sale], "every plan on sale, in order; enterprise is not"
    for plan in on_sale:
        lines = shown[plan.key]
        limits, included = plan.limits, plan.included
        assert f"Up to {limits.calls_per_minute:,} endpoint calls a minute" in lines
        assert f"{limits.emails_per_hour:,} emails an hour, {limits.emails_per_day:,} a day" in lines
        assert any(
            f"{included.runs:,} runs" in line
            and f"{included.endpoint_calls:,} endpoint calls" in line
            and f"{included.run_seconds // 3600:,} run-hours" in line
            for line in lines
        )
        assert (Feature.API_KEYS.label in lines) == plan.offers(Feature.API_KEYS), plan.key
        assert plan.support in lines
        assert len(lines) == 3 + len(plan.features) + 1, f"{plan.key} lists nothing the definition lacks"
    assert Feature.API_KEYS.label not in shown["free"], "the free plan has no API keys, and says so"
    for feature in EVERY_PLAN:
        assert f"<li>{html.escape(feature)}</li>" in page


def test_the_definition_names_the_cheapest_plan_with_api_keys():
    # What a refusal names (core's FeatureNotIncluded) is a plan on the page that includes keys.
    from nectar.core.contract.plans import cheapest_plan_with

    plan = cheapest_plan_with(Feature.API_KEYS)
    assert plan.key == "starter" and plan.on_sale and plan.offers(Feature.API_KEYS)
