"""Mail an organization sends, from core's workflow step to a real SMTP server through marketing's
outbox sender: the organization named in the sender, RFC 8058 unsubscribe headers, and a one-click
unsubscribe (core's endpoint, as a mail client calls it) after which nothing more is delivered."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from nectar.marketing.email.outbox import flush as send_outbox
from nectar.shared.config import Role, load_smtp_settings
from tests.core.conftest import Browser, core_app, link_in, outbox, unique_email  # noqa: F401
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.marketing.mailserver import MailServer


@pytest.fixture
def deliver(database):
    """Runs marketing's sender once against a real SMTP server on loopback; returns the server."""
    server = MailServer().start()
    engine = create_engine(database.url(Role.MARKETING))

    def flush() -> MailServer:
        send_outbox(engine, load_smtp_settings(server.environ()))
        return server

    yield flush
    server.stop()
    engine.dispose()


def test_delivered_workflow_mail_names_its_organization_and_unsubscribes_in_one_click(
    core_app, outbox, deliver  # noqa: F811 - fixtures imported above
):
    owner = Browser(core_app)
    owner.sign_up()
    owner.create_org("Acme, Inc.")
    token = _new_key(owner)
    mailing = {
        "trigger": {"type": "http"},
        "steps": [
            {
                "id": "mail",
                "type": "send_email",
                "to": "{{ trigger.body.to }}",
                "subject": "Hi",
                "body": "Hello!",
            }
        ],
    }
    url = _endpoint(owner, token, _workflow(owner, token, mailing), path="/mail")["url"]
    person = unique_email()
    assert core_app.test_client().post(url, json={"to": person}).status_code == 200

    [received] = deliver().to(person)
    sender = received.message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Acme, Inc. via Nectar Studio", "hello@nectar.test")
    assert received.message["Subject"] == "[Nectar Studio · “Acme, Inc.”] Hi"
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "X-Nectar-Sender-Name" not in received.message, "an instruction to the sender, never sent"
    text = received.text()
    assert text.startswith("This message comes from the organization “Acme, Inc.”")
    assert "Hello!" in text

    unsubscribe = received.message["List-Unsubscribe"].strip("<>")
    assert unsubscribe in text
    # A mail client's one-click POST: no cookie, no CSRF token.
    done = core_app.test_client().post(
        link_in(unsubscribe),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert done.status_code == 200

    again = core_app.test_client().post(url, json={"to": person})
    assert again.status_code == 200 and again.json["output"]["queued"] is False
    assert len(deliver().to(person)) == 1, "nothing more reaches the address"


def test_a_delivered_invitation_is_sent_as_the_organizations(core_app, outbox, deliver):  # noqa: F811
    owner = Browser(core_app)
    owner.sign_up()
    owner.create_org("Acme Robots")
    token = _new_key(owner)
    person = unique_email()
    assert owner.api("POST", "/api/v1/invitations", token=token, json={"email": person}).status_code == 201

    [received] = deliver().to(person)
    assert received.message["From"].addresses[0].display_name == "Acme Robots via Nectar Studio"
    assert received.message["Subject"] == "Nectar Studio: an invitation to join “Acme Robots”"
    assert "/mail/unsubscribe/" in received.message["List-Unsubscribe"]
