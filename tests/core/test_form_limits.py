"""Core's forms state the limits its server holds (tests/forms.py walks each page's forms)."""

from __future__ import annotations

from tests.core.conftest import PASSWORD, link_in, unique_email
from tests.forms import form_limit_problems


def test_signed_out_forms_say_their_limits_and_the_server_holds_them(browser, new_browser, outbox):
    email = unique_email()
    browser.post("/signup", {"email": email})
    finish = link_in(outbox(email, "account.signup")["body"])
    owner = new_browser()
    owner_email = owner.sign_up()
    visitor = new_browser()
    visitor.post("/forgot-password", {"email": owner_email})
    reset = link_in(outbox(owner_email, "account.reset")["body"])
    problems = []
    for path in ("/signup", "/login", "/forgot-password", finish, reset):
        problems += form_limit_problems(new_browser(), path)
    assert not problems, "\n".join(problems)


def test_an_organizations_forms_say_their_limits_and_the_server_holds_them(browser):
    browser.sign_up(password=PASSWORD)
    browser.create_org()
    problems = []
    for path in (
        "/orgs/new",
        "/org/settings",
        "/org/members",
        "/org/api-keys",
        "/org/workflows",
        "/org/alerts",
    ):
        problems += form_limit_problems(browser, path)
    assert not problems, "\n".join(problems)
