"""Browser tests keep a screenshot of the page a test failed on (dist/test/extra-output/...)."""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page")
        if page is not None:
            from tests.e2e.builder_support import screenshot

            try:
                screenshot(page, f"failed-{item.name}")
            except Exception as error:  # noqa: BLE001 - the failure itself is what is reported
                report.sections.append(("screenshot", f"none taken: {error}"))
