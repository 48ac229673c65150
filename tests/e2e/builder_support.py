"""What the builder's browser tests share: core served on loopback with a worker draining its
queue (so test runs finish), an upstream HTTP server for http_request steps, Debian's Chromium,
and a signed-in customer with an organization."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from nectar.core.app import create_app
from nectar.shared.config import Service
from nectar.shared.database import db
from tests.core.conftest import drain_jobs, link_in, newest_email
from tests.core.upstream import serving
from tests.serving import served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "a long enough password 42"
# Pants copies what a test writes under extra-output/ to dist/ (dist/test/extra-output/...).
SCREENSHOTS = Path("extra-output/builder-screenshots")
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
ORDERS = {"orders": [{"sku": "tea", "qty": 3}, {"sku": "cup", "qty": 5}]}


@contextmanager
def core_served(settings_for, tmp_path_factory) -> Iterator[dict]:
    """Core on loopback (its http_request steps may reach loopback), with a worker thread."""
    app = create_app(
        settings_for(
            Service.CORE,
            NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32",
            NECTAR_VAR_DIR=str(tmp_path_factory.mktemp("var")),
        )
    )
    stop = threading.Event()

    def work():
        while not stop.is_set():
            try:
                drain_jobs(app)
            except Exception:  # noqa: BLE001 - a worker outlives a failed job, as the real one does
                logging.getLogger(__name__).exception("the test worker's jobs failed")
            stop.wait(0.2)

    worker = threading.Thread(target=work, daemon=True)
    requests: list[str] = []

    def answer(path, _headers):
        requests.append(path)
        return 200, {}, ORDERS

    with served(app) as url, serving(answer) as upstream:
        worker.start()
        yield {"url": url, "app": app, "upstream": upstream, "requests": requests}
        stop.set()
        worker.join(10)
    with app.app_context():
        db.engine.dispose()


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, width: int = 1280, height: int = 900) -> Page:
    """A page in a fresh context (its own cookies) that records what it broke on."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "leave with unsaved changes?"
    # What the page broke on: script errors, console errors, failed resources (the favicon too).
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: (
            page.problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            page.problems.append(f"{response.status} {response.url}")
            if response.status >= 500 or response.status == 404
            else None
        ),
    )
    return page


def sign_up_with_an_org(page: Page, base: str, signup_link: Callable[[str], str]) -> str:
    """Signs up as a person would (the address, then the emailed link, which `signup_link(email)`
    reads from the outbox), then creates an organization; returns the address."""
    email = f"builder-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(base + "/signup")
    page.fill("input[name=email]", email)
    page.get_by_role("button", name="Sign up").click()
    page.goto(base + signup_link(email))
    page.fill("input[name=display_name]", "Ada Builder")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    page.goto(base + "/orgs/new")
    page.fill("input[name=name]", f"Builders {uuid.uuid4().hex[:4]}")
    page.get_by_role("button", name="Create").click()
    return email


def outbox_signup_link(app) -> Callable[[str], str]:
    """signup_link for an app on the test database: the link in the newest sign-up email."""
    return lambda email: link_in(newest_email(app, email, "account.signup")["body"])


def new_workflow(page: Page, base: str, name: str) -> None:
    page.goto(base + "/org/workflows")
    page.fill("#wf-name", name)
    page.get_by_role("button", name="New workflow").click()
    builder_ready(page)


def builder_ready(page: Page) -> None:
    """Waits for the builder's script to have started (buttons do nothing before)."""
    page.wait_for_selector("body[data-builder-ready]")


def screenshot(page: Page, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def axe_violations(page: Page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is."""
    # Evaluated through the browser's DevTools protocol: the page's CSP (script-src 'self') stays
    # as it is, and would refuse an inline <script>.
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
