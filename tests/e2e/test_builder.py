"""The workflow builder in a real browser (Debian's Chromium): a customer builds a workflow
through the canvas and the generated forms alone, with the mouse and with the keyboard only,
tests the draft, saves, compares and rolls back versions; bad input never breaks the page; the
builder, runs and endpoints pages pass axe-core's serious and critical checks."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.builder_support import (
    axe_violations,
    builder_ready,
    chromium,
    core_served,
    new_page,
    new_workflow,
    outbox_signup_link,
    screenshot,
    sign_up_with_an_org,
)


@pytest.fixture(scope="module")
def core(settings_for, tmp_path_factory):
    with core_served(settings_for, tmp_path_factory) as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page(core, browser):
    page = new_page(browser)
    sign_up_with_an_org(page, core["url"], outbox_signup_link(core["app"]))
    return page


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
    body = page.locator("#panel").get_by_role("group", name="body", exact=True)
    body.get_by_label("body value of message").fill("{{ steps.each }}")
    body.get_by_label("body name").fill("quantities")
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


def tab_to(page: Page, selector: str, backwards: bool = False, limit: int = 150) -> None:
    """Presses Tab (or Shift+Tab) until the focus is on an element matching `selector`."""
    for _ in range(limit):
        if page.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"Tab never reached {selector}")


def focused_label(page: Page) -> str:
    return page.evaluate(
        "() => document.activeElement.getAttribute('aria-label') || document.activeElement.id"
    )


def test_a_workflow_built_with_the_keyboard_alone(core, page: Page):
    page.goto(core["url"] + "/org/workflows")
    tab_to(page, "#wf-name")
    page.keyboard.type("Orders by keyboard")
    page.keyboard.press("Enter")
    builder_ready(page)
    # Into the canvas, down to the + after greet, and add a transform.
    tab_to(page, '.node[data-key="trigger"]')
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    assert focused_label(page) == "Add a step after greet"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.dataset.type") == "http_request"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.dataset.type") == "transform"
    page.keyboard.press("Enter")
    assert focused_label(page).startswith("Step transform, transform")
    # Enter opens its settings: the generated form, field by field.
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # type -> id
    page.keyboard.press("Control+A")
    page.keyboard.type("total")
    tab_to(page, "#panel input[data-expression=jmespath]")
    page.keyboard.press("Control+A")
    page.keyboard.type("length(trigger.bo")
    expect(page.get_by_role("option", name=re.compile("^body"))).to_be_visible()
    page.keyboard.press("Enter")  # takes the suggestion
    page.keyboard.type(".items)")
    expect(page.locator("#panel input[data-expression=jmespath]")).to_have_value("length(trigger.body.items)")
    expect(page.locator("#panel .expr:has([data-expression=jmespath]) .preview")).to_contain_text(
        "✗"
    )  # no items in the empty sample yet
    # Back to the canvas: delete, undo, redo, undo.
    tab_to(page, '.node[data-key="/steps/1"]', backwards=True)
    page.keyboard.press("Delete")
    expect(node(page, "total")).to_have_count(0)
    page.keyboard.press("Control+Z")
    expect(node(page, "total")).to_have_count(1)
    page.keyboard.press("Control+Shift+Z")
    expect(node(page, "total")).to_have_count(0)
    page.keyboard.press("Control+Z")
    expect(node(page, "total")).to_have_count(1)
    # Copy, paste at the next +, and move the copy up with Alt+↑; then delete it.
    tab_to(page, '.node[aria-label^="Step total,"]', backwards=True)
    page.keyboard.press("Control+C")
    page.keyboard.press("ArrowDown")
    assert focused_label(page) == "Add a step after total"
    page.keyboard.press("Control+V")
    expect(node(page, "total_copy")).to_be_visible()
    assert focused_label(page).startswith("Step total_copy")
    page.keyboard.press("Alt+ArrowUp")
    assert page.evaluate("() => nectarBuilder.doc.steps.map((s) => s.id)") == [
        "greet",
        "total_copy",
        "total",
        "reply",
    ]
    page.keyboard.press("Delete")
    expect(node(page, "total_copy")).to_have_count(0)
    # Test the draft and save, by keyboard.
    tab_to(page, "#test-input")
    page.keyboard.press("Control+A")
    page.keyboard.type('{"body": {"items": [1, 2, 3]}}')
    tab_to(page, "#test")
    page.keyboard.press("Enter")
    expect(page.locator(".test-status")).to_contain_text("succeeded", timeout=30_000)
    expect(node(page, "total").locator(".node-run")).to_have_text("✓ 3")
    tab_to(page, "#version-note", backwards=True)
    page.keyboard.type("counts the items")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("v2")
    builder_ready(page)
    assert page.evaluate("() => nectarBuilder.doc.steps.map((s) => s.id)") == ["greet", "total", "reply"]
    assert page.problems == []


def test_bad_input_gets_a_message_where_it_is_and_loses_nothing(core, page: Page):
    new_workflow(page, core["url"], "Bad input")
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.type))
    # An expression that does not parse: marked at its character, and listed with its path.
    choose(page, "greet")
    panel_field(page, "expression").fill("join(' ', [trigger.query.name")
    expect(page.locator("#panel .preview-error mark")).to_be_visible()
    expect(page.locator("#problems-summary")).to_contain_text("/steps/0/expression: not a valid expression")
    expect(node(page, "greet")).to_have_class(re.compile("invalid"))
    panel_field(page, "expression").fill("trigger.query.name")
    # A reference to a step that does not exist: next to the field, from the server's validate().
    choose(page, "reply")
    page.locator("#panel").get_by_role("button", name="As JSON").click()
    panel_field(page, "body").fill('{"x": "{{ steps.nosuch.field }}"}')
    expect(page.locator('#panel .field[data-pointer="/steps/1/body"] .field-error.server')).to_have_text(
        "x: there is no step 'nosuch'"
    )
    panel_field(page, "body").fill('{"x": ')
    expect(page.locator("#panel .json-field .field-error")).to_contain_text("Not valid JSON yet")
    # The JSON view: invalid JSON is refused in place; a duplicate id is a problem at its path.
    page.get_by_role("button", name="JSON", exact=True).click()
    editor = page.get_by_label("Workflow document (JSON)")
    good = editor.input_value()
    editor.fill(good[:-5])
    expect(page.locator("#json-error")).to_contain_text("Not valid JSON")
    page.get_by_role("button", name="Canvas", exact=True).click()
    expect(node(page, "reply")).to_be_visible()
    page.get_by_role("button", name="JSON", exact=True).click()
    twice = json.loads(good)
    twice["steps"][1]["id"] = "greet"
    editor.fill(json.dumps(twice))
    expect(page.locator("#problems-summary")).to_contain_text("/steps/1/id: step id 'greet' is used twice")
    # Over the size limit: said next to the toolbar, and Save and Test are off.
    huge = json.loads(good)
    huge["description"] = "x" * 1_100_000
    editor.fill(json.dumps(huge))
    expect(page.locator("#size-problem")).to_contain_text("over the limit")
    expect(page.get_by_role("button", name="Save as new version")).to_be_disabled()
    editor.fill(json.dumps(twice))
    page.get_by_role("button", name="Canvas", exact=True).click()
    # Saving an invalid document is refused with the reason; the saved version is untouched.
    page.get_by_role("button", name="Save as new version").click()
    expect(page.locator("#save-problem")).to_contain_text("Not saved")
    page.fill("#test-input", "{not json")
    page.get_by_role("button", name="Test the draft").click()
    expect(page.locator("#test-input-error")).to_contain_text("not valid JSON")
    # Leaving with unsaved changes asks first; the saved version is as it was.
    page.reload()
    assert "beforeunload" in dialogs
    builder_ready(page)
    expect(page.get_by_role("heading", level=1)).to_contain_text("v1")
    expect(node(page, "greet")).to_be_visible()
    assert page.evaluate("() => nectarBuilder.doc.steps.map((s) => s.id)") == ["greet", "reply"]
    assert page.problems == [], page.problems


def test_endpoints_page_names_workflows_gives_full_urls_and_a_console(core, page: Page):
    new_workflow(page, core["url"], "Greeter")
    page.goto(core["url"] + "/org/endpoints")
    page.get_by_label("Method").select_option("GET")
    page.get_by_label("Path").fill("/hello")
    page.get_by_label("Workflow").select_option(label="Greeter")
    page.get_by_label("Authentication").select_option("public")
    page.get_by_role("button", name="Add endpoint").click()
    row = page.locator(".endpoints-table tbody tr").filter(has_text="/hello")
    expect(row.get_by_role("link", name="Greeter")).to_be_visible()
    expect(row.locator(".address code")).to_have_text(re.compile(r"^https?://[^/]+/e/[0-9a-f-]{36}/hello$"))
    row.get_by_text("curl example").click()
    expect(row.locator(".curl pre")).to_contain_text("curl -X GET")
    expect(page.get_by_role("link", name="this organization's OpenAPI document")).to_be_visible()
    row.get_by_role("button", name="Try GET /hello in the console").click()
    page.get_by_label("Path (fill in its parameters)").fill("/hello?name=Ada")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#console-response")).to_contain_text("Hello Ada")
    expect(page.locator("#console-trace")).to_contain_text("greet")
    assert page.problems == []


SHOP_DOCUMENT = """openapi: 3.0.0
info: {title: Shop, version: '1'}
paths:
  /shop/orders:
    get:
      operationId: listOrders
      summary: The shop's orders
      responses: {'200': {description: the orders}}
"""


def test_an_http_request_step_picks_an_imported_operation_from_a_list(core, page: Page):
    page.goto(core["url"] + "/org/connectors")
    page.get_by_label("Name").fill("shop")
    page.get_by_label("Base URL").fill(core["upstream"])
    page.get_by_label("OpenAPI 3 document").fill(SHOP_DOCUMENT)
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#connector-shop")).to_contain_text("listOrders")

    new_workflow(page, core["url"], "Shop orders")
    add_step(page, "Add a step after greet", "http_request", "orders")
    picker = panel_field(page, "Imported operation")
    expect(picker.locator("option", has_text="shop · listOrders — GET /shop/orders")).to_have_count(1)
    picker.select_option(label="shop · listOrders — GET /shop/orders: The shop's orders")
    expect(panel_field(page, "operation")).to_have_value("listOrders")
    expect(panel_field(page, "connector")).to_have_value("shop")
    step = page.evaluate("() => nectarBuilder.doc.steps.find((s) => s.id === 'orders')")
    assert step["operation"] == "listOrders" and step["connector"] == "shop"
    assert "url" not in step and "method" not in step, "the operation decides them"
    expect(page.locator(".valid")).to_have_text("✓ No problems found.")

    page.get_by_role("button", name="Test the draft").click()
    expect(page.locator(".test-status")).to_contain_text("Test run succeeded", timeout=30_000)
    assert "/shop/orders" in core["requests"]
    page.get_by_role("button", name="Save as new version").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("v2")
    builder_ready(page)
    expect(panel_field(page, "Imported operation")).to_have_count(0)  # no step selected after a save
    assert page.problems == []


@pytest.mark.parametrize("width", [1280, 390])
def test_the_builder_runs_and_endpoints_pages_are_accessible_at_both_widths(core, browser, width):
    page = new_page(browser, width=width, height=900 if width > 500 else 844)
    sign_up_with_an_org(page, core["url"], outbox_signup_link(core["app"]))
    new_workflow(page, core["url"], "Accessible")
    page.locator(".node").nth(1).focus()
    page.keyboard.press("Enter")  # a step's form open
    page.wait_for_timeout(400)
    found = {"builder": axe_violations(page)}
    screenshot(page, f"builder-{width}")
    page.locator("#canvas").scroll_into_view_if_needed()
    screenshot(page, f"builder-{width}-screen", full_page=False)
    page.fill("#test-input", '{"query": {"name": "Ada"}}')
    page.get_by_role("button", name="Test the draft").click()
    expect(page.locator(".test-status")).to_contain_text("succeeded", timeout=30_000)
    page.get_by_role("link", name="Open its trace").click()
    found["run"] = axe_violations(page)
    screenshot(page, f"run-{width}")
    page.goto(core["url"] + "/org/runs")
    found["runs"] = axe_violations(page)
    screenshot(page, f"runs-{width}")
    page.goto(core["url"] + "/org/endpoints")
    page.get_by_label("Path").fill("/accessible")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator(".endpoints-table")).to_contain_text("/accessible")
    found["endpoints"] = axe_violations(page)
    screenshot(page, f"endpoints-{width}")
    assert found == {"builder": [], "run": [], "runs": [], "endpoints": []}
    if width < 500:  # nothing wider than the screen
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    assert page.problems == []
