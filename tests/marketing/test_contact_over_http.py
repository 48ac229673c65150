"""The contact form over real HTTP against the real database: many visitors at once lose nothing
and make one lead per address, and a stored lead is what admin's role reads."""

from __future__ import annotations

import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from nectar.shared.config import Role


class Visitor:
    """A browser: its own cookies, its own address (X-Forwarded-For), the form's CSRF token."""

    def __init__(self, base_url: str, address: str):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["X-Forwarded-For"] = address

    def open_contact_page(self, query: str = "") -> str:
        page = self.http.get(f"{self.base_url}/contact{query}", timeout=30).text
        return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)

    def submit(self, token: str, **fields) -> requests.Response:
        return self.http.post(
            f"{self.base_url}/contact",
            data={"csrf_token": token, **fields},
            allow_redirects=False,
            timeout=60,
        )


def test_200_concurrent_submissions_store_200_inquiries_and_one_lead_per_address(live_marketing, database):
    run = uuid.uuid4().hex[:8]
    shared = [f"shared-{run}-{i}@example.com" for i in range(10)]  # 5 submissions each, at once
    emails = [shared[i % 10] for i in range(50)] + [f"solo-{run}-{i}@example.com" for i in range(150)]
    visitors = [Visitor(live_marketing, f"198.51.{i // 250}.{i % 250 + 1}") for i in range(len(emails))]
    tokens = [visitor.open_contact_page() for visitor in visitors]
    start = threading.Barrier(50)

    def submit(i: int) -> int:
        if i < 50:
            start.wait(timeout=30)  # the submissions that share addresses race each other
        response = visitors[i].submit(
            tokens[i], name=f"Visitor {i}", email=emails[i], company="Co", message=f"message {run} {i}"
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(submit, range(len(emails))))
    assert statuses == [302] * 200

    with database.connect(Role.ADMIN) as conn:
        stored = conn.execute(
            "SELECT i.message, l.email FROM lead_inquiries i JOIN leads l ON l.id = i.lead_id "
            "WHERE i.message LIKE %s",
            (f"message {run} %",),
        ).fetchall()
        assert sorted(message for message, _ in stored) == sorted(f"message {run} {i}" for i in range(200))
        assert all(email == emails[int(message.rsplit(" ", 1)[1])] for message, email in stored)
        per_email = dict(
            conn.execute(
                "SELECT email, count(*) FROM leads WHERE email LIKE %s OR email LIKE %s GROUP BY email",
                (f"shared-{run}-%", f"solo-{run}-%"),
            ).fetchall()
        )
        assert len(per_email) == 160 and set(per_email.values()) == {1}
        inquiries_per_shared = conn.execute(
            "SELECT count(*) FROM lead_inquiries i JOIN leads l ON l.id = i.lead_id WHERE l.email LIKE %s "
            "GROUP BY l.id",
            (f"shared-{run}-%",),
        ).fetchall()
        assert sorted(count for (count,) in inquiries_per_shared) == [5] * 10
        confirmations = conn.execute(
            "SELECT count(*) FROM email_outbox WHERE category = 'lead.confirmation' AND (to_address LIKE %s OR to_address LIKE %s)",
            (f"shared-{run}-%", f"solo-{run}-%"),
        ).fetchone()[0]
        assert confirmations == 200


def test_a_lead_submitted_to_marketing_is_visible_through_admins_role(live_marketing, database):
    email = f"flow-{uuid.uuid4().hex[:8]}@example.com"
    visitor = Visitor(live_marketing, "203.0.113.9")
    token = visitor.open_contact_page("?source=pricing&utm_source=ads&utm_campaign=launch")
    response = visitor.submit(
        token,
        name="Grace Hopper",
        email=email,
        company="Navy",
        message="Can you host our compilers?",
        source="pricing",
        utm_source="ads",
        utm_campaign="launch",
    )
    assert response.status_code == 302
    # Committed before the answer: admin reads it at once, with its own role and connection.
    with database.connect(Role.ADMIN) as conn:
        lead = conn.execute(
            "SELECT l.name, l.company, l.source, l.status, i.message, i.utm, host(i.address) "
            "FROM leads l JOIN lead_inquiries i ON i.lead_id = l.id WHERE l.email = %s",
            (email,),
        ).fetchone()
        assert conn.execute("SELECT current_user").fetchone()[0] == "nectar_admin"
    assert lead == (
        "Grace Hopper",
        "Navy",
        "pricing",
        "new",
        "Can you host our compilers?",
        {"utm_source": "ads", "utm_campaign": "launch"},
        "203.0.113.9",
    )
