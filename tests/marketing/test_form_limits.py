"""Marketing's forms state the limits its server holds (tests/forms.py walks each page's forms)."""

from __future__ import annotations

from tests.forms import form_limit_problems, post_forms


def test_the_public_sites_forms_say_their_limits_and_the_server_holds_them(browser):
    problems = []
    for path in ("/", "/contact", "/newsletter", "/pricing", "/billing/portal"):
        problems += form_limit_problems(browser, path)  # the honeypot, hidden from people, is not asked
    assert not problems, "\n".join(problems)
    checkout = [
        form
        for form in post_forms(browser.get("/pricing").get_data(as_text=True))
        if "checkout" in form.action
    ]
    assert checkout, "the pricing page offers a checkout to check"
