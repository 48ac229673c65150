"""Accounts end to end through the web pages, against the real database and the real outbox."""

import re
import statistics
import time
from urllib.parse import urlsplit

import pytest

from nectar.core.accounts import service
from nectar.shared.config import Role
from tests.concurrency import within_one_window, wrong_passwords_at_once
from tests.core.conftest import PASSWORD, Browser, link_in, unique_email


def test_sign_up_by_the_emailed_link_then_sign_in(browser, new_browser, outbox):
    email = unique_email()
    started = browser.post("/signup", {"email": email})
    assert started.status_code == 200 and "Check your email" in started.get_data(as_text=True)
    assert browser.get("/dashboard").status_code == 302, "no account, no session until the link"
    assert new_browser().sign_in(email).status_code == 401
    message = outbox(email, "account.signup")
    assert message["subject"] == "Finish signing up for Nectar Studio"
    link = link_in(message["body"])
    page = browser.get(link).get_data(as_text=True)
    assert email in page and "Finish signing up" in page

    short = browser.post(link, {"password": "short", "confirm": "short"})
    assert re.search(
        r'id="password".*?field-error[^>]*>Use at least 12 characters', short.get_data(as_text=True), re.S
    )
    mismatch = browser.post(link, {"password": PASSWORD, "confirm": PASSWORD + "x"})
    assert "The passwords differ." in mismatch.get_data(as_text=True)

    done = browser.post(link, {"display_name": "New Person", "password": PASSWORD, "confirm": PASSWORD})
    assert done.status_code == 302 and done.headers["Location"].endswith("/orgs/new")
    assert browser.get("/dashboard").headers["Location"].endswith("/orgs")  # signed in, no organization yet
    assert "Please confirm" not in browser.get("/orgs/new").get_data(
        as_text=True
    ), "the link proved the address"
    other = new_browser()
    response = other.sign_in(email)  # no organization yet: on to making one
    assert response.status_code == 302 and response.headers["Location"].endswith("/orgs/new")

    used = new_browser().get(link)
    assert used.status_code == 400 and "has an account already" in used.get_data(as_text=True)
    forged = new_browser().get(link[:-3] + "abc")
    assert forged.status_code == 400 and "not valid" in forged.get_data(as_text=True)


def _signup_answer(new_browser, email) -> tuple[int, str, float]:
    """Status, page (CSRF tokens taken out) and seconds of one sign-up from a fresh browser."""
    visitor = new_browser()
    token = visitor.csrf_token()
    started = time.perf_counter()
    answer = visitor.post("/signup", {"email": email, "csrf_token": token})
    seconds = time.perf_counter() - started
    page = re.sub(r'name="csrf_token"[^>]*>', "", answer.get_data(as_text=True))
    return answer.status_code, page, seconds


def test_sign_up_answers_alike_for_an_address_that_has_an_account_and_tells_its_owner(new_browser, outbox):
    owners = [new_browser().sign_up() for _ in range(5)]
    existing, new = [], []
    for owner in owners:  # interleaved, so a slow moment of the machine hits both alike
        existing.append(_signup_answer(new_browser, owner))
        new.append(_signup_answer(new_browser, unique_email()))
    answers = {(status, page) for status, page, _ in existing + new}
    assert len(answers) == 1, "the same status and page either way"
    assert next(iter(answers))[0] == 200
    slow, fast = sorted([statistics.median(t for *_, t in existing), statistics.median(t for *_, t in new)])
    assert slow <= 3 * fast + 0.05, f"medians {fast * 1000:.1f} ms and {slow * 1000:.1f} ms"

    for owner in owners:
        note = outbox(owner, "account.signup_existing")
        assert note["subject"] == "Someone tried to sign up with your email"
        assert "/login" in note["body"] and "/forgot-password" in note["body"]
    assert new_browser().sign_in(owners[0]).status_code == 302, "the account is unchanged"


def test_sign_up_emails_to_one_address_are_limited(new_browser, database):
    email = unique_email()
    owner = new_browser().sign_up()
    for _ in range(5):
        for address in (email, owner):
            assert _signup_answer(new_browser, address)[0] == 200
    with database.connect(Role.ADMIN) as conn:
        sent = conn.execute(
            "SELECT to_address, count(*) FROM email_outbox WHERE to_address IN (%s, %s) "
            "AND category LIKE 'account.signup%%' GROUP BY to_address",
            (email, owner),
        ).fetchall()
    # The owner's sign-up itself sent one of theirs.
    assert dict(sent) == {email: service.EMAIL_PER_ADDRESS.events, owner: service.EMAIL_PER_ADDRESS.events}


def test_sign_up_refuses_what_is_not_an_email_address(browser):
    answer = browser.post("/signup", {"email": "not an address"})
    assert answer.status_code == 422
    assert re.search(r'id="email".*?field-error', answer.get_data(as_text=True), re.S)


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(browser, new_browser):
    email = browser.sign_up()
    other = new_browser()
    wrong = other.sign_in(email, "not the password at all")
    assert wrong.status_code == 401
    assert "Wrong email or password." in wrong.get_data(as_text=True)
    unknown = other.sign_in(unique_email(), PASSWORD)
    assert unknown.status_code == 401
    assert "Wrong email or password." in unknown.get_data(as_text=True)


def test_repeated_failures_lock_the_account_briefly_and_say_so(browser, new_browser, monkeypatch):
    email = browser.sign_up()
    frozen = time.time()
    monkeypatch.setattr(time, "time", lambda: frozen)  # all attempts in one window
    attacker = new_browser()
    for _ in range(service.ACCOUNT_BURST.events):
        assert attacker.sign_in(email, "guess-guess-guess").status_code == 401
    locked = attacker.sign_in(email, PASSWORD)  # even the right password waits out the lockout
    assert locked.status_code == 429
    assert "locked for" in locked.get_data(as_text=True)


def test_sign_in_starts_a_new_session_and_sign_out_kills_it(core_app, browser, new_browser):
    email = browser.sign_up()
    first = browser.client.get_cookie("nectar_core_session").value
    assert browser.post("/logout").status_code == 302
    assert browser.sign_in(email).status_code == 302
    second = browser.client.get_cookie("nectar_core_session").value
    assert second != first, "sign-in must start a new session"
    assert browser.get("/orgs").status_code == 200
    assert browser.post("/logout").status_code == 302
    replay = Browser(core_app)
    replay.client.set_cookie("nectar_core_session", second)
    assert replay.get("/orgs").status_code == 302, "a signed-out session cookie must be worthless"


def test_session_cookie_flags(browser, settings_for):
    browser.sign_up()
    cookie = browser.client.get_cookie("nectar_core_session")
    assert cookie.http_only and cookie.same_site == "Lax"
    from cryptography.fernet import Fernet

    from nectar.core.app import create_app
    from nectar.shared.config import ConfigError, Service

    with pytest.raises(ConfigError, match="NECTAR_ENCRYPTION_KEYS is not set"):
        create_app(settings_for(Service.CORE, NECTAR_ENV="production", SECRET_KEY="p" * 40))
    keys = f"k1:{Fernet.generate_key().decode()}"
    production = create_app(
        settings_for(Service.CORE, NECTAR_ENV="production", SECRET_KEY="p" * 40, NECTAR_ENCRYPTION_KEYS=keys)
    )
    assert production.config["SESSION_COOKIE_SECURE"] is True


def test_forms_refuse_a_post_without_the_csrf_token(browser):
    email = browser.sign_up()
    response = browser.client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 400


def test_password_reset_works_once(browser, new_browser, outbox):
    email = browser.sign_up()
    visitor = new_browser()
    assert visitor.post("/forgot-password", {"email": email}).status_code == 200
    link = link_in(outbox(email, "account.reset")["body"])
    assert visitor.get(link).status_code == 200
    new_password = "a brand new password 42"
    done = visitor.post(link, {"password": new_password, "confirm": new_password})
    assert done.status_code == 302
    assert new_browser().sign_in(email, PASSWORD).status_code == 401
    assert new_browser().sign_in(email, new_password).status_code == 302
    reused = visitor.post(link, {"password": "yet another password", "confirm": "yet another password"})
    assert reused.status_code == 400
    assert "already been used" in reused.get_data(as_text=True)
    # The reset signed out every session, the original browser's included.
    assert browser.get("/orgs").status_code == 302


def test_an_expired_or_forged_reset_link_is_refused(browser, new_browser, outbox, monkeypatch):
    email = browser.sign_up()
    visitor = new_browser()
    visitor.post("/forgot-password", {"email": email})
    link = link_in(outbox(email, "account.reset")["body"])
    monkeypatch.setattr(service, "RESET_MAX_AGE", -1)
    expired = visitor.get(link)
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    forged = visitor.get(link[:-3] + "abc")
    assert forged.status_code == 400 and "not valid" in forged.get_data(as_text=True)


def test_forgot_password_does_not_reveal_whether_an_account_exists(browser, new_browser):
    known = browser.sign_up()
    answers = [new_browser().post("/forgot-password", {"email": email}) for email in (known, unique_email())]
    assert answers[0].status_code == answers[1].status_code == 200
    assert answers[0].get_data(as_text=True) == answers[1].get_data(as_text=True)


def test_reset_emails_to_one_address_are_limited(browser, new_browser, database):
    email = browser.sign_up()
    for _ in range(6):
        new_browser().post("/forgot-password", {"email": email})
    with database.connect(Role.ADMIN) as conn:
        sent = conn.execute(
            "SELECT count(*) FROM email_outbox WHERE to_address = %s AND category = 'account.reset'", (email,)
        ).fetchone()[0]
    assert sent == service.EMAIL_PER_ADDRESS.events


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_sign_in_never_redirects_off_site(browser, new_browser, target):
    email = browser.sign_up()
    other = new_browser()
    response = other.post("/login", {"email": email, "password": PASSWORD, "next": target})
    assert urlsplit(response.headers["Location"]).path == "/orgs/new"  # where it goes without `next`


def test_twenty_concurrent_wrong_passwords_get_at_most_five_password_checks(browser, new_browser):
    def attempt():
        email = browser.sign_up()
        wrong_passwords_at_once([new_browser() for _ in range(20)], email, service.ACCOUNT_BURST)

    within_one_window(service.ACCOUNT_BURST, attempt)
