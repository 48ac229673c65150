"""The three services in a real browser (Debian's Chromium, driven by Playwright), each served over
HTTP on loopback against the test database, the way a visitor, a new customer and a staff member
meet them: contact form, test checkout, setting a password and signing in to core, and the
back-office showing the lead and the new organization."""

from __future__ import annotations

import re
import shutil
import threading
import uuid

import pyotp
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from nectar.shared.config import Role
from tests.e2e.builder_support import CHROMIUM
from tests.e2e.conftest import create_superadmin
from tests.marketing.billing_helpers import run_billing_jobs


@pytest.fixture(scope="module")
def page():
    assert shutil.which(CHROMIUM) or CHROMIUM, "Debian's chromium is needed (./pants test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def in_a_thread(function, *args) -> None:
    """Playwright's sync API keeps an event loop on this thread; the worker wants its own."""
    failures = []

    def run():
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 - re-raised on the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    if failures:
        raise failures[0]


def newest_email(database, to: str, category: str) -> str:
    with database.connect(Role.ADMIN) as conn:
        row = conn.execute(
            "SELECT body_text FROM email_outbox WHERE to_address = %s AND category = %s ORDER BY created_at DESC LIMIT 1",
            (to, category),
        ).fetchone()
    assert row, f"no {category} email to {to}"
    return row[0]


def test_a_visitor_becomes_a_customer_and_staff_see_it(services, page: Page, database):
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"

    # A visitor lands on the site from a campaign and writes to sales.
    page.goto(services["marketing"] + "/?utm_source=e2e")
    expect(page).to_have_title(re.compile("Nectar Studio"))
    page.get_by_role("link", name="Contact").first.click()
    page.fill("input[name=name]", "Ada Buyer")
    page.fill("input[name=email]", email)
    page.fill("input[name=company]", "Buyer Ltd")
    page.fill("textarea[name=message]", "We would like a demo.")
    page.get_by_role("button", name="Send message").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Thanks")

    # An empty form is refused next to its fields, and nothing is lost.
    page.goto(services["marketing"] + "/contact")
    page.get_by_role("button", name="Send message").click()
    expect(page.locator(".field-error").first).to_be_visible()

    # They buy the Starter plan through the test checkout (no Stripe keys here).
    page.goto(services["marketing"] + "/pricing")
    starter = page.locator("form.checkout-form").filter(has=page.locator("input[name=plan][value=starter]"))
    starter.locator("input[name=email]").fill(email)
    starter.locator("input[name=organization_name]").fill("Buyer Ltd")
    starter.get_by_role("button", name=re.compile("Test checkout")).click()
    page.get_by_role("button", name="Complete test checkout").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("setting things up")

    # The worker delivers the signed events to the webhook, processes them and provisions core.
    for _ in range(3):
        in_a_thread(run_billing_jobs, services["apps"]["marketing"])
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your organization is ready")

    # The set-password email leads into core, where they own the new organization.
    body = newest_email(database, email, "account.set_password")
    link = re.search(r"https?://\S+", body).group(0)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Set your password")  # their first
    page.fill("input[name=password]", "a long enough password 42")
    page.fill("input[name=confirm]", "a long enough password 42")
    page.get_by_role("button", name="Save the password").click()
    expect(page.locator(".flash")).to_have_text("Your password is set. Sign in with it.")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "a long enough password 42")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))  # straight into their one organization
    expect(page.locator("body")).to_contain_text("Buyer Ltd")

    # A superadmin signs in to admin, enrols TOTP, and finds the lead and the organization.
    staff_email, staff_password = create_superadmin(database)
    page.goto(services["admin"] + "/leads/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=email]", staff_email)
    page.fill("input[name=password]", staff_password)
    page.get_by_role("button", name="Sign in").click()
    secret = page.locator("#totp-secret").inner_text().strip()
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    # The outbox shows the set-password message with its link to click.
    page.goto(services["admin"] + f"/outbox/?q={email}")
    message = page.get_by_role("row").filter(has_text="Your Nectar Studio account is ready")
    message.get_by_role("link", name=email).click()
    expect(page.locator("#mail-text a")).to_have_attribute("href", link)
    page.goto(services["admin"] + f"/leads/?q={email}")
    expect(page.locator("main")).to_contain_text(email)
    page.goto(services["admin"] + "/orgs/?q=Buyer")
    expect(page.locator("main")).to_contain_text("Buyer Ltd")
    page.goto(services["admin"] + "/billing/")
    expect(page.locator("main")).to_contain_text(email)
