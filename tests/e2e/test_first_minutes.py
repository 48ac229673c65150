"""A newcomer's first minutes in a real browser (Debian's Chromium, driven by Playwright), the three
services served on loopback: the public site leads into core to sign in or start free; customers
see one product, never a service's name; signing in lands in the organization they work in; and a
staff member's TOTP enrolment shows a QR code that decodes to the secret beside it."""

from __future__ import annotations

import io
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, expect

from tests.core.conftest import link_in, newest_email
from tests.e2e.builder_support import PASSWORD, chromium, new_page, screenshot
from tests.e2e.conftest import create_superadmin

# What only staff may see: a service's name (as a badge, "marketing service" in a footer) and the
# environment's name.
SERVICE_NAMES = re.compile(r"\b(core|marketing|admin)\b", re.IGNORECASE)
ENVIRONMENTS = re.compile(r"\b(development|test|production)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser) -> Page:
    page = new_page(browser)
    yield page
    assert not page.problems, page.problems  # no script errors, no failed resource (favicon too)
    page.context.close()


def sign_up(page: Page, services: dict) -> str:
    """A new account through core's pages and the emailed link; signed in after it."""
    email = f"newcomer-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(services["core"] + "/signup")
    page.fill("input[name=email]", email)
    page.get_by_role("button", name="Sign up").click()
    page.goto(
        services["core"] + link_in(newest_email(services["apps"]["core"], email, "account.signup")["body"])
    )
    page.fill("input[name=display_name]", "Ada Newcomer")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    return email


def create_org(page: Page, name: str) -> None:
    page.get_by_label("Organization name").fill(name)
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".flash")).to_have_text(f"{name} is ready.")


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator(".flash")).to_have_text("You are signed out.")


def sign_in(page: Page, services: dict, email: str, path: str = "/login") -> None:
    page.goto(services["core"] + path)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_the_public_site_signs_in_and_starts_free_in_core(services, page: Page):
    page.goto(services["marketing"] + "/")
    screenshot(page, "marketing-landing", full_page=False)
    navigation = page.locator("header nav")
    navigation.get_by_role("link", name="Sign in").click()
    expect(page).to_have_url(services["core"] + "/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")

    page.goto(services["marketing"] + "/features")
    navigation.get_by_role("link", name="Start free").click()
    expect(page).to_have_url(services["core"] + "/signup")
    expect(page.get_by_role("heading", level=1)).to_have_text("Create your account")

    # Core's own front door says what this is, and offers both ways in.
    page.goto(services["core"] + "/")
    screenshot(page, "core-signed-out-home", full_page=False)
    expect(page.locator("main")).to_contain_text("HTTP APIs and automated workflows")
    page.locator("main").get_by_role("link", name="Create an account").click()
    expect(page).to_have_url(services["core"] + "/signup")
    page.go_back()
    page.locator("main").get_by_role("link", name="Sign in").click()
    expect(page).to_have_url(services["core"] + "/login")


def assert_one_product(page: Page) -> None:
    """The page's frame (brand, navigation, footer) names no service and no environment, and its
    text calls nothing a service."""
    frame = page.locator("header").inner_text() + "\n" + page.locator("footer").inner_text()
    assert not SERVICE_NAMES.search(frame), (page.url, frame)
    assert not ENVIRONMENTS.search(frame), (page.url, frame)
    text = page.locator("body").inner_text()
    assert not re.search(r"\b(core|marketing|admin) service\b", text, re.IGNORECASE), page.url
    expect(page.locator("header .badge")).to_have_count(0)


def test_customer_pages_never_name_a_service(services, page: Page):
    customer_pages = [
        services["marketing"] + path
        for path in ("/", "/features", "/pricing", "/blog", "/contact", "/newsletter", "/nothing-here")
    ] + [services["core"] + path for path in ("/", "/login", "/signup", "/forgot-password", "/nothing-here")]
    for url in customer_pages:
        page.goto(url)
        assert_one_product(page)
    page.problems.remove(f"404 {services['marketing']}/nothing-here")  # asked for: the error page's look
    page.problems.remove(f"404 {services['core']}/nothing-here")

    # Signed in, in an organization, too.
    sign_up(page, services)
    create_org(page, "Plain Name Ltd")
    for path in ("/dashboard", "/org/workflows", "/org/members", "/org/settings", "/orgs"):
        page.goto(services["core"] + path)
        assert_one_product(page)

    # Staff pages may say where they are.
    page.goto(services["admin"] + "/login")
    expect(page.locator("header .badge")).to_have_text("admin")
    expect(page.locator("footer")).to_contain_text("admin service")


def test_signing_in_lands_in_the_organization_in_use(services, page: Page):
    email = sign_up(page, services)
    create_org(page, "Only One Ltd")
    sign_out(page)

    # One organization: straight into it.
    sign_in(page, services, email)
    expect(page).to_have_url(services["core"] + "/dashboard")
    expect(page.locator("header")).to_contain_text("Only One Ltd")
    expect(page.locator(".flash")).to_have_count(0)  # no "Choose or create an organization first."

    # Several: the one used last, also after signing out.
    page.goto(services["core"] + "/orgs/new")
    create_org(page, "Second Ltd")
    page.goto(services["core"] + "/orgs")
    page.get_by_role("row").filter(has_text="Only One Ltd").get_by_role("button", name="Open").click()
    expect(page.locator("header")).to_contain_text("Only One Ltd")
    sign_out(page)
    sign_in(page, services, email)
    expect(page).to_have_url(services["core"] + "/dashboard")
    expect(page.locator("header")).to_contain_text("Only One Ltd")

    page.goto(services["core"] + "/orgs")
    page.get_by_role("row").filter(has_text="Second Ltd").get_by_role("button", name="Open").click()
    sign_out(page)
    sign_in(page, services, email)
    expect(page.locator("header")).to_contain_text("Second Ltd")

    # A `next` on this site still wins; one elsewhere is ignored.
    sign_out(page)
    sign_in(page, services, email, "/login?next=/org/members")
    expect(page).to_have_url(services["core"] + "/org/members")
    expect(page.locator("main")).to_contain_text(email)
    sign_out(page)
    sign_in(page, services, email, "/login?next=https://elsewhere.example/")
    expect(page).to_have_url(services["core"] + "/dashboard")


def decoded_qr_codes(png: bytes) -> list[str]:
    return [code.text for code in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def test_totp_enrolment_shows_a_qr_code_of_the_secret(services, page: Page, database):
    email, password = create_superadmin(database)
    page.goto(services["admin"] + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-factor authentication")

    # Decoded from what the screen shows, as a phone's camera would.
    qr_code = page.get_by_role("img", name=re.compile("QR code"))
    expect(qr_code).to_be_visible()
    screenshot(page, "totp-enrolment", full_page=False)
    (scanned,) = decoded_qr_codes(qr_code.screenshot())
    secret = page.locator("#totp-secret").inner_text().strip()
    uri = urlsplit(scanned)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert parse_qs(uri.query)["secret"] == [secret]
    assert email in uri.path.replace("%40", "@")

    # A code from an app that scanned it turns two-factor authentication on.
    page.fill("input[name=code]", pyotp.parse_uri(scanned).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator(".flash")).to_have_text("Two-factor authentication is on.")
