"""Browser tests keep a screenshot of the page a test failed on (dist/test/extra-output/...);
`services` serves all three services on loopback, wired to each other as in production."""

import io
import uuid

import pytest

from nectar.admin.app import create_app as create_admin_app
from nectar.core.app import create_app as create_core_app
from nectar.marketing.app import create_app as create_marketing_app
from nectar.shared.config import Service
from nectar.shared.database import db
from tests.serving import served


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


SERVICE_TOKEN = "e2e-service-token-0123456789abcdef-0123456789"  # marketing's credential for core
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef-0123456789abc"  # admin's


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


def create_superadmin(database) -> tuple[str, str]:
    """A superadmin made with admin's own command (`create-staff`), not enrolled in TOTP yet:
    returns its email and password."""
    from nectar.admin.main import main as admin_main

    email = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    password = "staff password long enough 42"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in database.environ(CORE_ADMIN_TOKEN=ADMIN_TOKEN).items():
            patch.setenv(name, value)
        patch.setattr("sys.stdin", io.StringIO(password + "\n"))
        command = ["create-staff", "--email", email, "--role", "superadmin", "--password-stdin"]
        assert admin_main(command) == 0
    return email, password
