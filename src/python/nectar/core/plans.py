"""What each plan allows an organization, as core enforces it. The plans are defined once, in core's
contract (nectar.core.contract.plans), which marketing's pricing page renders too."""

from __future__ import annotations

from nectar.core.contract.plans import (
    PLANS,
    Feature,
    PlanLimits,
    cheapest_plan_with,
    entitlements,
)
from nectar.schema.models import Organization

# Keys are nectar.core.contract.PLANS; an unknown plan gets the free plan's limits. A dict of the
# definition's limits that tests may change one plan's of (monkeypatch.setitem).
PLAN_LIMITS = {key: plan.limits for key, plan in PLANS.items()}


class FeatureNotIncluded(Exception):
    """The organization's plan does not include a feature; `str()` names the plan that does."""

    def __init__(self, feature: Feature, plan_name: str):
        self.feature, self.plan_name = feature, plan_name
        self.included_in = cheapest_plan_with(feature).name
        super().__init__(
            f"{feature.title} are not included in the {plan_name} plan: "
            f"they come with {self.included_in} and above."
        )

    def as_problem_fields(self) -> dict:
        return {"feature": self.feature.value, "plan": self.plan_name, "included_in": self.included_in}


def limits_of(plan: str) -> PlanLimits:
    return PLAN_LIMITS.get(plan, PLAN_LIMITS["free"])


def lacking(plan: str, overrides: dict | None, feature: Feature) -> FeatureNotIncluded | None:
    """Why an organization on `plan` with `overrides` may not use `feature`; None when it may."""
    rights = entitlements(plan, overrides, limits_of(plan))
    return None if rights.allows(feature) else FeatureNotIncluded(feature, rights.plan.name)


def require(org: Organization, feature: Feature) -> None:
    """Raises FeatureNotIncluded unless `org` may use `feature`."""
    refusal = lacking(org.plan, org.plan_overrides, feature)
    if refusal is not None:
        raise refusal
