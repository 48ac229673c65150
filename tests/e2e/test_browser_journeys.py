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

from nectar.admin.app import create_app as create_admin_app
from nectar.core.app import create_app as create_core_app
from nectar.marketing.app import create_app as create_marketing_app
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from tests.marketing.billing_helpers import run_billing_jobs
from tests.serving import served

SERVICE_TOKEN = "e2e-service-token-0123456789abcdef-0123456789"  # marketing's credential for core
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef-0123456789abc"  # admin's
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def services(settings_for, tmp_path_factory):
    """core, marketing and admin served on loopback, wired to each other as in production."""
    apps = {}

    def dispatch(name):
        return lambda environ, start: apps[name](environ, start)

    with (
        served(dispatch("core")) as core,
        served(dispatch("marketing")) as marketing,
        served(dispatch("admin")) as admin,
    ):
        shared = {
            "CORE_API_URL": core,
            "CORE_PUBLIC_URL": core,
            "MARKETING_API_URL": marketing,
            "MARKETING_PUBLIC_URL": marketing,
            "ADMIN_API_URL": admin,
            "NECTAR_VAR_DIR": str(tmp_path_factory.mktemp("var")),
        }
        # Each caller has its own credential for core's contract; core checks both.
        apps["core"] = create_core_app(
            settings_for(
                Service.CORE, **shared, CORE_SERVICE_TOKEN=SERVICE_TOKEN, CORE_ADMIN_TOKEN=ADMIN_TOKEN
            )
        )
        apps["marketing"] = create_marketing_app(
            settings_for(Service.MARKETING, **shared, CORE_SERVICE_TOKEN=SERVICE_TOKEN)
        )
        apps["admin"] = create_admin_app(settings_for(Service.ADMIN, **shared, CORE_ADMIN_TOKEN=ADMIN_TOKEN))
        yield {"core": core, "marketing": marketing, "admin": admin, "apps": apps}
        for app in apps.values():
            with app.app_context():
                db.engine.dispose()


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
    page.fill("input[name=password]", "a long enough password 42")
    page.fill("input[name=confirm]", "a long enough password 42")
    page.get_by_role("button", name="Save the password").click()
    page.goto(services["core"] + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "a long enough password 42")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("body")).to_contain_text("Buyer Ltd")

    # A superadmin signs in to admin, enrols TOTP, and finds the lead and the organization.
    from nectar.admin.main import main as admin_main

    staff_email = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    staff_password = "staff password long enough 42"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in database.environ(**{"CORE_ADMIN_TOKEN": ADMIN_TOKEN}).items():
            patch.setenv(name, value)
        patch.setattr("sys.stdin", __import__("io").StringIO(staff_password + "\n"))
        assert (
            admin_main(["create-staff", "--email", staff_email, "--role", "superadmin", "--password-stdin"])
            == 0
        )
    page.goto(services["admin"] + "/leads/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=email]", staff_email)
    page.fill("input[name=password]", staff_password)
    page.get_by_role("button", name="Sign in").click()
    secret = page.locator("#totp-secret").inner_text().strip()
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    page.goto(services["admin"] + f"/leads/?q={email}")
    expect(page.locator("main")).to_contain_text(email)
    page.goto(services["admin"] + "/orgs/?q=Buyer")
    expect(page.locator("main")).to_contain_text("Buyer Ltd")
    page.goto(services["admin"] + "/billing/")
    expect(page.locator("main")).to_contain_text(email)
