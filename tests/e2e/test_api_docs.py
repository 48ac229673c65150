"""The interactive API documentation (/api/v1/docs, the vendored Swagger UI) in a real browser
(Debian's Chromium), signed in: the operations are listed, and "Try it out" works on a GET and on
a POST (the page sends the session's CSRF token with unsafe requests, from a script file: the CSP
allows no inline script)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.builder_support import chromium, core_served, new_page, outbox_signup_link, sign_up_with_an_org


@pytest.fixture(scope="module")
def core(settings_for, tmp_path_factory):
    with core_served(settings_for, tmp_path_factory) as served:
        yield served


@pytest.fixture(scope="module")
def page(core):
    with chromium() as browser:
        page = new_page(browser)
        sign_up_with_an_org(page, core["url"], outbox_signup_link(core["app"]))
        yield page


def try_it_out(page: Page, operation_id: str):
    """Opens an operation, presses "Try it out" and "Execute"; returns its live response row."""
    block = page.locator(f"#operations-default-{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    return block.locator(".live-responses-table .response").first


def test_the_docs_list_the_operations_and_try_them_out_signed_in(core, page: Page):
    page.goto(core["url"] + "/api/v1/docs")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    assert page.locator(".opblock").count() > 30
    for operation_id in ("list_workflows", "create_workflow", "delete_workflow", "update_workflow"):
        expect(page.locator(f"#operations-default-{operation_id}")).to_be_visible()

    listed = try_it_out(page, "list_workflows")
    expect(listed.locator(".response-col_status")).to_have_text("200")
    expect(listed.locator(".response-col_description")).to_contain_text('"items": []')

    # The example body creates a workflow: a POST with the session needs the page's CSRF token.
    created = try_it_out(page, "create_workflow")
    expect(created.locator(".response-col_status")).to_have_text("201")
    expect(created.locator(".response-col_description")).to_contain_text('"name": "Ping"')
    assert [p for p in page.problems if "favicon" not in p] == []
