"""The platform's state for staff: each service's readiness, the database and the job queue (the
system page's outbox figures come from admin/outbox); and the system settings (validated JSON
objects, audited with before and after)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass

import requests
from sqlalchemy import column, select, table, text
from sqlalchemy.dialects.postgresql import ENUM
from sqlalchemy.orm import Session

from nectar.admin import audit
from nectar.admin.listing import capped_counts
from nectar.core.contract import PLANS
from nectar.schema.models import SystemSetting
from nectar.shared.bad_input import loads_json
from nectar.shared.config import Service, Settings
from nectar.shared.rejection import InputRejected
from nectar.shared.tracing import service_call

HEALTH_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    url: str
    up: bool
    latency_ms: float | None
    detail: str


def check_service(service: Service, base_url: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> ServiceHealth:
    url = f"{base_url.rstrip('/')}/readyz"
    started = time.perf_counter()
    try:
        with service_call(f"{service} GET readyz") as headers:
            response = requests.get(url, timeout=timeout, headers={**headers, "Accept": "application/json"})
    except requests.RequestException as error:
        return ServiceHealth(str(service), url, False, None, f"no answer ({type(error).__name__})")
    latency = round((time.perf_counter() - started) * 1000, 1)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and body.get("status") == "ready":
        return ServiceHealth(str(service), url, True, latency, f"ready, schema {body.get('schema')}")
    detail = body.get("detail") if isinstance(body, dict) else None
    return ServiceHealth(str(service), url, False, latency, detail or f"answered {response.status_code}")


def check_services(settings: Settings) -> list[ServiceHealth]:
    """Every service's /readyz at once, each bounded by the timeout: one down peer costs at most
    that, and the page renders regardless."""
    with ThreadPoolExecutor(max_workers=len(Service)) as pool:
        # Each in a copy of this thread's context: the page's request id and trace go along.
        futures = [
            pool.submit(copy_context().run, check_service, service, settings.service_urls[service])
            for service in Service
        ]
        return [future.result() for future in futures]


def database_state(session: Session) -> dict:
    size = session.execute(
        text(
            "SELECT pg_database_size(current_database()), pg_size_pretty(pg_database_size(current_database()))"
        )
    ).one()
    connections = session.execute(
        text(
            "SELECT coalesce(usename, '(server)') AS role, count(*) AS connections FROM pg_stat_activity "
            "WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC, 1"
        )
    ).all()
    limit = session.execute(text("SELECT current_setting('max_connections')::int")).scalar()
    return {
        "size_bytes": size[0],
        "size": size[1],
        "connections": [(row.role, row.connections) for row in connections],
        "total_connections": sum(row.connections for row in connections),
        "max_connections": limit,
    }


# The job states that need attention (succeeded jobs are pruned after a day; cancelled and aborted
# ones need nothing more).
QUEUE_STATUSES = ("todo", "doing", "failed")
# procrastinate's job table (its schema, not our models): just what the queue figures read.
JOBS = table(
    "procrastinate_jobs",
    column("queue_name"),
    column("status", ENUM(*QUEUE_STATUSES, name="procrastinate_job_status", create_type=False)),
)
# Each queue's name once, by skipping through the queue_name index (a "loose index scan"), instead
# of reading every job.
QUEUE_NAMES_SQL = text("""
    WITH RECURSIVE queues(name) AS (
      (SELECT min(queue_name) FROM procrastinate_jobs)
      UNION ALL
      SELECT (SELECT min(queue_name) FROM procrastinate_jobs WHERE queue_name > name)
      FROM queues WHERE name IS NOT NULL
    )
    SELECT name FROM queues WHERE name IS NOT NULL
    """)


def queue_depth(session: Session) -> list[tuple[str, str, int]]:
    """(queue, status, jobs) for jobs waiting, running or failed, each counted up to TOTAL_CAP."""
    depth = []
    for queue in session.scalars(QUEUE_NAMES_SQL).all():
        counts = capped_counts(session, JOBS.c.status, QUEUE_STATUSES, where=JOBS.c.queue_name == queue)
        depth += [(queue, status, count) for status, count in counts.items() if count]
    return depth


# --- System settings ------------------------------------------------------------------------------

# Matched with fullmatch: `$` would also accept a trailing newline.
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,99}")


def _retention(value: dict) -> None:
    days = value.get("days")
    if set(value) != {"days"} or not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise InputRejected('Expected {"days": N} with N a whole number from 1 to 3650.')


def _feature_flags(value: dict) -> None:
    for name, flag in value.items():
        if not KEY_PATTERN.fullmatch(name) or not isinstance(flag, bool):
            raise InputRejected(f'Each flag is "name": true or false; {name!r} is not.')


def _plan_limits(value: dict) -> None:
    for plan, limits in value.items():
        if plan not in PLANS:
            raise InputRejected(f"Unknown plan {plan!r}; plans are {', '.join(PLANS)}.")
        if not isinstance(limits, dict):
            raise InputRejected(f"The limits of {plan} must be an object of name: number.")
        for name, limit in limits.items():
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise InputRejected(f"{plan}.{name} must be a whole number, 0 or more.")


def _billing_plans(value: dict) -> None:
    for plan, override in value.items():
        if plan not in PLANS or not isinstance(override, dict):
            raise InputRejected(f"Expected plan: {{price_id, amount_cents}}; {plan!r} is not a plan object.")
        unknown = set(override) - {"price_id", "amount_cents"}
        if unknown:
            raise InputRejected(f"{plan}: unknown field(s) {', '.join(sorted(unknown))}.")
        amount = override.get("amount_cents")
        if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0):
            raise InputRejected(f"{plan}.amount_cents must be a whole number above 0.")
        price = override.get("price_id")
        if price is not None and (not isinstance(price, str) or not price.strip()):
            raise InputRejected(f"{plan}.price_id must be a non-empty string.")


@dataclass(frozen=True)
class KnownSetting:
    description: str
    example: dict
    validate: Callable[[dict], None]


KNOWN_SETTINGS = {
    "run_retention_days": KnownSetting(
        "How long workflow runs are kept; the admin worker prunes older ones nightly.",
        {"days": 30},
        _retention,
    ),
    "feature_flags": KnownSetting(
        "Features switched on or off for everyone.", {"new_builder": False}, _feature_flags
    ),
    "plan_limits": KnownSetting(
        "Limits per plan.", {"free": {"workflows": 5, "runs_per_day": 1000}}, _plan_limits
    ),
    "billing_plans": KnownSetting(
        "Marketing's price overrides per paid plan (Stripe price id, amount in cents).",
        {"pro": {"price_id": "price_...", "amount_cents": 9900}},
        _billing_plans,
    ),
}


def parse_value(key: str, raw: str) -> dict:
    """The JSON object typed for `key`, checked against that key's rules."""
    if not KEY_PATTERN.fullmatch(key):
        raise InputRejected("A key is lower-case letters, digits and _, starting with a letter.")
    try:
        value = loads_json(raw, "The value")  # what jsonb can store: no NaN, no NUL, not too deep
    except InputRejected as bad:
        raise InputRejected(bad.detail) from None
    if not isinstance(value, dict):
        raise InputRejected("The value must be a JSON object ({...}).")
    known = KNOWN_SETTINGS.get(key)
    if known:
        known.validate(value)
    return value


def all_settings(session: Session) -> list[tuple[str, SystemSetting | None, KnownSetting | None]]:
    stored = {row.key: row for row in session.scalars(select(SystemSetting))}
    keys = sorted(set(stored) | set(KNOWN_SETTINGS))
    return [(key, stored.get(key), KNOWN_SETTINGS.get(key)) for key in keys]


def save_setting(session: Session, key: str, value: dict, staff_id, description: str | None = None) -> bool:
    """Stores the value and audits it; False (and nothing written) when it did not change."""
    row = session.get(SystemSetting, key, with_for_update=True)
    before = row.value if row else None
    if row is not None and row.value == value:
        return False
    if row is None:
        known = KNOWN_SETTINGS.get(key)
        row = SystemSetting(
            key=key, value=value, description=description or (known.description if known else None)
        )
        session.add(row)
    else:
        row.value = value
    row.updated_by = staff_id
    audit.record(
        "system_setting.updated" if before is not None else "system_setting.created",
        f"setting:{key}",
        {"value": before} if before is not None else None,
        {"value": value},
    )
    return True


def delete_setting(session: Session, key: str) -> bool:
    row = session.get(SystemSetting, key, with_for_update=True)
    if row is None:
        return False
    audit.record("system_setting.deleted", f"setting:{key}", {"value": row.value}, None)
    session.delete(row)
    return True
