"""The plans on sale and their Stripe prices.

Names, amounts, limits and features come from core's contract (one definition for core and this
page); Stripe price ids come from STRIPE_PRICE_<PLAN>, and staff can
override a plan's price id or amount without a deploy through the system setting `billing_plans`
({"pro": {"price_id": "price_...", "amount_cents": 9900}}).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.core.contract.plans import PLANS, pricing_features
from nectar.marketing.billing.backends import BillingBackend

SETTING_KEY = "billing_plans"
# What a lapsed subscription falls back to (one of nectar.core.contract.PLANS).
FREE = "free"


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    summary: str
    amount_cents: int
    features: tuple[str, ...]
    currency: str = "usd"
    interval: str = "month"
    price_id: str | None = None
    highlighted: bool = False

    @property
    def paid(self) -> bool:
        return self.amount_cents > 0

    @property
    def price_label(self) -> str:
        if not self.paid:
            return "$0"
        dollars, cents = divmod(self.amount_cents, 100)
        return f"${dollars:,}" if cents == 0 else f"${dollars:,}.{cents:02d}"


# The plans on sale, from the one definition core enforces (nectar.core.contract.plans): every line a
# card lists is a limit, a feature or the support that plan has.
CATALOGUE = tuple(
    Plan(
        key=plan.key,
        name=plan.name,
        summary=plan.summary,
        amount_cents=plan.monthly_price_cents,
        features=pricing_features(plan),
        highlighted=plan.highlighted,
    )
    for plan in PLANS.values()
    if plan.on_sale
)


def current_plans(session: Session, backend: BillingBackend) -> list[Plan]:
    """The catalogue with today's price ids and amounts (environment, then the staff override)."""
    overrides = session.execute(
        text("SELECT value FROM system_settings WHERE key = :key"), {"key": SETTING_KEY}
    ).scalar()
    overrides = overrides if isinstance(overrides, dict) else {}
    plans = []
    for plan in CATALOGUE:
        if plan.paid:
            plan = replace(plan, price_id=backend.price_id(plan.key))
        plan = _apply_override(plan, overrides.get(plan.key))
        plans.append(plan)
    return plans


def _apply_override(plan: Plan, override) -> Plan:
    if not isinstance(override, dict) or not plan.paid:
        return plan
    price_id = override.get("price_id")
    amount = override.get("amount_cents")
    if isinstance(price_id, str) and price_id.strip():
        plan = replace(plan, price_id=price_id.strip())
    if isinstance(amount, int) and not isinstance(amount, bool) and amount > 0:
        plan = replace(plan, amount_cents=amount)
    return plan


def find_plan(plans: list[Plan], key: str | None) -> Plan | None:
    return next((plan for plan in plans if plan.key == key), None)


def plan_for_price(plans: list[Plan], price_id: str | None) -> Plan | None:
    if not price_id:
        return None
    return next((plan for plan in plans if plan.price_id == price_id), None)
