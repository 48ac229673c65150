"""Benchmark: the workflow builder in headless Chromium (Debian's), against core served on
loopback over the embedded PostgreSQL.

    ./pants run benchmarks/builder_browser.py                  # about a minute
    ./pants run benchmarks/builder_browser.py -- --opens 20 --keys 60

Measured:
- a 200-step workflow (conditions, loops and plain steps nested as customers build them) opened:
  from the start of navigation to the canvas drawn, and the drawing alone (goal: under 300 ms);
- the expression preview: from a keystroke in an expression field to its value shown, computed by
  the server's own engine (goal: within 50 ms).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from benchmarks.async_runs import percentile
from benchmarks.servers import bench_server
from nectar.core.app import create_app
from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from tests.conftest import DatabaseUnderTest
from tests.e2e.builder_support import outbox_signup_link, sign_up_with_an_org

DATABASE = "nectar_bench_builder"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def two_hundred_steps() -> dict:
    """40 blocks of five steps: a condition whose then-branch loops over two steps, and an else."""
    steps = []
    for i in range(40):
        steps.append(
            {
                "id": f"check_{i}",
                "type": "condition",
                "if": f"length(trigger.body.items) > `{i}`",
                "then": [
                    {
                        "id": f"each_{i}",
                        "type": "for_each",
                        "items": "trigger.body.items",
                        "steps": [
                            {"id": f"price_{i}", "type": "transform", "expression": "item.price"},
                            {
                                "id": f"label_{i}",
                                "type": "transform",
                                "expression": "join('-', [item.sku, 'x'])",
                            },
                        ],
                    }
                ],
                "else": [{"id": f"none_{i}", "type": "set", "values": {"empty": True}}],
            }
        )
    return {"trigger": {"type": "manual"}, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=10)
    parser.add_argument("--keys", type=int, default=40)
    args = parser.parse_args()
    server = bench_server()
    server.drop_database(DATABASE)
    server.create_database(DATABASE)
    upgrade(server.url(Role.OWNER, DATABASE))
    database = DatabaseUnderTest(server, DATABASE)
    app = create_app(load_settings(Service.CORE, database.environ()))
    app.config["NECTAR_TEST_DATABASE"] = database  # where the outbox is read
    web = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{web.server_port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            sign_up_with_an_org(page, base, outbox_signup_link(app))
            page.goto(base + "/org/workflows")
            page.fill("#wf-name", "Two hundred steps")
            page.get_by_role("button", name="New workflow").click()
            page.wait_for_selector("body[data-builder-ready]")
            builder = page.url
            saved = page.evaluate(
                "async (doc) => (await nectarApi('POST', location.pathname.replace('/org/', '/api/v1/') + "
                "'/versions', {definition: doc})).status",
                two_hundred_steps(),
            )
            assert saved == 201, saved
            drawn, drawing = [], []
            for _ in range(args.opens):
                page.goto(builder)
                page.wait_for_selector("body[data-builder-ready]")
                timings = page.evaluate("() => nectarBuilder.timings")
                drawn.append(timings["drawnAt"])
                drawing.append(timings["firstDraw"])
            nodes = page.locator(".canvas-svg .node").count()
            print(f"200-step workflow ({nodes - 1} step nodes), {args.opens} opens:")
            print(
                f"  navigation start to canvas drawn: median {statistics.median(drawn):.0f} ms, "
                f"max {max(drawn):.0f} ms (goal < 300 ms)"
            )
            print(f"  drawing alone: median {statistics.median(drawing):.1f} ms, max {max(drawing):.1f} ms")

            page.locator('.node[aria-label^="Step price_0,"]').focus()
            page.keyboard.press("Enter")
            field = page.locator("#panel input[data-expression=jmespath]")
            field.click()
            page.keyboard.press("End")
            page.evaluate("""() => {
                  window.previewLatencies = [];
                  const field = document.querySelector('#panel input[data-expression=jmespath]');
                  field.addEventListener('keydown', () => { window.keyAt = performance.now(); }, true);
                  field.addEventListener('preview-shown', () => {
                    if (window.keyAt) window.previewLatencies.push(performance.now() - window.keyAt);
                    window.keyAt = null;
                  });
                }""")
            for i in range(args.keys):
                page.keyboard.press("Backspace" if i % 2 else "x")
                page.wait_for_function("() => window.keyAt === null", timeout=5000)
            latencies = page.evaluate("() => window.previewLatencies")
            print(
                f"expression preview, {len(latencies)} keystrokes: median {statistics.median(latencies):.1f} ms, "
                f"p95 {percentile(latencies, 0.95):.1f} ms, max {max(latencies):.1f} ms (goal < 50 ms)"
            )
            browser.close()
    finally:
        web.shutdown()
        with app.app_context():
            from nectar.shared.database import db

            db.engine.dispose()


if __name__ == "__main__":
    main()
