"""The workflow, run and endpoint pages render for real data, and the builder's assets are served
by core itself."""

from tests.core.test_api import _new_key
from tests.core.test_endpoints import PRICE_CHECK, _endpoint, _workflow


def test_pages_show_workflows_runs_and_endpoints(browser):
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    workflow_id = _workflow(browser, token, name="Order totals")
    endpoint = _endpoint(browser, token, workflow_id, auth="public")
    answer = browser.client.post(endpoint["url"].replace("{id}", "42"), json={"items": [{"price": 1}]})
    run_id = answer.headers["X-Nectar-Run-Id"]

    assert "Order totals" in browser.get("/org/workflows").get_data(as_text=True)
    builder = browser.get(f"/org/workflows/{workflow_id}").get_data(as_text=True)
    assert 'id="builder-data"' in builder
    assert "steps.total \\u003e `100`" in builder  # the current version's document, escaped by tojson
    runs = browser.get(f"/org/runs?workflow_id={workflow_id}&status=succeeded").get_data(as_text=True)
    assert run_id in runs
    trace = browser.get(f"/org/runs/{run_id}").get_data(as_text=True)
    for step in ("total", "check", "small"):
        assert f"<td>{step} <span" in trace
    assert "/orders/{id}/total" in browser.get("/org/endpoints").get_data(as_text=True)
    assert browser.get(f"/org/endpoints/{endpoint['id']}").status_code == 200
    connections = browser.get("/org/connections").get_data(as_text=True)
    assert "Slack incoming webhook" in connections and "REST API" in connections
    builder_modules = [
        f"builder/{name}.js" for name in ("main", "model", "canvas", "form", "expressions", "versions")
    ]
    for asset in ("api.js", *builder_modules, "run.js", "endpoints.js", "console.js", "connections.js"):
        served = browser.get(f"/static/{asset}")
        # Modules are refused by browsers unless served as JavaScript.
        assert served.status_code == 200 and served.mimetype in ("text/javascript", "application/javascript")
    assert browser.get("/static/builder/builder.css").mimetype == "text/css"


def test_creating_a_workflow_from_the_page_starts_from_a_valid_document(browser):
    browser.sign_up()
    browser.create_org()
    created = browser.post("/org/workflows", {"target": "Hello"})
    assert created.status_code == 302
    page = browser.get(created.headers["Location"]).get_data(as_text=True)
    assert "Hello" in page and "v1" in page
    assert PRICE_CHECK["trigger"] == {"type": "http"}
