"""Every plan in one definition: what it costs, its limits, its features and the usage it includes.

Core enforces the limits and features from here and marketing renders the pricing page from here,
so the page can never promise what core does not do. Staff may raise a limit or grant a feature to
one organization (an override, kept on the organization); `entitlements` combines both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from enum import StrEnum


class Feature(StrEnum):
    API_KEYS = "api_keys"

    @property
    def title(self) -> str:
        """How a refusal names the feature."""
        return {Feature.API_KEYS: "API keys"}[self]

    @property
    def label(self) -> str:
        """How the pricing page lists the feature."""
        return {Feature.API_KEYS: "API keys for your services"}[self]


@dataclass(frozen=True)
class PlanLimits:
    """Enforced by core: past one, a 429 saying the limit and when it resets."""

    calls_per_minute: int  # endpoint and hook calls of the organization, per UTC minute
    emails_per_hour: int  # mail Nectar Studio sends for the organization: a burst...
    emails_per_day: int  # ...and per UTC day


@dataclass(frozen=True)
class IncludedUsage:
    """What a month (UTC) of the plan includes, counted as core's usage metering counts it. Runs are
    the quota: past them a plan without overage refuses new runs (core/usage.py)."""

    runs: int
    endpoint_calls: int
    run_seconds: int


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    summary: str
    monthly_price_cents: int
    limits: PlanLimits
    included: IncludedUsage
    features: frozenset[Feature]
    support: str
    # Past its included runs, a plan with overage runs on and its runs are billed per run (Stripe's
    # meter, marketing/billing/usage.py); one without (free) refuses new runs until the month ends.
    overage: bool = True
    on_sale: bool = True  # shown on the pricing page (enterprise is set up by hand)
    highlighted: bool = False

    def offers(self, feature: Feature) -> bool:
        return feature in self.features


# Everything every plan has: listed once on the pricing page, never refused by plan.
EVERY_PLAN = (
    "HTTP endpoints and workflows",
    "Manual, scheduled and webhook runs",
    "Team members and roles",
    "Integrations with your SaaS tools",
)

PLANS: dict[str, Plan] = {
    plan.key: plan
    for plan in (
        Plan(
            key="free",
            name="Free",
            summary="Try endpoints and workflows on your own.",
            monthly_price_cents=0,
            limits=PlanLimits(calls_per_minute=60, emails_per_hour=20, emails_per_day=100),
            included=IncludedUsage(runs=1_000, endpoint_calls=10_000, run_seconds=36_000),
            features=frozenset(),
            support="Community support",
            overage=False,
        ),
        Plan(
            key="starter",
            name="Starter",
            summary="For a small team shipping its first integrations.",
            monthly_price_cents=2900,
            limits=PlanLimits(calls_per_minute=600, emails_per_hour=200, emails_per_day=1_000),
            included=IncludedUsage(runs=10_000, endpoint_calls=100_000, run_seconds=360_000),
            features=frozenset({Feature.API_KEYS}),
            support="Email support",
        ),
        Plan(
            key="pro",
            name="Pro",
            summary="For teams that run their business on it.",
            monthly_price_cents=9900,
            limits=PlanLimits(calls_per_minute=6_000, emails_per_hour=2_000, emails_per_day=10_000),
            included=IncludedUsage(runs=100_000, endpoint_calls=1_000_000, run_seconds=3_600_000),
            features=frozenset({Feature.API_KEYS}),
            support="Priority support",
            highlighted=True,
        ),
        Plan(
            key="enterprise",
            name="Enterprise",
            summary="Set up with us, for larger teams.",
            monthly_price_cents=0,
            limits=PlanLimits(calls_per_minute=60_000, emails_per_hour=20_000, emails_per_day=100_000),
            included=IncludedUsage(runs=1_000_000, endpoint_calls=10_000_000, run_seconds=36_000_000),
            features=frozenset({Feature.API_KEYS}),
            support="A named contact",
            on_sale=False,
        ),
    )
}
FREE = "free"
LIMIT_NAMES = tuple(field.name for field in fields(PlanLimits))
# What staff may override for one organization: a limit (a higher number) or a feature (granted).
FEATURE_NAMES = tuple(feature.value for feature in Feature)
OVERRIDE_NAMES = (*LIMIT_NAMES, *FEATURE_NAMES)


def month_after(first: date) -> date:
    """The first day of the month after the one that begins on `first`: when a month's included
    usage starts again. OverflowError past year 9999."""
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def plan_of(key: str | None) -> Plan:
    """The plan called `key`; an unknown one gets the free plan (what a lapsed subscription gets)."""
    return PLANS.get(key or FREE, PLANS[FREE])


def cheapest_plan_with(feature: Feature) -> Plan:
    """The plan on sale to name when an organization lacks `feature`."""
    return min(
        (plan for plan in PLANS.values() if plan.on_sale and plan.offers(feature)),
        key=lambda plan: plan.monthly_price_cents,
    )


@dataclass(frozen=True)
class Entitlements:
    """What one organization may do now: its plan, raised by any staff overrides."""

    plan: Plan
    limits: PlanLimits
    features: frozenset[Feature]

    def allows(self, feature: Feature) -> bool:
        return feature in self.features


def raised_limit(base: int, overrides: Mapping | None, name: str) -> int:
    """`base` (a plan's limit called `name`), or the organization's override when it is higher.
    `overrides` is organizations.plan_overrides: {name: {"value": ..., "reason": ...,
    "granted_by": ..., "granted_at": ...}}; a malformed or lower override is ignored."""
    override = (overrides or {}).get(name)
    value = override.get("value") if isinstance(override, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > base:
        return value
    return base


def entitlements(
    plan_key: str | None, overrides: Mapping | None = None, limits: PlanLimits | None = None
) -> Entitlements:
    """The plan's limits (or `limits`, core's current ones for the plan) and features, raised by
    the organization's overrides (see raised_limit); a feature is granted by {"value": true}."""
    plan = plan_of(plan_key)
    limits = limits or plan.limits
    raised = {name: raised_limit(getattr(limits, name), overrides, name) for name in LIMIT_NAMES}
    granted = {
        Feature(name)
        for name, override in (overrides or {}).items()
        if name in FEATURE_NAMES and isinstance(override, Mapping) and override.get("value") is True
    }
    return Entitlements(plan, replace(limits, **raised), plan.features | granted)


def describe_limits(plan: Plan) -> tuple[str, ...]:
    """The plan's limits and included usage as the pricing page lists them."""
    limits, included = plan.limits, plan.included
    past = "more runs are billed per run" if plan.overage else "runs stop there until the month ends"
    return (
        f"{included.runs:,} runs, {included.endpoint_calls:,} endpoint calls and "
        f"{included.run_seconds // 3600:,} run-hours a month; {past}",
        f"Up to {limits.calls_per_minute:,} endpoint calls a minute",
        f"{limits.emails_per_hour:,} emails an hour, {limits.emails_per_day:,} a day",
    )


def pricing_features(plan: Plan) -> tuple[str, ...]:
    """Every line the pricing page shows for the plan, all of them enforced by core (or, support,
    kept by people)."""
    return (
        *describe_limits(plan),
        *(feature.label for feature in Feature if plan.offers(feature)),
        plan.support,
    )
