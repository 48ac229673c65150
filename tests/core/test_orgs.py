"""Organizations: create, switch, settings, members and roles, invitations, ownership, suspension."""

import re
import threading
import uuid

from nectar.shared.config import Role
from tests.concurrency import wait_for_lock_waiters
from tests.core.conftest import PASSWORD, link_in, org_id_of, unique_email


def _member_roles(database, org_id) -> dict[str, str]:
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = %s",
            (org_id,),
        ).fetchall()
    return dict(rows)


def _invite(browser, email, role="member"):
    return browser.post("/org/invitations", {"email": email, "role": role})


def _join(owner, new_browser, outbox, role="member"):
    """Invites a new person with `role` and has them accept by creating their account."""
    email = unique_email()
    _invite(owner, email, role)
    person = new_browser()
    link = link_in(outbox(email, "org.invitation")["body"])
    response = person.post(
        link, {"email": email, "password": PASSWORD, "confirm": PASSWORD, "display_name": "New"}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return email, person


def test_create_switch_and_settings(browser, database):
    browser.sign_up()
    first = browser.create_org("Acme Robots")
    second = browser.create_org("Acme Robots")  # same name: the slug gets a number
    assert org_id_of(browser) == second
    choose = browser.get("/orgs").get_data(as_text=True)
    assert "/acme-robots<" in choose and "/acme-robots-2<" in choose
    assert browser.post(f"/orgs/{first}/switch").status_code == 302
    assert org_id_of(browser) == first
    dashboard = browser.get("/dashboard").get_data(as_text=True)
    assert 'data-stat="members">1<' in dashboard

    saved = browser.post(
        "/org/settings", {"name": "Acme", "slug": "acme-robots-eu", "timezone": "Europe/Berlin"}
    )
    assert saved.status_code == 302
    bad = browser.post("/org/settings", {"name": "Acme", "slug": "Not A Slug", "timezone": "Mars/Olympus"})
    page = bad.get_data(as_text=True)
    assert "lowercase letters" in page
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute(
            "SELECT slug, timezone FROM organizations WHERE id = %s", (first,)
        ).fetchone() == (
            "acme-robots-eu",
            "Europe/Berlin",
        )


def test_invite_a_new_person_who_signs_up_from_the_link(browser, new_browser, outbox, database):
    browser.sign_up()
    org = browser.create_org()
    email, person = _join(browser, new_browser, outbox)
    assert _member_roles(database, org)[email] == "member"
    assert org_id_of(person) == org
    assert 'data-stat="members">2<' in person.get("/dashboard").get_data(as_text=True)


def test_an_existing_account_signs_in_to_accept(browser, new_browser, outbox, database):
    browser.sign_up()
    org = browser.create_org()
    person = new_browser()
    email = person.sign_up()
    person.post("/logout")
    _invite(browser, email, "admin")
    link = link_in(outbox(email, "org.invitation")["body"])
    assert "/login" in person.get(link).headers["Location"]
    person.sign_in(email)
    assert person.post(link).status_code == 302
    assert _member_roles(database, org)[email] == "admin"
    assert person.post(link).status_code == 400  # accepted already: the link is spent


def test_inviting_an_existing_member_is_refused(browser, new_browser, outbox):
    owner_email = browser.sign_up()
    browser.create_org()
    response = _invite(browser, owner_email)
    assert response.status_code == 422  # the members page again, the message next to the address
    assert re.search(
        r'<div class="field has-error">\s*<label for="email".*?is already a member',
        response.get_data(as_text=True),
        re.S,
    )


def test_a_member_cannot_invite_and_an_admin_cannot_remove_an_owner(browser, new_browser, outbox, database):
    owner_email = browser.sign_up()
    org = browser.create_org()
    _member_email, member = _join(browser, new_browser, outbox, "member")
    refused = _invite(member, unique_email())
    assert refused.status_code == 403
    assert "Only an admin or above can invite" in refused.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT count(*) FROM invitations WHERE org_id = %s", (org,)).fetchone()[0] == 1

    admin_email, admin = _join(browser, new_browser, outbox, "admin")
    owner_id = _user_id(database, owner_email)
    refused = admin.post(f"/org/members/{owner_id}/remove")
    assert refused.status_code == 403
    assert _member_roles(database, org)[owner_email] == "owner"


def _signs_in_to(person, email) -> uuid.UUID | None:
    """Signs `person` out and in again; the organization sign-in opened (None: none)."""
    person.post("/logout")
    response = person.sign_in(email)
    assert response.status_code == 302
    with person.client.session_transaction() as session:
        return uuid.UUID(session["org_id"]) if "org_id" in session else None


def test_sign_in_opens_the_organization_used_last(browser, new_browser, outbox, database):
    email = browser.sign_up()
    assert _signs_in_to(browser, email) is None  # none yet: on to creating one
    assert browser.sign_in(email).headers["Location"].endswith("/orgs/new")
    first = browser.create_org()
    assert _signs_in_to(browser, email) == first  # the only one
    second = browser.create_org()
    assert _signs_in_to(browser, email) == second  # the one made last
    browser.post(f"/orgs/{first}/switch")
    assert _signs_in_to(browser, email) == first  # the one opened last, across signing out
    # On another browser too: it is the account's, not a cookie's.
    elsewhere = new_browser()
    assert elsewhere.sign_in(email).headers["Location"].endswith("/dashboard")
    assert org_id_of(elsewhere) == first

    # A member of several, removed from the one remembered, gets the list to choose from.
    member_email, member = _join(browser, new_browser, outbox)
    assert _signs_in_to(member, member_email) == first  # joined it last
    member.create_org()
    member.create_org()
    member.post(f"/orgs/{first}/switch")
    browser.post(f"/org/members/{_user_id(database, member_email)}/remove")
    assert _signs_in_to(member, member_email) is None
    assert member.sign_in(member_email).headers["Location"].endswith("/orgs")

    # An organization deleted is forgotten, not the user.
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        assert conn.execute("DELETE FROM organizations WHERE id = %s", (first,)).rowcount == 1
        assert conn.execute("SELECT last_org_id FROM users WHERE email = %s", (email,)).fetchone() == (None,)
    assert _signs_in_to(browser, email) == second


def test_the_last_owner_cannot_leave_but_can_transfer_then_leave(browser, new_browser, outbox, database):
    owner_email = browser.sign_up()
    org = browser.create_org()
    owner_id = _user_id(database, owner_email)
    browser.post(f"/org/members/{owner_id}/remove")
    assert owner_email in _member_roles(database, org)
    member_email, _member = _join(browser, new_browser, outbox)
    assert browser.post(f"/org/transfer/{_user_id(database, member_email)}").status_code == 302
    roles = _member_roles(database, org)
    assert roles == {owner_email: "admin", member_email: "owner"}
    assert browser.post(f"/org/members/{owner_id}/remove").status_code == 302
    assert owner_email not in _member_roles(database, org)


def test_two_owners_leaving_at_once_leave_one_owner(browser, new_browser, outbox, database):
    owner_email = browser.sign_up()
    org = browser.create_org()
    other_email, other = _join(browser, new_browser, outbox, role="owner")
    leavers = [(browser, _user_id(database, owner_email)), (other, _user_id(database, other_email))]
    forms = [{"csrf_token": leaver.csrf_token()} for leaver, _ in leavers]
    answers = []

    def leave(leaver, user_id, form):
        answers.append(leaver.post(f"/org/members/{user_id}/remove", form).status_code)

    # The race made certain: while the members' rows are locked, both requests get as far as they
    # can; then both go on at once.
    with database.connect(Role.ADMIN) as holder:
        holder.execute("SELECT 1 FROM memberships WHERE org_id = %s FOR UPDATE", (org,))
        threads = [
            threading.Thread(target=leave, args=(leaver, user_id, form))
            for (leaver, user_id), form in zip(leavers, forms, strict=True)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for_lock_waiters(database, 2)
        finally:
            holder.rollback()
            for thread in threads:
                thread.join(30)
    assert answers == [302, 302]
    assert list(_member_roles(database, org).values()) == ["owner"], "one owner left, the other stayed"


def test_roles_change_only_within_the_rules(browser, new_browser, outbox, database):
    browser.sign_up()
    org = browser.create_org()
    member_email, _member = _join(browser, new_browser, outbox)
    member_id = _user_id(database, member_email)
    browser.post(f"/org/members/{member_id}/role", {"role": "admin"})
    assert _member_roles(database, org)[member_email] == "admin"
    admin_email, admin = _join(browser, new_browser, outbox, "admin")
    # An admin may not make owners.
    assert admin.post(f"/org/members/{member_id}/role", {"role": "owner"}).status_code == 403
    assert _member_roles(database, org)[member_email] == "admin"


def _user_id(database, email) -> uuid.UUID:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()[0]


def test_a_slug_with_a_trailing_newline_is_refused(browser, database):
    browser.sign_up()
    org = browser.create_org()
    response = browser.post("/org/settings", {"name": "Acme", "slug": "acme\n", "timezone": "UTC"})
    assert "lowercase letters" in response.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        assert "\n" not in conn.execute("SELECT slug FROM organizations WHERE id = %s", (org,)).fetchone()[0]


def test_removing_an_admin_revokes_their_keys_and_invitations(browser, new_browser, outbox, database):
    browser.sign_up()
    org = browser.create_org()
    admin_email, admin = _join(browser, new_browser, outbox, "admin")
    admin.post("/org/api-keys", {"target": "mine", "scopes": "admin"})
    _invite(admin, unique_email(), "admin")
    browser.post(f"/org/members/{_user_id(database, admin_email)}/remove")
    with database.connect(Role.ADMIN) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM api_keys WHERE org_id = %s AND revoked_at IS NULL", (org,)
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM invitations WHERE org_id = %s AND revoked_at IS NULL AND accepted_at IS NULL",
                (org,),
            ).fetchone()[0]
            == 0
        )
