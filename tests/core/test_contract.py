"""Core's service contract: authenticated, idempotent, and a client that copes when core is down."""

import socket
import time
import uuid

import pytest

from nectar.core.contract import CoreClient, CoreRefused, CoreUnavailable
from nectar.shared.config import Role
from tests.core.conftest import PASSWORD, SERVICE_TOKEN, link_in, unique_email
from tests.serving import served


@pytest.fixture(scope="module")
def core_url(core_app):
    with served(core_app) as url:
        yield url


@pytest.fixture
def client(core_url):
    return CoreClient(core_url, SERVICE_TOKEN, timeout=5)


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
    assert person.post(link, {"password": PASSWORD, "confirm": PASSWORD}).status_code == 302
    assert person.sign_in(email).status_code == 302


def test_suspension_locks_the_organization_until_reactivated(client, browser):
    browser.sign_up()
    org = browser.create_org()
    token_page = browser.post("/org/api-keys", {"target": "k"}).get_data(as_text=True)
    token = token_page.split('id="new-token">')[1].split("<")[0]

    assert client.suspend_organization(org, "Unpaid invoice").status == "suspended"
    page = browser.get("/dashboard")
    assert page.status_code == 403 and "Unpaid invoice" in page.get_data(as_text=True)
    assert browser.api("GET", "/api/v1/organization", token=token).status_code == 401
    assert client.reactivate_organization(org).status == "active"
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


def test_a_paid_organization_never_goes_to_an_unverified_squatter(client, new_browser, outbox, database):
    squatter = new_browser()
    email = squatter.sign_up()  # registered, never verified
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
