"""The audit log: append-only by database grants, and a page that searches it and changes nothing."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from nectar.shared.config import Role

ROW = re.compile(r"<td><code>([a-z_.]+)</code></td>\s*<td>([^<]*)</td>")


def test_nectar_admin_cannot_update_or_delete_audit_rows(database):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        row_id = conn.execute(
            "INSERT INTO audit_log (actor, action, target) VALUES ('grant-test', 'test.append', 't') RETURNING id"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_log SET action = 'test.rewritten' WHERE id = %s", (row_id,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_log WHERE id = %s", (row_id,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE audit_log")
        assert conn.execute("SELECT action FROM audit_log WHERE id = %s", (row_id,)).fetchone() == (
            "test.append",
        )


def test_the_audit_page_has_no_write_routes(admin_app):
    rules = [rule for rule in admin_app.url_map.iter_rules() if rule.endpoint.startswith("audit_log.")]
    assert [rule.rule for rule in rules] == ["/audit"], "the audit blueprint's routes were found"
    for rule in rules:
        assert not {"POST", "PUT", "PATCH", "DELETE"} & set(rule.methods), rule.rule


@pytest.fixture(scope="module")
def entries(database):
    marker = f"a{uuid.uuid4().hex[:8]}"
    rows = [
        (f"alice-{marker}@staff.example.com", "user.created", f"user:{marker}-1", "2026-03-01 10:00+00"),
        (f"alice-{marker}@staff.example.com", "user.deactivated", f"user:{marker}-1", "2026-03-02 10:00+00"),
        (
            f"bob-{marker}@staff.example.com",
            "organization.suspended",
            f"organization:{marker}-9",
            "2026-03-02 23:59+00",
        ),
        (
            f"bob-{marker}@staff.example.com",
            "system_setting.updated",
            f"setting:{marker}",
            "2026-03-05 08:00+00",
        ),
    ]
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for actor, action, target, when in rows:
            conn.execute(
                "INSERT INTO audit_log (actor, action, target, before, after, address, created_at) "
                'VALUES (%s, %s, %s, \'{"status": "active"}\', \'{"status": "suspended"}\', \'192.0.2.9\', %s)',
                (actor, action, target, when),
            )
    return marker


def _found(staff, query: str) -> list[tuple[str, str]]:
    page = staff.get(f"/audit?{query}")
    assert page.status_code == 200
    return ROW.findall(page.get_data(as_text=True))


def test_the_log_is_searchable_by_actor_action_target_and_dates(staff_browser, entries):
    staff = staff_browser("read_only")
    marker = entries
    assert [action for action, _ in _found(staff, f"actor={marker}")] == [
        "system_setting.updated",
        "organization.suspended",
        "user.deactivated",
        "user.created",
    ], "newest first"
    assert [a for a, _ in _found(staff, f"actor=alice-{marker}")] == ["user.deactivated", "user.created"]
    assert [a for a, _ in _found(staff, f"actor={marker}&action=user.")] == [
        "user.deactivated",
        "user.created",
    ]
    assert [a for a, _ in _found(staff, f"actor={marker}&action=organization.suspended")] == [
        "organization.suspended"
    ]
    assert [t for _, t in _found(staff, f"target=organization:{marker}")] == [f"organization:{marker}-9"]
    # Both ends of the range are whole days, included.
    assert [a for a, _ in _found(staff, f"actor={marker}&since=2026-03-02&until=2026-03-02")] == [
        "organization.suspended",
        "user.deactivated",
    ]
    assert [a for a, _ in _found(staff, f"actor={marker}&since=2026-03-03")] == ["system_setting.updated"]
    assert len(_found(staff, f"actor={marker}&since=not-a-date")) == 4, "a bad date is ignored"
    # Dates outside 2000-2100 are ignored too, the last possible day included (no overflow, no 500).
    for far in ("until=9999-12-31", "since=9999-12-31", "since=0001-01-01", "until=0001-01-01"):
        assert len(_found(staff, f"actor={marker}&{far}")) == 4, far
    assert len(_found(staff, f"actor={marker}&until=2100-12-31")) == 4, "the last day allowed"
    page = staff.get(f"/audit?actor={marker}").get_data(as_text=True)
    assert "192.0.2.9" in page and '{"status": "suspended"}' in page
