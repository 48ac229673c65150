"""Core's service contract: authenticated per caller, idempotent, and a client that copes when core is down."""

import socket
import time
import uuid

import pytest

from nectar.core.app import create_app
from nectar.core.contract import CoreClient, CoreRefused, CoreUnavailable
from nectar.shared.config import Role, Service
from tests.core.conftest import PASSWORD, SERVICE_TOKEN, link_in, unique_email
from tests.serving import served

ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789abc"


@pytest.fixture(scope="module")
def core_app(settings_for):
    """Core with both callers' credentials: marketing's (SERVICE_TOKEN) and admin's (ADMIN_TOKEN)."""
    from nectar.shared.database import db

    app = create_app(
        settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, CORE_ADMIN_TOKEN=ADMIN_TOKEN)
    )
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def core_url(core_app):
    with served(core_app) as url:
        yield url


@pytest.fixture
def client(core_url):
    """Marketing's client."""
    return CoreClient(core_url, SERVICE_TOKEN, timeout=5)


@pytest.fixture
def admin_client(core_url):
    return CoreClient(core_url, ADMIN_TOKEN, timeout=5)


def test_a_missing_or_wrong_credential_is_refused(core_url):
    for token in (None, "wrong-token-of-enough-length-0123456789abcdef"):
        with pytest.raises(CoreRefused) as refused:
            CoreClient(core_url, token).organization_plan(uuid.uuid4())
        assert refused.value.status == 401


def test_create_account_provisions_once_and_the_user_sets_a_password(client, new_browser, outbox, database):
    email = unique_email()
    request_id = f"cs_test_{uuid.uuid4().hex}"
    first = client.create_account(email=email, organization_name="Paid Co", request_id=request_id, plan="pro")
    assert first.created_user and first.created_organization
    again = client.create_account(email=email, organization_name="Paid Co", request_id=request_id, plan="pro")
    assert again.organization_id == first.organization_id and not again.created_organization
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM organizations WHERE external_ref = %s", (request_id,)
            ).fetchone()[0]
            == 1
        )
        assert conn.execute(
            "SELECT role FROM memberships WHERE org_id = %s AND user_id = %s",
            (first.organization_id, first.user_id),
        ).fetchone() == ("owner",)
    assert client.organization_plan(first.organization_id).plan == "pro"

    link = link_in(outbox(email, "account.set_password")["body"])
    person = new_browser()
    page = person.get(link).get_data(as_text=True)
    # Their first password: set, not changed, and no talk of sessions that never were.
    assert "<h1>Set your password</h1>" in page and "new password" not in page
    assert "At least 12 characters." in page and 'minlength="12"' in page and 'maxlength="1024"' in page
    saved = person.post(link, {"password": PASSWORD, "confirm": PASSWORD})
    assert saved.status_code == 302
    flashed = person.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Your password is set. Sign in with it." in flashed and "signed out" not in flashed
    signed_in = person.sign_in(email)  # straight into the organization made for them
    assert signed_in.status_code == 302 and signed_in.headers["Location"].endswith("/dashboard")
    assert "Paid Co" in person.get("/dashboard").get_data(as_text=True)


def test_suspension_locks_the_organization_until_reactivated(admin_client, browser):
    browser.sign_up()
    org = browser.create_org()
    token_page = browser.post("/org/api-keys", {"target": "k", "scopes": "admin"}).get_data(as_text=True)
    token = token_page.split('id="new-token">')[1].split("<")[0]

    assert admin_client.suspend_organization(org, "Unpaid invoice").status == "suspended"
    page = browser.get("/dashboard")
    assert page.status_code == 403 and "Unpaid invoice" in page.get_data(as_text=True)
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 401
    assert admin_client.reactivate_organization(org).status == "active"
    assert browser.get("/dashboard").status_code == 200
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 200


def test_bad_requests_get_clear_refusals(client):
    with pytest.raises(CoreRefused) as missing:
        client.organization_plan(uuid.uuid4())
    assert missing.value.status == 404
    with pytest.raises(CoreRefused, match="plan must be one of"):
        client.create_account(
            email=unique_email(), organization_name="X Co", request_id="r1", plan="platinum"
        )
    with pytest.raises(CoreRefused) as bad_email:
        client.create_account(email="nope", organization_name="X Co", request_id="r2")
    assert bad_email.value.status == 422


def test_the_client_fails_fast_and_clearly_when_core_is_down():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(CoreUnavailable, match="core is unreachable"):
        CoreClient(f"http://127.0.0.1:{port}", SERVICE_TOKEN, timeout=1, retries=2).organization_plan(
            uuid.uuid4()
        )
    assert time.monotonic() - started < 10


def test_the_client_times_out_on_a_core_that_hangs():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(CoreUnavailable):
            CoreClient(f"http://127.0.0.1:{port}", SERVICE_TOKEN, timeout=0.5, retries=0).organization_plan(
                uuid.uuid4()
            )


def test_a_paid_organization_never_goes_to_an_unverified_squatter(
    client, admin_client, new_browser, outbox, database
):
    squatter = new_browser()
    # Sign-up proves the address; an account whose address staff changed has not proved the new one.
    email = unique_email()
    admin_client.update_user(_user_id(database, squatter.sign_up()), email=email)
    assert squatter.sign_in(email).status_code == 302
    provisioned = client.create_account(
        email=email, organization_name="Victim Co", request_id=f"cs_{uuid.uuid4().hex}"
    )
    assert not provisioned.created_user
    assert squatter.get("/orgs").status_code == 302, "the squatter's sessions are ended"
    assert squatter.sign_in(email).status_code == 401, "and their password no longer works"
    link = link_in(outbox(email, "account.set_password")["body"])
    owner = new_browser()
    assert owner.post(link, {"password": PASSWORD, "confirm": PASSWORD}).status_code == 302


def test_a_retry_with_the_same_request_id_reports_the_real_owner(client):
    request_id = f"cs_{uuid.uuid4().hex}"
    first = client.create_account(email=unique_email(), organization_name="Once Co", request_id=request_id)
    retry = client.create_account(email=unique_email(), organization_name="Once Co", request_id=request_id)
    assert (retry.organization_id, retry.user_id) == (first.organization_id, first.user_id)
    assert not retry.created_user and not retry.created_organization


def _user_id(database, email: str) -> uuid.UUID:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()[0]


def test_marketings_credential_cannot_touch_accounts_or_suspend(client, admin_client, browser, database):
    email = browser.sign_up()
    org = browser.create_org()
    user_id = _user_id(database, email)
    staff_calls = {
        "create a user": lambda: client.create_user(email=unique_email(), request_id=str(uuid.uuid4())),
        "change an email": lambda: client.update_user(user_id, email=unique_email()),
        "send a reset": lambda: client.send_password_reset(user_id),
        "deactivate": lambda: client.deactivate_user(user_id),
        "reactivate": lambda: client.reactivate_user(user_id),
        "suspend": lambda: client.suspend_organization(org, "Taken over"),
        "reactivate an organization": lambda: client.reactivate_organization(org),
    }
    for name, call in staff_calls.items():
        with pytest.raises(CoreRefused) as refused:
            call()
        assert refused.value.status == 403, name
        assert "CORE_ADMIN_TOKEN" in refused.value.detail, name
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT email, is_active FROM users WHERE id = %s", (user_id,)).fetchone() == (
            email,
            True,
        )
        assert conn.execute(
            "SELECT count(*) FROM email_outbox WHERE to_address = %s AND category = 'account.reset'", (email,)
        ).fetchone() == (0,)
    assert browser.get("/dashboard").status_code == 200, "nothing happened to the account"

    # What marketing needs still works with its credential; admin's may make every call.
    assert client.organization_plan(org).status == "active"
    assert client.set_plan(org, "pro").plan == "pro"
    assert admin_client.organization_plan(org).plan == "pro"
    assert admin_client.update_user(user_id, display_name="Renamed").display_name == "Renamed"


def test_an_email_change_ends_sessions_and_earlier_reset_links(admin_client, new_browser, outbox, database):
    person = new_browser()
    email = person.sign_up()
    user_id = _user_id(database, email)
    admin_client.send_password_reset(user_id)
    old_link = link_in(outbox(email, "account.reset")["body"])
    assert new_browser().get(old_link).status_code == 200, "the link works before the change"

    # A new name alone changes nothing about sign-in.
    admin_client.update_user(user_id, display_name="Same Person")
    assert person.get("/orgs").status_code == 200

    new_email = unique_email()
    changed = admin_client.update_user(user_id, email=new_email)
    assert changed.email == new_email and not changed.email_verified
    assert person.get("/orgs").status_code == 302, "signed out everywhere"
    assert new_browser().get(old_link).status_code == 400, "the link sent to the old address is dead"
    assert (
        new_browser().post(old_link, {"password": PASSWORD + "!", "confirm": PASSWORD + "!"}).status_code
        == 400
    )
    assert new_browser().sign_in(new_email).status_code == 302, "the password still works at the new address"
    verify = link_in(outbox(new_email, "account.verify")["body"])
    assert new_browser().get(verify).status_code == 302
    assert admin_client.update_user(user_id, display_name="Proved").email_verified, "the link proved it"


def test_each_credential_is_long_and_admins_differs_from_marketings(database):
    from nectar.shared.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="CORE_ADMIN_TOKEN is too short"):
        load_settings(Service.CORE, database.environ(CORE_ADMIN_TOKEN="short"))
    with pytest.raises(ConfigError, match="must differ from CORE_SERVICE_TOKEN"):
        load_settings(
            Service.CORE, database.environ(CORE_SERVICE_TOKEN=SERVICE_TOKEN, CORE_ADMIN_TOKEN=SERVICE_TOKEN)
        )
    settings = load_settings(Service.ADMIN, database.environ(CORE_ADMIN_TOKEN=ADMIN_TOKEN))
    assert settings.admin_service_token == ADMIN_TOKEN and settings.service_token is None
