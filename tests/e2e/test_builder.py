"""The workflow builder in a real browser (Debian's Chromium): a customer builds a workflow
through the canvas and the generated forms alone, with the mouse and with the keyboard only,
tests the draft, saves, compares and rolls back versions; bad input never breaks the page; the
builder, runs and endpoints pages pass axe-core's serious and critical checks."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.builder_support import ORDERS, builder_ready, chromium, core_served, new_workflow, screenshot, sign_up_with_an_org


@pytest.fixture(scope="module")
def core(settings_for, tmp_path_factory):
    with core_served(settings_for, tmp_path_factory) as served:
        yield served


@pytest.fixture(scope="module")
def page(core):
    with chromium() as page:
        sign_up_with_an_org(page, core["url"])
        yield page


def node(page: Page, step_id: str):
    return page.locator(f'.node[aria-label^="Step {step_id},"]')


def choose(page: Page, step_id: str):
    """Clicks a step's node, once the canvas has panned to it (as it does for the focus)."""
    node(page, step_id).focus()
    node(page, step_id).click()


def slot(page: Page, label: str):
    return page.locator(f'.slot[aria-label="{label}"]')


def panel_field(page: Page, name: str):
    return page.locator("#panel").get_by_label(re.compile(f"^{name}(\\s|$)"))


def add_step(page: Page, slot_label: str, step_type: str, step_id: str):
    slot(page, slot_label).focus()  # the canvas pans to what has the focus
    slot(page, slot_label).click()
    page.locator(f'.picker-item[data-type="{step_type}"]').click()
    panel_field(page, "Id").fill(step_id)
    expect(node(page, step_id)).to_be_visible()


def test_a_workflow_built_with_the_mouse_is_tested_saved_compared_and_rolled_back(core, page: Page):
    new_workflow(page, core["url"], "Orders by mouse")
    # An http_request to a local server, through the generated form.
    add_step(page, "Add a step after greet", "http_request", "fetch")
    panel_field(page, "url").fill(core["upstream"] + "/orders")
    expect(panel_field(page, "method")).to_have_value('"GET"')  # a choice from the schema's enum
    # A condition, its expression typed with completion of what is in scope.
    add_step(page, "Add a step after fetch", "condition", "check")
    condition = panel_field(page, "if")
    condition.fill("")
    condition.press_sequentially("length(steps.fe")
    expect(page.get_by_role("option", name=re.compile("^fetch"))).to_be_visible()
    condition.press("Enter")
    condition.press_sequentially(".body.orders) > `0`")
    expect(condition).to_have_value("length(steps.fetch.body.orders) > `0`")
    # A for_each inside its then branch, and a transform inside the loop.
    add_step(page, "Add a step in then of check", "for_each", "each")
    panel_field(page, "items").fill("steps.fetch.body.orders")
    add_step(page, "Add a step in steps of each", "transform", "line")
    panel_field(page, "expression").fill("item.qty")
    # The answer reads the loop's output; the starter's greet step goes (undone, redone).
    choose(page, "reply")
    panel_field(page, "body").fill('{"quantities": "{{ steps.each }}"}')
    choose(page, "greet")
    page.get_by_role("button", name="Delete step").click()
    expect(node(page, "greet")).to_have_count(0)
    page.get_by_role("button", name="Undo").click()
    expect(node(page, "greet")).to_have_count(1)
    page.get_by_role("button", name="Redo").click()
    expect(node(page, "greet")).to_have_count(0)
    expect(page.locator(".valid")).to_have_text("✓ No problems found.")
    expect(page.locator("#dirty-status")).to_have_text("Unsaved changes")
    screenshot(page, "builder-built-1280")

    # Test the draft: each step's data shows on its node, and the previews use it.
    page.fill("#test-input", json.dumps({"body": {"source": "mouse"}}))
    page.get_by_role("button", name="Test the draft").click()
    expect(page.locator(".test-status")).to_contain_text("Test run succeeded", timeout=30_000)
    assert "/orders" in core["requests"]
    expect(node(page, "fetch")).to_have_class(re.compile("ran-succeeded"))
    expect(node(page, "line").locator(".node-run")).to_have_text("✓ 3")
    choose(page, "line")
    expect(page.locator("#panel .step-run")).to_contain_text("Last test: succeeded")
    expression = panel_field(page, "expression")
    expression.fill("item.sku")
    expect(page.locator("#panel .preview-value")).to_have_text('"tea"')
    expression.fill("item.qty")
    expect(page.locator("#panel .preview-value")).to_have_text("3")
    screenshot(page, "builder-tested-1280")

    # Copy and paste a step, then drag it to another place.
    page.locator("#panel").get_by_role("button", name="Copy").click()
    slot(page, "Add a step after line in steps of each").focus()
    slot(page, "Add a step after line in steps of each").click()
    page.locator(".picker-item.paste").click()
    expect(node(page, "line_copy")).to_be_visible()
    page.get_by_role("button", name="Fit").click()  # the whole flow in sight, to drag across it
    source = node(page, "line_copy").bounding_box()
    target = slot(page, "Add a step before fetch").bounding_box()
    page.mouse.move(source["x"] + 40, source["y"] + 20)
    page.mouse.down()
    page.mouse.move(source["x"] + 60, source["y"] + 40, steps=4)
    page.mouse.move(target["x"] + target["width"] / 2, target["y"] + target["height"] / 2, steps=8)
    page.mouse.up()
    first = page.evaluate("() => nectarBuilder.doc.steps[0].id")
    assert first == "line_copy", first
    choose(page, "line_copy")
    page.get_by_role("button", name="Delete step").click()
    expect(node(page, "line_copy")).to_have_count(0)

    # Save as a new version; the saved document is what was tested.
    page.fill("#version-note", "orders from the shop")
    page.get_by_role("button", name="Save as new version").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("v2")
    builder_ready(page)
    expect(page.locator("#dirty-status")).to_have_text("Saved")
    expect(page.locator(".versions-table")).to_contain_text("orders from the shop")
    expect(page.locator(".versions-table")).to_contain_text("Ada Builder")

    # Compare v1 and v2 step by step, then roll back to v1.
    page.get_by_role("button", name="Compare the two versions").click()
    diff = page.locator("#diff")
    expect(diff.locator("tr.diff-added")).to_contain_text(["fetch", "check", "each", "line"])
    expect(diff.locator("tr.diff-removed")).to_contain_text("greet")
    expect(diff.locator("tr.diff-changed")).to_contain_text("reply")
    screenshot(page, "builder-versions-diff-1280")
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("v3")
    builder_ready(page)
    expect(node(page, "greet")).to_be_visible()
    expect(node(page, "fetch")).to_have_count(0)

    # The test run is in the runs list, marked as a test, with its trace.
    page.goto(core["url"] + "/org/runs?trigger=test")
    page.locator("tbody a").first.click()
    expect(page.locator("body")).to_contain_text("test run")
    expect(page.locator("table")).to_contain_text("fetch")
    assert page.problems == []
