"""Email through a real SMTP server on loopback: what visitors and subscribers receive, campaigns
in batches, and the outbox's promises (retry with backoff, nothing lost, nothing twice, permanent
refusals recorded)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from nectar.marketing.email import outbox
from nectar.marketing.newsletter import campaigns
from nectar.shared.config import load_smtp_settings
from nectar.shared.mail import Email, queue_email
from tests.marketing.mailserver import MailServer

pytestmark = pytest.mark.usefixtures("empty_outbox")


def _email(tag) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def _queue(engine, addresses, category="test"):
    """Queues one message per address, each in its own transaction, so they are sent in this order
    (the sender takes the oldest first; rows of one transaction share its timestamp)."""
    ids = []
    for address in addresses:
        with Session(engine) as session, session.begin():
            email = Email(to=address, subject=f"Hello {address}", body_text="Plain body", category=category)
            ids.append(queue_email(session, email))
    return ids


def _rows(admin_db, ids):
    return {
        row[0]: row[1:]
        for row in admin_db.execute(
            "SELECT id, status, attempts, last_error, next_attempt_at, sent_at FROM email_outbox WHERE id = ANY(%s)",
            (list(ids),),
        ).fetchall()
    }


def _path(url, marketing_app):
    return url[len(marketing_app.config["NECTAR_SETTINGS"].public_url) :]


def test_contact_confirmation_arrives(browser, marketing_engine, smtp, mail_server, admin_db):
    email = _email("contact")
    browser.post("/contact", {"name": "Ada", "email": email, "message": "Hello there"})
    result = outbox.flush(marketing_engine, smtp)
    assert result.sent >= 1
    [received] = mail_server.to(email)
    assert received.message["Subject"] == "We received your message - Nectar Studio"
    assert received.message["From"] == "Nectar Studio <hello@nectar.test>"
    row_id, status, sent_at = admin_db.execute(
        "SELECT id, status, sent_at FROM email_outbox WHERE to_address = %s", (email,)
    ).fetchone()
    assert status == "sent" and sent_at is not None
    assert received.message["Message-ID"] == f"<{row_id}@nectar.test>"
    assert received.text().startswith("Hello,\n\nThanks for getting in touch")


def test_every_message_has_a_text_and_an_html_part(marketing_engine, smtp, mail_server, admin_db):
    email = _email("parts")
    link = "https://core.example/reset-password?token=abc&next=1"
    with Session(marketing_engine) as session, session.begin():
        queue_email(
            session,
            Email(
                to=email,
                subject="Two parts",
                body_text=f"Hello <friend> & co,\n\nChoose your password here:\n\n{link}.\n\nThanks",
                category="test",
            ),
        )
    # A message queued before every Email had its HTML part gets one when it is sent.
    old = _email("old")
    admin_db.execute(
        "INSERT INTO email_outbox (to_address, subject, body_text, category) VALUES (%s, 'Old', 'See https://a.example/x', 'test')",
        (old,),
    )
    outbox.flush(marketing_engine, smtp)
    [received] = mail_server.to(email)
    assert received.message.get_content_type() == "multipart/alternative"
    assert received.text().startswith("Hello <friend> & co,")
    html = received.html()
    assert "<p>Hello &lt;friend&gt; &amp; co,</p>" in html
    assert f'<a href="{link.replace("&", "&amp;")}">' in html and "</a>.</p>" in html
    [received_old] = mail_server.to(old)
    assert '<a href="https://a.example/x">' in received_old.html()


def test_newsletter_confirmation_then_welcome_then_one_click_unsubscribe(
    browser, marketing_app, marketing_engine, smtp, mail_server, admin_db
):
    email = _email("subscriber")
    browser.post("/newsletter", {"email": email})
    outbox.flush(marketing_engine, smtp)
    [confirmation] = mail_server.to(email)
    link = re.search(r"(http\S+/newsletter/confirm/\S+)", confirmation.text()).group(1)
    assert "List-Unsubscribe" not in confirmation.message  # not subscribed yet

    browser.get(_path(link, marketing_app))
    outbox.flush(marketing_engine, smtp)
    assert len(mail_server.to(email)) == 1  # opening the link sent nothing and confirmed nothing

    browser.post(_path(link, marketing_app))
    outbox.flush(marketing_engine, smtp)
    confirmation_again, welcome = mail_server.to(email)
    assert confirmation_again is confirmation
    assert welcome.message["Subject"] == "Welcome to the Nectar Studio newsletter"
    unsubscribe = welcome.message["List-Unsubscribe"]
    assert re.fullmatch(r"<http\S+/newsletter/unsubscribe/\S+>", unsubscribe)
    assert welcome.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe.strip("<>") in welcome.text() and unsubscribe.strip("<>") in welcome.html()

    # What a mail client's unsubscribe button does (RFC 8058): a bare POST, no cookies.
    response = marketing_app.test_client(use_cookies=False).post(
        _path(unsubscribe.strip("<>"), marketing_app), data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    status = admin_db.execute(
        "SELECT status FROM newsletter_subscribers WHERE email = %s", (email,)
    ).fetchone()[0]
    assert status == "unsubscribed"


def _subscribers(admin_db, status, count, tag):
    addresses = [_email(f"{tag}-{status}") for _ in range(count)]
    for address in addresses:
        admin_db.execute(
            "INSERT INTO newsletter_subscribers (email, status, confirmed_at) VALUES (%s, %s, now())",
            (address, status),
        )
    return addresses


def _schedule(admin_db, subject, body, template=None, when="now()"):
    template_id = None
    if template:
        template_id = admin_db.execute(
            "INSERT INTO email_templates (key, name, subject, body_markdown) VALUES (%s, 'Frame', 'x', %s) RETURNING id",
            (f"frame-{uuid.uuid4().hex[:8]}", template),
        ).fetchone()[0]
    return admin_db.execute(
        f"INSERT INTO campaigns (name, subject, body_markdown, template_id, status, scheduled_at) "  # noqa: S608
        f"VALUES ('Spring', %s, %s, %s, 'scheduled', {when}) RETURNING id",
        (subject, body, template_id),
    ).fetchone()[0]


def test_a_campaign_reaches_each_confirmed_subscriber_exactly_once(
    marketing_engine, links, smtp, mail_server, admin_db
):
    confirmed = _subscribers(admin_db, "confirmed", 12, "campaign")
    pending = _subscribers(admin_db, "pending", 2, "campaign")
    unsubscribed = _subscribers(admin_db, "unsubscribed", 2, "campaign")
    everyone_confirmed = admin_db.execute(
        "SELECT count(*) FROM newsletter_subscribers WHERE status = 'confirmed'"
    ).fetchone()[0]
    later = _schedule(admin_db, "Not yet", "Later", when="now() + interval '1 day'")
    campaign = _schedule(
        admin_db,
        "Spring news",
        "## What is new\n\nEndpoints got **faster**.",
        template="Hi!\n\n{{ content }}\n\nThe team",
    )

    finished = campaigns.dispatch_due(marketing_engine, links, batch_size=5)
    assert campaign in finished and later not in finished
    status, started, done, sent_count = admin_db.execute(
        "SELECT status, started_at, finished_at, sent_count FROM campaigns WHERE id = %s", (campaign,)
    ).fetchone()
    assert status == "sent" and started <= done and sent_count == everyone_confirmed
    assert (
        admin_db.execute("SELECT status FROM campaigns WHERE id = %s", (later,)).fetchone()[0] == "scheduled"
    )

    while outbox.flush(marketing_engine, smtp).handled:
        pass
    for address in confirmed:
        [received] = mail_server.to(address)
        assert received.message["Subject"] == "Spring news"
        url = received.message["List-Unsubscribe"].strip("<>")
        assert "/newsletter/unsubscribe/" in url
        assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert received.text().startswith("Hi!\n\n## What is new")
        assert "<h2>What is new</h2>" in received.html() and "<strong>faster</strong>" in received.html()
        assert f'href="{url}"' in received.html() and f"Unsubscribe: {url}" in received.text()
    for address in pending + unsubscribed:
        assert mail_server.to(address) == []

    # Running it again (a worker restarted with the campaign still 'sending') doubles nothing.
    admin_db.execute("UPDATE campaigns SET status = 'sending' WHERE id = %s", (campaign,))
    campaigns.dispatch_due(marketing_engine, links, batch_size=5)
    assert outbox.flush(marketing_engine, smtp).handled == 0
    assert all(len(mail_server.to(address)) == 1 for address in confirmed)


def test_a_worker_dying_mid_campaign_loses_no_one_and_doubles_no_one(
    marketing_engine, links, smtp, mail_server, admin_db
):
    confirmed = _subscribers(admin_db, "confirmed", 11, "crash")
    campaign = _schedule(admin_db, "Crash test", "Body")
    batches = []

    def die_on_second_batch(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO email_outbox") and "campaign_id" in statement:
            batches.append(1)
            if len(batches) == 2:
                raise RuntimeError("worker killed")

    event.listen(marketing_engine, "before_cursor_execute", die_on_second_batch)
    try:
        with pytest.raises(RuntimeError):
            campaigns.dispatch_due(marketing_engine, links, batch_size=4)
    finally:
        event.remove(marketing_engine, "before_cursor_execute", die_on_second_batch)
    status, queued = admin_db.execute(
        "SELECT status, (SELECT count(*) FROM email_outbox WHERE campaign_id = c.id) FROM campaigns c WHERE id = %s",
        (campaign,),
    ).fetchone()
    assert status == "sending" and queued == 4  # the first batch is committed, the second rolled back

    outbox.flush(marketing_engine, smtp)  # some go out before the campaign resumes
    campaigns.dispatch_due(marketing_engine, links, batch_size=4)
    while outbox.flush(marketing_engine, smtp).handled:
        pass
    assert admin_db.execute("SELECT status FROM campaigns WHERE id = %s", (campaign,)).fetchone()[0] == "sent"
    for address in confirmed:
        assert [r.message["Subject"] for r in mail_server.to(address)] == ["Crash test"]


def test_a_cancelled_campaign_stops_before_its_next_batch(marketing_engine, links, admin_db):
    _subscribers(admin_db, "confirmed", 3, "cancel")
    campaign = _schedule(admin_db, "Cancelled", "Body")
    admin_db.execute("UPDATE campaigns SET status = 'cancelled' WHERE id = %s", (campaign,))
    assert campaign not in campaigns.dispatch_due(marketing_engine, links)
    assert (
        admin_db.execute("SELECT count(*) FROM email_outbox WHERE campaign_id = %s", (campaign,)).fetchone()[
            0
        ]
        == 0
    )


def test_an_smtp_outage_of_hours_costs_no_message_an_attempt_and_all_go_out_after(marketing_engine, admin_db):
    server = MailServer()  # its port is chosen, nothing listens yet
    smtp = load_smtp_settings(server.environ())
    addresses = [_email("outage") for _ in range(7)]
    ids = _queue(marketing_engine, addresses)
    before = _rows(admin_db, ids)
    now = datetime.now(UTC)

    # Twelve hours down, a flush every ten minutes: the server is tried, no row is touched.
    for minutes in range(0, 12 * 60, 10):
        down = outbox.flush(marketing_engine, smtp, now=now + timedelta(minutes=minutes))
        assert down.handled == 0 and "ConnectionRefused" in down.unavailable
    assert _rows(admin_db, ids) == before
    assert all(r[0] == "pending" and r[1] == 0 and r[2] is None for r in before.values())

    server.start()
    try:
        up = outbox.flush(marketing_engine, smtp, now=now + timedelta(hours=12))
        assert (up.sent, up.unavailable) == (7, None)
        assert outbox.flush(marketing_engine, smtp, now=now + timedelta(days=1)).handled == 0
        for address in addresses:
            assert len(server.to(address)) == 1
        assert all(r[0] == "sent" and r[1] == 1 and r[4] is not None for r in _rows(admin_db, ids).values())
    finally:
        server.stop()


def test_one_address_the_server_cannot_take_fails_alone_and_blocks_no_one(marketing_engine, admin_db):
    # A server without SMTPUTF8 cannot take an internationalised address; it is first in the queue.
    server = MailServer(smtputf8=False).start()
    try:
        smtp = load_smtp_settings(server.environ())
        bad = f"üser-{uuid.uuid4().hex[:8]}@example.com"
        good = [_email("after-bad") for _ in range(3)]
        ids = dict(zip([bad, *good], _queue(marketing_engine, [bad, *good]), strict=True))

        result = outbox.flush(marketing_engine, smtp)

        assert (result.sent, result.retrying, result.failed) == (3, 0, 1)
        rows = _rows(admin_db, ids.values())
        status, attempts, error, _next, sent_at = rows[ids[bad]]
        assert status == "failed" and attempts == 1 and sent_at is None and "SMTPUTF8" in error
        assert all(rows[ids[address]][:2] == ("sent", 1) for address in good)
        assert all(len(server.to(address)) == 1 for address in good) and server.to(bad) == []
        assert outbox.flush(marketing_engine, smtp, now=datetime.now(UTC) + timedelta(days=1)).handled == 0
    finally:
        server.stop()


def test_a_connection_lost_mid_batch_charges_only_the_message_being_sent(marketing_engine, admin_db):
    server = MailServer().start()
    smtp = load_smtp_settings(server.environ())
    first, dropped, *rest = (_email("drop") for _ in range(4))
    ids = dict(zip([first, dropped, *rest], _queue(marketing_engine, [first, dropped, *rest]), strict=True))
    server.crash_when_sending_to(dropped)  # the server goes down while the second one is being sent
    now = datetime.now(UTC)

    result = outbox.flush(marketing_engine, smtp, now=now)

    assert (result.sent, result.retrying) == (1, 1) and "ConnectionRefused" in result.unavailable
    rows = _rows(admin_db, ids.values())
    assert rows[ids[first]][:2] == ("sent", 1)
    assert rows[ids[dropped]][:2] == ("pending", 1) and rows[ids[dropped]][3] >= now + outbox.backoff(1)
    for address in rest:  # never tried: released, no attempt used
        status, attempts, error, next_attempt, _sent = rows[ids[address]]
        assert (status, attempts) == ("pending", 0) and next_attempt <= now and "ConnectionRefused" in error

    server.stop()
    server.start()
    try:
        assert outbox.flush(marketing_engine, smtp, now=now + timedelta(minutes=5)).sent == 3
        assert all(len(server.to(address)) == 1 for address in [dropped, *rest])
    finally:
        server.stop()


def test_a_permanent_refusal_fails_that_message_only_and_records_why(
    marketing_engine, smtp, mail_server, admin_db
):
    refused, fine = _email("refused"), _email("fine")
    mail_server.refuse(refused, "550 5.1.1 <refused>: Recipient address rejected")
    ids = dict(zip([refused, fine], _queue(marketing_engine, [refused, fine]), strict=True))
    result = outbox.flush(marketing_engine, smtp)
    assert (result.sent, result.failed) == (1, 1)
    rows = _rows(admin_db, ids.values())
    status, attempts, error, _next, sent_at = rows[ids[refused]]
    assert status == "failed" and attempts == 1 and sent_at is None
    assert "550" in error and "Recipient address rejected" in error
    assert rows[ids[fine]][0] == "sent" and len(mail_server.to(fine)) == 1

    # A staff retry in admin (status pending, next attempt now) makes the worker try once more.
    del mail_server.handler.refuse[refused]
    admin_db.execute(
        "UPDATE email_outbox SET status = 'pending', next_attempt_at = now() WHERE id = %s", (ids[refused],)
    )
    assert outbox.flush(marketing_engine, smtp).sent == 1
    assert _rows(admin_db, [ids[refused]])[ids[refused]][0] == "sent"
    assert len(mail_server.to(refused)) == 1


def test_a_temporary_refusal_is_retried(marketing_engine, smtp, mail_server, admin_db):
    address = _email("greylisted")
    mail_server.refuse(address, "450 4.2.0 Greylisted, try again later")
    [row_id] = _queue(marketing_engine, [address])
    now = datetime.now(UTC)
    assert outbox.flush(marketing_engine, smtp, now=now).retrying == 1
    status, attempts, error, _next, _sent = _rows(admin_db, [row_id])[row_id]
    assert status == "pending" and attempts == 1 and "450" in error
    del mail_server.handler.refuse[address]
    assert outbox.flush(marketing_engine, smtp, now=now + timedelta(hours=1)).sent == 1
    assert len(mail_server.to(address)) == 1


def test_after_the_last_attempt_a_message_is_failed_not_lost(marketing_engine, smtp, mail_server, admin_db):
    address = _email("doomed")
    mail_server.refuse(address, "450 4.2.0 Mailbox busy, try again later")
    [row_id] = _queue(marketing_engine, [address])
    admin_db.execute("UPDATE email_outbox SET attempts = %s WHERE id = %s", (outbox.MAX_ATTEMPTS - 1, row_id))
    result = outbox.flush(marketing_engine, smtp)
    assert result.failed == 1
    status, attempts, error, _next, _sent = _rows(admin_db, [row_id])[row_id]
    assert status == "failed" and attempts == outbox.MAX_ATTEMPTS and "450" in error


def test_a_message_left_sending_by_a_dead_worker_is_sent_again(marketing_engine, smtp, mail_server, admin_db):
    stuck, busy = _email("stuck"), _email("busy")
    ids = dict(zip([stuck, busy], _queue(marketing_engine, [stuck, busy]), strict=True))
    # One worker claimed both and died; one lease has run out, the other is still held.
    admin_db.execute(
        "UPDATE email_outbox SET status = 'sending', next_attempt_at = now() - interval '1 minute' WHERE id = %s",
        (ids[stuck],),
    )
    admin_db.execute(
        "UPDATE email_outbox SET status = 'sending', next_attempt_at = now() + interval '4 minutes' WHERE id = %s",
        (ids[busy],),
    )
    assert outbox.flush(marketing_engine, smtp).sent == 1
    rows = _rows(admin_db, ids.values())
    assert rows[ids[stuck]][0] == "sent" and rows[ids[stuck]][1] == 2  # the lost attempt counts
    assert rows[ids[busy]][0] == "sending" and mail_server.to(busy) == []
    assert len(mail_server.to(stuck)) == 1


def test_without_smtp_mail_stays_in_the_outbox(marketing_engine, admin_db):
    ids = _queue(marketing_engine, [_email("offline")])
    result = outbox.flush(marketing_engine, load_smtp_settings({}))
    assert result.handled == 0
    assert all(r[0] == "pending" and r[1] == 0 for r in _rows(admin_db, ids).values())


def test_stored_headers_are_applied_but_cannot_replace_the_senders(marketing_engine, smtp, mail_server):
    address = _email("headers")
    with Session(marketing_engine) as session, session.begin():
        queue_email(
            session,
            Email(to=address, subject="S", body_text="B", category="test",
                  headers={"X-Campaign": "spring", "From": "evil@example.com", "Reply-To": "sales@nectar.test"}),
        )  # fmt: skip
    outbox.flush(marketing_engine, smtp)
    [received] = mail_server.to(address)
    assert received.message["X-Campaign"] == "spring" and received.message["Reply-To"] == "sales@nectar.test"
    assert received.message["From"] == "Nectar Studio <hello@nectar.test>"


# aiosmtpd warns, on each connection, that AUTH without TLS is unsafe: on loopback that is the point.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_is_used_and_a_refused_login_costs_no_message_an_attempt(marketing_engine, admin_db):
    server = MailServer(login=("mailer", "right-password")).start()
    try:
        wrong = load_smtp_settings({**server.environ(), "SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "wrong"})
        addresses = [_email("auth") for _ in range(3)]
        ids = _queue(marketing_engine, addresses)
        now = datetime.now(UTC)
        for hours in range(6):  # refused for hours: every row stays as it was
            result = outbox.flush(marketing_engine, wrong, now=now + timedelta(hours=hours))
            assert result.handled == 0 and "535" in result.unavailable
        assert all(r[:3] == ("pending", 0, None) for r in _rows(admin_db, ids).values())

        # The short names SMTP_USER and SMTP_PASS work too.
        right = load_smtp_settings({**server.environ(), "SMTP_USER": "mailer", "SMTP_PASS": "right-password"})
        assert outbox.flush(marketing_engine, right, now=now + timedelta(hours=6)).sent == 3
        assert all(len(server.to(address)) == 1 for address in addresses)
    finally:
        server.stop()


def test_a_refused_sender_address_stops_the_flush_and_costs_no_message_an_attempt(marketing_engine, admin_db):
    server = MailServer().start()
    try:
        refused_sender = {**server.environ(), "MAIL_FROM": "Nectar <nobody@not-allowed.test>"}

        async def refuse_our_sender(server_, session, envelope, address, mail_options):
            if address == "nobody@not-allowed.test":
                return "553 5.7.1 Sender address rejected: not owned by you"
            envelope.mail_from = address
            return "250 OK"

        server.handler.handle_MAIL = refuse_our_sender
        ids = _queue(marketing_engine, [_email("sender") for _ in range(3)])
        result = outbox.flush(marketing_engine, load_smtp_settings(refused_sender))
        assert result.handled == 0 and "553" in result.unavailable
        rows = _rows(admin_db, ids).values()
        assert all(r[0] == "pending" and r[1] == 0 and "553" in r[2] for r in rows)
        # The setting is fixed: everything goes out.
        assert outbox.flush(marketing_engine, load_smtp_settings(server.environ())).sent == 3
    finally:
        server.stop()


def test_each_message_renews_its_lease_just_before_it_is_sent(marketing_engine, smtp, mail_server, admin_db):
    addresses = [_email("lease") for _ in range(3)]
    ids = dict(zip(addresses, _queue(marketing_engine, addresses), strict=True))
    leases = {}

    def lease_of(address):
        return admin_db.execute(
            "SELECT next_attempt_at FROM email_outbox WHERE id = %s", (ids[address],)
        ).fetchone()[0]

    def probe(address):
        if address == addresses[0]:  # the batch is claimed, the first message is being sent
            leases["last, when claimed"] = lease_of(addresses[2])
        if address == addresses[2]:
            leases["last, when sent"] = lease_of(addresses[2])

    mail_server.handler.on_recipient = probe
    assert outbox.flush(marketing_engine, smtp).sent == 3
    assert leases["last, when sent"] > leases["last, when claimed"]


def test_a_message_another_worker_took_over_is_not_sent_twice(marketing_engine, smtp, mail_server, admin_db):
    addresses = [_email("takeover") for _ in range(3)]
    ids = dict(zip(addresses, _queue(marketing_engine, addresses), strict=True))
    taken = []

    def another_worker_claims_one_still_waiting(address):
        # While the batch's first message is being sent (whichever it is), another worker claims one
        # of the others with its own lease, as if this worker's lease on it had run out.
        if not taken:
            taken.append(next(other for other in addresses if other != address))
            admin_db.execute(
                "UPDATE email_outbox SET next_attempt_at = now() + interval '15 minutes' WHERE id = %s",
                (ids[taken[0]],),
            )

    mail_server.handler.on_recipient = another_worker_claims_one_still_waiting
    result = outbox.flush(marketing_engine, smtp)
    assert result.sent == 2 and mail_server.to(taken[0]) == []
    assert all(len(mail_server.to(address)) == 1 for address in addresses if address != taken[0])
    assert _rows(admin_db, [ids[taken[0]]])[ids[taken[0]]][0] == "sending"  # the other worker's to finish
