"""API keys and the JSON API: shown once, hashed, scoped, revocable; pagination; problem documents."""

import re
import threading

from nectar.shared.config import Role
from tests.core.conftest import link_in, unique_email


def _new_key(browser, name="CI") -> str:
    page = browser.post("/org/api-keys", {"target": name, "scopes": "admin"}).get_data(as_text=True)
    match = re.search(r'<pre class="token" id="new-token">(nsk_[^<]+)</pre>', page)
    assert match, page
    return match.group(1)


def test_a_key_is_shown_once_stored_hashed_and_works_until_revoked(browser, database):
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    assert token not in browser.get("/org/api-keys").get_data(as_text=True), "the token is shown only once"
    with database.connect(Role.ADMIN) as conn:
        stored = conn.execute("SELECT key_hash, prefix FROM api_keys WHERE org_id = %s", (org,)).fetchone()
    assert token not in stored and stored[0] != token

    response = browser.api("GET", "/api/v1/organization", token=token)
    assert response.status_code == 200 and response.json["id"] == str(org)
    key_id = browser.api("GET", "/api/v1/api-keys", token=token).json["items"][0]["id"]
    assert browser.api("GET", "/api/v1/api-keys", token=token).json["items"][0]["last_used_at"] is not None
    assert browser.post(f"/org/api-keys/{key_id}/revoke").status_code == 302
    refused = browser.api("GET", "/api/v1/organization", token=token)
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"


def test_the_api_refuses_without_credentials_or_with_garbage(browser):
    anonymous = browser.api("GET", "/api/v1/organization")
    assert anonymous.status_code == 401 and anonymous.json["status"] == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    for token in ("nsk_", "nsk_nothex_abc", "nsk_" + "0" * 32 + "_guess", "sk_test_whatever"):
        assert browser.api("GET", "/api/v1/organization", token=token).status_code == 401


def test_api_keys_can_be_made_and_revoked_through_the_api(browser):
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    created = browser.api("POST", "/api/v1/api-keys", token=token, json={"name": "deploy bot"})
    assert created.status_code == 201 and created.json["token"].startswith("nsk_")
    assert browser.api("GET", "/api/v1/organization", token=created.json["token"]).status_code == 200
    bad = browser.api("POST", "/api/v1/api-keys", token=token, json={"name": ""})
    assert bad.status_code == 422 and [e["path"] for e in bad.json["errors"]] == ["/name"]
    not_json = browser.api("POST", "/api/v1/api-keys", token=token, data="name=x")
    assert not_json.status_code == 400
    assert browser.api("DELETE", f"/api/v1/api-keys/{created.json['id']}", token=token).status_code == 204
    assert browser.api("GET", "/api/v1/organization", token=created.json["token"]).status_code == 401


def test_members_are_paginated_without_counting_everything(browser, database):
    browser.sign_up()
    org = browser.create_org()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for _ in range(7):
            user = conn.execute(
                "INSERT INTO users (email) VALUES (%s) RETURNING id", (unique_email(),)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'member')", (org, user)
            )
    token = _new_key(browser)
    seen, url = [], "/api/v1/members?per_page=3"
    while url:
        page = browser.api("GET", url, token=token).json
        assert len(page["items"]) <= 3
        seen += [item["user_id"] for item in page["items"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 8
    assert browser.api("GET", "/api/v1/members?per_page=500", token=token).status_code == 400
    assert browser.api("GET", "/api/v1/members?page=zero", token=token).status_code == 400


def test_session_requests_need_csrf_for_writes_and_an_organization(browser):
    browser.sign_up()
    no_org = browser.api("GET", "/api/v1/organization")
    assert no_org.status_code == 409 and "Choose an organization" in no_org.json["detail"]
    browser.create_org()
    assert browser.api("GET", "/api/v1/organization").status_code == 200
    forged = browser.api("POST", "/api/v1/api-keys", json={"name": "x"})
    assert forged.status_code == 400, "a cookie-authenticated write without the CSRF header is refused"
    ok = browser.api(
        "POST", "/api/v1/api-keys", json={"name": "x"}, headers={"X-CSRFToken": browser.csrf_token()}
    )
    assert ok.status_code == 201


def test_invitations_through_the_api(browser, outbox):
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    email = unique_email()
    created = browser.api("POST", "/api/v1/invitations", token=token, json={"email": email, "role": "admin"})
    assert created.status_code == 201 and created.json["role"] == "admin"
    assert "/invitations/accept?token=" in link_in(outbox(email, "org.invitation")["body"])
    bad = browser.api("POST", "/api/v1/invitations", token=token, json={"email": "not-an-email"})
    assert bad.status_code == 422


def test_the_openapi_document_describes_the_api(browser):
    document = browser.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    for path in (
        "/organization",
        "/members",
        "/api-keys",
        "/api-keys/{key_id}",
        "/invitations",
        "/dashboard",
    ):
        assert path in document["paths"]


def test_members_cannot_list_invitations_and_huge_pages_are_refused(browser, new_browser, outbox):
    from tests.core.test_orgs import _join

    browser.sign_up()
    browser.create_org()
    _email, member = _join(browser, new_browser, outbox, "member")
    assert member.api("GET", "/api/v1/invitations").status_code == 403
    assert browser.api("GET", "/api/v1/members?page=100000000000000000000").status_code == 400


def _owner_with_a_workflow(browser) -> tuple[str, str]:
    """A new owner's API key, and the runs URL of a one-step workflow "w" of theirs."""
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    definition = {
        "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "transform", "expression": "`1`"}],
    }
    workflow = browser.api(
        "POST", "/api/v1/workflows", token=token, json={"name": "w", "definition": definition}
    )
    return token, f"/api/v1/workflows/{workflow.json['id']}/runs"


def test_bad_input_in_api_fields_is_a_4xx_problem_naming_where(browser):
    """Each of these once answered 500."""
    token, runs = _owner_with_a_workflow(browser)
    long_key = browser.api(
        "POST", runs, token=token, json={"input": {}}, headers={"Idempotency-Key": "k" * 201}
    )
    assert long_key.status_code == 400 and long_key.json["errors"][0]["field"] == "Idempotency-Key"
    for odd in ("k\x00", "k\ud800"):  # not text the database can hold (a test client can send them)
        refused = browser.api("POST", runs, token=token, json={"input": {}}, headers={"Idempotency-Key": odd})
        assert refused.status_code == 400 and refused.json["errors"][0]["field"] == "Idempotency-Key"
    for body, status, where in (
        ('{"name": "a\\u0000b", "definition": {}}', 400, {"path": "/name"}),
        ('{"name": "w2", "definition": {"steps": ["\\ud800"]}}', 400, {"path": "/definition/steps/0"}),
        ('{"name": NaN}', 400, {"field": "body"}),
        ('{"name": ' + "[" * 1000 + "]" * 1000 + "}", 400, {"field": "body"}),
        ('{"name": 7, "definition": {}}', 422, {"path": "/name"}),
        (
            '{"name": "w3", "description": "' + "d" * 2001 + '", "definition": {}}',
            422,
            {"path": "/description"},
        ),
    ):
        refused = browser.api(
            "POST", "/api/v1/workflows", token=token, data=body, content_type="application/json"
        )
        assert refused.status_code == status and refused.mimetype == "application/problem+json", body[:60]
        assert where.items() <= refused.json["errors"][0].items(), refused.json
    huge = browser.api("POST", runs, token=token, json={"input": {}, "version": 10**30})
    assert huge.status_code == 422 and huge.json["errors"][0]["path"] == "/version"
    names = [w["name"] for w in browser.api("GET", "/api/v1/workflows", token=token).json["items"]]
    assert names == ["w"]  # nothing refused was stored


def test_the_same_idempotency_key_sent_at_once_starts_one_run_and_no_request_fails(browser):
    token, runs = _owner_with_a_workflow(browser)
    answers: list[tuple[int, str]] = []
    start = threading.Barrier(8)

    def send() -> None:
        client = browser.app.test_client()
        start.wait()
        answer = client.post(
            runs,
            json={"input": {"a": 1}},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "race"},
        )
        answers.append((answer.status_code, answer.json["id"]))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(status for status, _ in answers) == [200] * 7 + [202], answers
    assert len({run_id for _, run_id in answers}) == 1


def test_an_idempotency_key_names_one_request(browser):
    """Sent again with the same input, a key gets the first run back; with another input, a 422
    that says so (replaying the first run would hide that this request never ran)."""
    token, runs = _owner_with_a_workflow(browser)
    first = browser.api(
        "POST", runs, token=token, json={"input": {"a": 1}}, headers={"Idempotency-Key": "once"}
    )
    again = browser.api(
        "POST", runs, token=token, json={"input": {"a": 1}}, headers={"Idempotency-Key": "once"}
    )
    assert first.status_code == 202 and again.status_code == 200 and again.json["id"] == first.json["id"]
    big = {"input": {"n": 1e23}}  # stored as the number 100000000000000000000000: the same request
    for status in (202, 200):
        answer = browser.api("POST", runs, token=token, json=big, headers={"Idempotency-Key": "big"})
        assert answer.status_code == status, answer.json
    other = browser.api(
        "POST", runs, token=token, json={"input": {"a": 2}}, headers={"Idempotency-Key": "once"}
    )
    assert other.status_code == 422 and other.json["errors"][0]["field"] == "Idempotency-Key", other.json
    workflow_id = runs.split("/")[4]  # /api/v1/workflows/<id>/runs
    listed = browser.api("GET", f"/api/v1/runs?workflow_id={workflow_id}", token=token)
    assert len(listed.json["items"]) == 2 and first.json["id"] in [run["id"] for run in listed.json["items"]]
