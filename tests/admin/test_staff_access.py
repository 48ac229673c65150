"""Staff sign-in and the gate: no page without a staff session, a core cookie is worthless, sign-in
is rate-limited, TOTP is required for superadmins and checked, sessions expire and end, and roles
are enforced on the server for every route the app has."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pyotp
import pytest
from flask.sessions import SecureCookieSessionInterface

from nectar.admin.staff import service as staff_service
from nectar.admin.staff.access import PUBLIC_ENDPOINTS, READ_ONLY_WRITES, SIGN_IN_ENDPOINTS
from nectar.shared.config import Role
from tests.admin.conftest import StaffBrowser, totp_code
from tests.concurrency import (
    at_once,
    wait_for_lock_waiters,
    within_one_window,
    wrong_passwords_at_once,
)
from tests.core.conftest import Browser as CoreBrowser

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
ADMIN_COOKIE = "nectar_admin_session"
CORE_COOKIE = "nectar_core_session"


def _url(app, rule) -> str:
    """The rule's URL with made-up values for its arguments (the gate answers before any view)."""
    values = {}
    for name in rule.arguments:
        kind = type(rule._converters[name]).__name__
        values[name] = uuid.uuid4() if kind == "UUIDConverter" else 1 if "Integer" in kind else "x"
    with app.test_request_context():
        return app.url_map.bind("localhost").build(rule.endpoint, values)


def _guarded_rules(app, methods: set[str]):
    open_endpoints = PUBLIC_ENDPOINTS | SIGN_IN_ENDPOINTS
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in open_endpoints and methods & set(rule.methods or ())
    ]


def test_every_page_refuses_a_visitor_without_a_staff_session(admin_app):
    client = admin_app.test_client()
    rules = _guarded_rules(admin_app, {"GET"})
    assert {"/users", "/orgs", "/system", "/audit", "/account", "/"} <= {r.rule for r in rules}
    with_arguments = [rule for rule in rules if rule.arguments]
    assert len(with_arguments) >= 3, "a few pages with arguments are checked too"
    for rule in rules:
        url = _url(admin_app, rule)
        page = client.get(url)
        assert page.status_code == 302, (url, page.status_code)
        assert page.headers["Location"].startswith("/login?next="), url
        api = client.get(url, headers={"Accept": "application/json"})
        assert api.status_code == 401 and api.mimetype == "application/problem+json", url


def test_every_write_refuses_a_visitor_without_a_staff_session(admin_app, audit_rows):
    client = admin_app.test_client()
    before = len(audit_rows())
    rules = _guarded_rules(admin_app, UNSAFE)
    assert rules
    for rule in rules:
        method = sorted(UNSAFE & set(rule.methods))[0]
        answer = client.open(_url(admin_app, rule), method=method, headers={"Accept": "application/json"})
        assert answer.status_code == 401, (rule.rule, answer.status_code)
    assert len(audit_rows()) == before


def test_unknown_paths_are_a_plain_404_that_reveals_nothing(admin_app):
    page = admin_app.test_client().get("/no/such/page")
    assert page.status_code == 404 and "/users" not in page.get_data(as_text=True), "no staff navigation"


def test_health_checks_and_the_login_page_are_open(admin_app):
    client = admin_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200


def test_a_valid_core_session_cookie_is_refused(admin_app, core_app):
    customer = CoreBrowser(core_app)
    customer.sign_up()
    core_cookie = customer.client.get_cookie(CORE_COOKIE)
    assert core_cookie is not None
    assert customer.get("/orgs").status_code == 200, "the cookie is live on core"

    intruder = admin_app.test_client()
    for name in (ADMIN_COOKIE, CORE_COOKIE):
        intruder.set_cookie(name, core_cookie.value)
    page = intruder.get("/users")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    assert intruder.get("/users", headers={"Accept": "application/json"}).status_code == 401


def test_a_cookie_signed_with_another_salt_is_refused_even_naming_a_live_session(
    admin_app, staff_browser, database
):
    staff = staff_browser("support")
    assert staff.get("/users").status_code == 200
    with database.connect(Role.ADMIN) as conn:
        session_id = conn.execute(
            "SELECT s.id FROM staff_sessions s JOIN staff_users u ON u.id = s.staff_id "
            "WHERE u.email = %s AND s.revoked_at IS NULL",
            (staff.email,),
        ).fetchone()[0]
    # What a core cookie with this content would look like: same secret key, Flask's default salt.
    forged = (
        SecureCookieSessionInterface()
        .get_signing_serializer(admin_app)
        .dumps({"staff_session": str(session_id)})
    )
    intruder = admin_app.test_client()
    intruder.set_cookie(ADMIN_COOKIE, forged)
    assert intruder.get("/users").status_code == 302


def test_sign_in_is_rate_limited_per_email(admin_app, staff_member):
    def attempt():
        email, password, _ = staff_member("support")
        browser = StaffBrowser(admin_app)
        for _ in range(5):
            wrong = browser.post("/login", {"email": email, "password": "not the password at all"})
            assert wrong.status_code == 401
            assert "Wrong email or password." in wrong.get_data(as_text=True)
        locked = browser.post("/login", {"email": email, "password": password})
        assert locked.status_code == 429
        assert "locked" in locked.get_data(as_text=True)
        assert browser.get("/users").status_code == 302, "the right password did not get in while locked"

    within_one_window(staff_service.ACCOUNT_LIMIT, attempt)


def test_sign_in_is_rate_limited_per_address(admin_app, staff_member):
    def attempt():
        email, password, _ = staff_member("support")
        browser = StaffBrowser(admin_app)
        address = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"}
        for i in range(20):
            answer = browser.post(
                "/login",
                {"email": f"guess-{i}-{uuid.uuid4().hex[:6]}@example.com", "password": "x" * 12},
                environ_base=address,
            )
            assert answer.status_code == 401
        locked = browser.post("/login", {"email": email, "password": password}, environ_base=address)
        assert locked.status_code == 429
        elsewhere = browser.post("/login", {"email": email, "password": password})
        assert elsewhere.status_code == 302, "another address is not locked"

    within_one_window(staff_service.ADDRESS_LIMIT, attempt)


def test_twenty_concurrent_wrong_passwords_get_at_most_five_password_checks(admin_app, staff_member):
    def attempt():
        email, _, _ = staff_member("support")
        wrong_passwords_at_once(
            [StaffBrowser(admin_app) for _ in range(20)], email, staff_service.ACCOUNT_LIMIT
        )

    within_one_window(staff_service.ACCOUNT_LIMIT, attempt)


def test_a_superadmin_must_enrol_totp_before_anything_else(admin_app, staff_member, audit_rows, database):
    email, password, _ = staff_member("superadmin", totp=False)
    browser = StaffBrowser(admin_app)
    signed_in = browser.post("/login", {"email": email, "password": password})
    assert signed_in.headers["Location"] == "/account/totp"
    for url in ("/", "/users", "/system", "/audit", "/login/totp"):
        page = browser.get(url)
        assert page.status_code == 302 and page.headers["Location"] == "/account/totp", url
    assert browser.get("/users", headers={"Accept": "application/json"}).status_code == 403
    refused = browser.post("/users/new", {"email": "x@example.com", "request_id": "r"})
    assert refused.status_code == 302 and refused.headers["Location"] == "/account/totp"

    setup = browser.get("/account/totp").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', setup).group(1)
    assert "otpauth://totp/" in setup
    assert 'href="/users"' not in setup, "no section links until enrolled"
    assert (
        browser.get("/account/totp").get_data(as_text=True).count(secret) >= 1
    ), "reloading keeps the secret"
    wrong = browser.post("/account/totp", {"code": _wrong_code(secret)})
    assert wrong.status_code == 422 and "not right" in wrong.get_data(as_text=True)
    assert browser.get("/users").status_code == 302

    done = browser.post("/account/totp", {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 302 and done.headers["Location"] == "/"
    assert browser.get("/users").status_code == 200
    assert [row["target"] for row in audit_rows("staff.totp_enabled") if row["actor"] == email]
    with database.connect(Role.ADMIN) as conn:
        stored = conn.execute(
            "SELECT totp_secret_ciphertext, totp_enabled_at FROM staff_users WHERE email = %s", (email,)
        ).fetchone()
    assert stored[1] is not None and secret.encode() not in bytes(stored[0]), "the secret is stored encrypted"

    # The next sign-in asks for a code.
    again = StaffBrowser(admin_app)
    assert again.post("/login", {"email": email, "password": password}).headers["Location"] == "/login/totp"


def _wrong_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + 30 * k) for k in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def test_a_wrong_totp_code_is_refused_and_a_used_code_cannot_be_replayed(admin_app, staff_member):
    email, password, secret = staff_member("superadmin")
    browser = StaffBrowser(admin_app)
    assert browser.post("/login", {"email": email, "password": password}).headers["Location"] == "/login/totp"
    wrong = browser.post("/login/totp", {"code": _wrong_code(secret)})
    assert wrong.status_code == 401
    assert browser.get("/users").headers["Location"] == "/login/totp"
    code = totp_code(secret)
    assert browser.post("/login/totp", {"code": code}).headers["Location"] == "/"
    assert browser.get("/users").status_code == 200

    replay = StaffBrowser(admin_app)
    replay.post("/login", {"email": email, "password": password})
    assert replay.post("/login/totp", {"code": code}).status_code == 401, "a used code is spent"
    assert replay.post("/login/totp", {"code": totp_code(secret, 1)}).headers["Location"] == "/"


def test_totp_guessing_is_throttled(admin_app, staff_member):
    def attempt():
        email, password, secret = staff_member("superadmin")
        browser = StaffBrowser(admin_app)
        browser.post("/login", {"email": email, "password": password})
        for _ in range(5):
            assert browser.post("/login/totp", {"code": _wrong_code(secret)}).status_code == 401
        locked = browser.post("/login/totp", {"code": totp_code(secret)})
        assert locked.status_code == 401 and "Too many wrong codes" in locked.get_data(as_text=True)

    within_one_window(staff_service.TOTP_LIMIT, attempt)


def test_twenty_concurrent_wrong_totp_codes_get_at_most_five_checks(admin_app, staff_member):
    def attempt():
        email, password, secret = staff_member("superadmin")
        guessers = [StaffBrowser(admin_app) for _ in range(20)]
        for guesser in guessers:
            assert guesser.post("/login", {"email": email, "password": password}).status_code == 302
        tokens = [guesser.csrf_token() for guesser in guessers]
        wrong = _wrong_code(secret)
        answers = at_once(
            20, lambda i: guessers[i].post("/login/totp", {"code": wrong, "csrf_token": tokens[i]})
        )
        pages = [answer.get_data(as_text=True) for answer in answers]
        checked = sum("not right" in page for page in pages)
        assert checked <= staff_service.TOTP_LIMIT.events, f"{checked} codes checked"
        assert checked + sum("Too many wrong codes" in page for page in pages) == 20

    within_one_window(staff_service.TOTP_LIMIT, attempt)


def test_support_staff_may_turn_totp_on_and_off_but_a_superadmin_may_not_turn_it_off(
    admin_app, staff_browser, audit_rows
):
    support = staff_browser("support")
    secret = re.search(
        r'id="totp-secret">([A-Z2-7]+)<', support.get("/account/totp").get_data(as_text=True)
    ).group(1)
    assert support.post("/account/totp", {"code": totp_code(secret)}).status_code == 302
    assert "on since" in support.get("/account").get_data(as_text=True)
    # Signing in now needs the code.
    fresh = StaffBrowser(admin_app)
    assert (
        fresh.post("/login", {"email": support.email, "password": support.password}).headers["Location"]
        == "/login/totp"
    )
    before = len(audit_rows("staff.totp_disabled"))
    wrong = support.post("/account/totp/disable", {"code": _wrong_code(secret)})
    assert wrong.status_code == 422 and 'class="field-error"' in wrong.get_data(as_text=True)
    assert "on since" in support.get("/account").get_data(as_text=True)
    disabled = support.post("/account/totp/disable", {"code": totp_code(secret, 1)})
    assert disabled.status_code == 302 and disabled.headers["Location"] == "/account"
    assert ">off<" in support.get("/account").get_data(as_text=True)
    assert len(audit_rows("staff.totp_disabled")) == before + 1

    superadmin = staff_browser("superadmin")
    refused = superadmin.post("/account/totp/disable", {"code": totp_code(superadmin.totp_secret, 1)})
    assert refused.status_code == 403
    assert "Superadmins must keep two-factor authentication on." in refused.get_data(as_text=True)
    assert "on since" in superadmin.get("/account").get_data(as_text=True)
    assert len(audit_rows("staff.totp_disabled")) == before + 1, "nothing was turned off"


def _session_row(database, email):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT s.id FROM staff_sessions s JOIN staff_users u ON u.id = s.staff_id WHERE u.email = %s "
            "ORDER BY s.created_at DESC LIMIT 1",
            (email,),
        ).fetchone()[0]


@pytest.mark.parametrize(
    "change",
    [
        "last_seen_at = now() - interval '31 minutes'",  # idle
        "created_at = now() - interval '13 hours'",  # too old, however active
        "revoked_at = now()",
    ],
)
def test_idle_old_or_revoked_sessions_are_refused(staff_browser, database, change):
    staff = staff_browser("support")
    assert staff.get("/users").status_code == 200
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            f"UPDATE staff_sessions SET {change} WHERE id = %s", (_session_row(database, staff.email),)
        )
    assert staff.get("/users").headers["Location"].startswith("/login")


def test_a_deactivated_staff_member_is_signed_out(staff_browser, database):
    staff = staff_browser("support")
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("UPDATE staff_users SET is_active = false WHERE email = %s", (staff.email,))
    assert staff.get("/users").status_code == 302
    assert (
        StaffBrowser(staff.app).post("/login", {"email": staff.email, "password": staff.password}).status_code
        == 401
    )


def test_logout_revokes_the_session_row(admin_app, staff_browser, database):
    staff = staff_browser("support")
    cookie = staff.client.get_cookie(ADMIN_COOKIE).value
    assert staff.post("/logout").headers["Location"] == "/login"
    assert staff.get("/users").status_code == 302
    with database.connect(Role.ADMIN) as conn:
        revoked = conn.execute(
            "SELECT revoked_at FROM staff_sessions WHERE id = %s", (_session_row(database, staff.email),)
        ).fetchone()[0]
    assert revoked is not None
    replay = admin_app.test_client()
    replay.set_cookie(ADMIN_COOKIE, cookie)
    assert replay.get("/users").status_code == 302, "the old cookie names a revoked session"


def test_read_only_staff_get_403_on_every_write_route(admin_app, staff_browser, audit_rows):
    reader = staff_browser("read_only")
    assert reader.get("/users").status_code == 200, "reading is allowed"
    before = len(audit_rows())
    rules = [rule for rule in _guarded_rules(admin_app, UNSAFE) if rule.endpoint not in READ_ONLY_WRITES]
    assert {"/users/new", "/orgs/<uuid:org_id>/suspend", "/system/settings/<key>"} <= {r.rule for r in rules}
    for rule in rules:
        for method in sorted(UNSAFE & set(rule.methods)):
            token = reader.csrf_token()
            answer = reader.client.open(_url(admin_app, rule), method=method, data={"csrf_token": token})
            assert answer.status_code == 403, (method, rule.rule, answer.status_code)
    assert len(audit_rows()) == before


def test_a_read_only_refusal_says_why_as_a_page_or_a_problem_document(staff_browser):
    reader = staff_browser("read_only")
    token = reader.csrf_token()
    page = reader.client.post("/users/new", data={"csrf_token": token})
    assert page.status_code == 403 and page.mimetype == "text/html"
    assert "Your staff role is read-only." in page.get_data(as_text=True)
    api = reader.client.post("/users/new", data={"csrf_token": token}, headers={"Accept": "application/json"})
    assert api.status_code == 403 and api.mimetype == "application/problem+json"
    assert api.get_json()["detail"] == "Your staff role is read-only."


def test_read_only_staff_see_no_write_buttons(staff_browser, core_app):
    customer = CoreBrowser(core_app)
    email = customer.sign_up()
    org = customer.create_org()
    reader = staff_browser("read_only")
    users = reader.get(f"/users?q={email}").get_data(as_text=True)
    assert email in users and "New user" not in users
    user_id = re.search(r'href="/users/([0-9a-f-]{36})"', users).group(1)
    detail = reader.get(f"/users/{user_id}").get_data(as_text=True)
    assert "Deactivate" not in detail and "password-reset" not in detail
    assert "/suspend" not in reader.get(f"/orgs/{org}").get_data(as_text=True)


def test_only_superadmins_change_system_settings(staff_browser):
    support = staff_browser("support")
    assert support.get("/system/settings/feature_flags").status_code == 403
    assert support.post("/system/settings/feature_flags", {"value": "{}"}).status_code == 403
    assert support.post("/system/settings/feature_flags/delete").status_code == 403


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(admin_app, staff_member):
    email, password, _ = staff_member("support")
    browser = StaffBrowser(admin_app)
    asked = browser.get("/audit?actor=x")
    assert asked.headers["Location"] == "/login?next=%2Faudit%3Factor%3Dx"
    back = browser.post(
        "/login?next=%2Faudit%3Factor%3Dx", {"email": email, "password": password, "next": "/audit?actor=x"}
    )
    assert back.headers["Location"] == "/audit?actor=x"
    for target in ("//evil.example.com/", "/\\evil.example.com", "https://evil.example.com/", "/login/totp"):
        other = StaffBrowser(admin_app)
        away = other.post("/login", {"email": email, "password": password, "next": target})
        assert away.headers["Location"] == "/", target


def test_one_code_brought_by_two_requests_at_once_signs_in_only_one(admin_app, staff_member, database):
    email, password, secret = staff_member("superadmin")
    browsers = [StaffBrowser(admin_app) for _ in range(2)]
    for browser in browsers:
        assert (
            browser.post("/login", {"email": email, "password": password}).headers["Location"]
            == "/login/totp"
        )
    code = totp_code(secret)
    forms = [{"code": code, "csrf_token": browser.csrf_token()} for browser in browsers]
    answers = [None, None]

    def bring(index: int) -> None:
        answers[index] = browsers[index].post("/login/totp", forms[index])

    # The race made certain: holding the staff row's lock lets both requests check the code and
    # reach the write of the used step before either can finish; then both go at once.
    with database.connect(Role.ADMIN) as holder:
        holder.execute("SELECT 1 FROM staff_users WHERE email = %s FOR UPDATE", (email,))
        threads = [threading.Thread(target=bring, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_for_lock_waiters(database, 2, "UPDATE staff_users")
        finally:
            holder.rollback()
            for thread in threads:
                thread.join(30)
    assert sorted(answer.status_code for answer in answers) == [302, 401]
    winner = next(answer for answer in answers if answer.status_code == 302)
    loser = next(answer for answer in answers if answer.status_code == 401)
    assert winner.headers["Location"] == "/"
    assert "already used" in loser.get_data(as_text=True)
    signed_in = [browser.get("/users").status_code for browser in browsers]
    assert sorted(signed_in) == [200, 302], "only the winner is past the second factor"


def test_a_nul_byte_in_a_form_or_query_is_a_400_never_a_500(admin_app, staff_browser):
    visitor = StaffBrowser(admin_app)
    answer = visitor.post("/login", {"email": "a\x00@x.com", "password": "a password long enough 42"})
    assert answer.status_code == 400, answer.status_code
    staff = staff_browser("read_only")
    for url in ("/users?q=%00", "/orgs?q=%00", "/leads/?q=%00", "/audit?actor=%00", "/outbox/?q=%00"):
        assert staff.get(url).status_code == 400, url
