"""What each plan allows an organization, in one place: endpoint calls, and the email Nectar Studio
sends for it (invitations and workflow email; alerts would count here too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanLimits:
    calls_per_minute: int
    # Mail is counted per hour (a burst) and per UTC day.
    emails_per_hour: int
    emails_per_day: int


# Keys are nectar.core.contract.PLANS; an unknown plan gets the free plan's limits.
PLAN_LIMITS = {
    "free": PlanLimits(calls_per_minute=60, emails_per_hour=20, emails_per_day=100),
    "starter": PlanLimits(calls_per_minute=600, emails_per_hour=200, emails_per_day=1_000),
    "pro": PlanLimits(calls_per_minute=6_000, emails_per_hour=2_000, emails_per_day=10_000),
    "enterprise": PlanLimits(calls_per_minute=60_000, emails_per_hour=20_000, emails_per_day=100_000),
}


def limits_of(plan: str) -> PlanLimits:
    return PLAN_LIMITS.get(plan, PLAN_LIMITS["free"])
