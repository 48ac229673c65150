"""The outbox sender: claims due messages, sends them over SMTP, records what happened.

The SMTP server is connected to (and logged in to) before anything is claimed: while it is down or
refuses our login, rows are left exactly as they are, so an outage of any length costs no message
an attempt. Only a failure of one message (a refused recipient, an address the server cannot
take, a connection lost while that message was being sent) counts against it.

A message is claimed in a short transaction (FOR UPDATE SKIP LOCKED, so workers never take the same
row) and marked 'sending' with a lease: while it is sending, next_attempt_at is when the lease
ends. Each message's lease is renewed just before it is sent, and only if this worker still holds
it, so a slow server cannot make another worker send it too. It is then sent outside any
transaction and marked 'sent', or put back to 'pending' with attempts + 1, the error and an
exponential backoff, or 'failed' after MAX_ATTEMPTS or a permanent refusal. A row whose lease
ended is claimed again; so is one whose sending worker (a procrastinate worker, named on the row)
has been silent for STALLED_AFTER_SECONDS, the same sign of death that hands its jobs to others:
a worker killed mid-send costs its message seconds, not the lease. The SMTP server had not
answered the message (or the row would say so), so sending it again is the only way it arrives;
a server that did take it before the worker died gets it twice, with the same Message-ID.

Every time is computed from `now`, a parameter, so tests can move the clock.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import Engine, text

from nectar.marketing.email.smtp import SmtpConnection, SmtpSettings, build_message
from nectar.shared.jobs import STALLED_AFTER_SECONDS

# 30 s, 1, 2, 4 ... 64 min, then 2 h: the tenth failure of one message, about four hours in, is final.
MAX_ATTEMPTS = 10
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=2)
# Small batches, each message's lease renewed before it is sent: the lease must only outlast one
# message's SMTP exchange (a few commands, each up to the 30 s timeout), and what is left of a
# batch when the server goes away is little.
LEASE = timedelta(minutes=15)
BATCH = 5
log = logging.getLogger(__name__)

# Due: pending and its time has come, or sending and abandoned (its lease ended, or its worker's
# heartbeat is older than a live worker's can be). Heartbeats are the database's clock, so is that test.
_DUE = (
    "((status = 'pending' OR status = 'sending') AND next_attempt_at <= :now) "
    "OR (status = 'sending' AND sending_worker IS NOT NULL AND NOT EXISTS ("
    "  SELECT FROM procrastinate_workers w WHERE w.id = sending_worker"
    f"  AND w.last_heartbeat > now() - make_interval(secs => {STALLED_AFTER_SECONDS})))"
)
ANY_DUE = text(f"SELECT 1 FROM email_outbox WHERE {_DUE} LIMIT 1")  # noqa: S608 - constants only
CLAIM = text(
    "WITH due AS ("  # noqa: S608 - constants only
    f"  SELECT id FROM email_outbox WHERE {_DUE}"
    "  ORDER BY next_attempt_at, created_at LIMIT :limit FOR UPDATE SKIP LOCKED"
    ") "
    "UPDATE email_outbox o SET status = 'sending', next_attempt_at = :lease_end, sending_worker = :worker, "
    # A row still 'sending' here was abandoned by a worker that died: that attempt counts.
    "  attempts = o.attempts + CASE WHEN o.status = 'sending' THEN 1 ELSE 0 END, "
    "  last_error = CASE WHEN o.status = 'sending' THEN 'the worker sending it stopped; sending again' "
    "  ELSE o.last_error END "
    "FROM due WHERE o.id = due.id "
    "RETURNING o.id, o.to_address, o.subject, o.body_text, o.body_html, o.headers, o.attempts"
)
# The lease end doubles as this worker's claim ticket: another worker that took the row over after
# the lease ran out wrote its own, so this renewal finds nothing and the message is left to it.
RENEW_LEASE = text(
    "UPDATE email_outbox SET next_attempt_at = :lease_end "
    "WHERE id = :id AND status = 'sending' AND next_attempt_at = :held RETURNING id"
)
MARK_SENT = text(
    "UPDATE email_outbox SET status = 'sent', sent_at = :now, attempts = attempts + 1, last_error = NULL "
    "WHERE id = :id AND status = 'sending'"
)
MARK_RETRY = text(
    "UPDATE email_outbox SET status = CASE WHEN attempts + 1 >= :max_attempts THEN 'failed' ELSE 'pending' END, "
    "attempts = attempts + 1, last_error = :error, next_attempt_at = :next_attempt_at "
    "WHERE id = :id AND status = 'sending'"
)
MARK_FAILED = text(
    "UPDATE email_outbox SET status = 'failed', attempts = attempts + 1, last_error = :error "
    "WHERE id = :id AND status = 'sending'"
)
# Claimed but not tried (the server went away first): back to the queue as they were, no attempt used.
RELEASE = text(
    "UPDATE email_outbox SET status = 'pending', next_attempt_at = :now, last_error = :error "
    "WHERE id = :id AND status = 'sending' AND next_attempt_at = :held"
)


@dataclass
class FlushResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    # Why the SMTP server could not be used (nothing was claimed, no attempt was used); None if it could.
    unavailable: str | None = None

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed


class Verdict(Enum):
    PERMANENT = "this message can never be delivered as it is"
    RETRY = "this message was refused for now"
    CONNECTION_LOST = "the connection ended while this message was being sent"
    SENDER_REFUSED = "the server refuses our sender address: a setting, not this message"


def backoff(attempts_so_far: int) -> timedelta:
    """Wait before the next try after `attempts_so_far` failed ones: 30 s, 1 min, 2 min, ... at most 2 h."""
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts_so_far - 1)))


def judge(error: BaseException) -> Verdict:
    """What a failure to send one message means. All but SENDER_REFUSED are about the message alone:
    the next one is tried on the same session (or a new one, after CONNECTION_LOST)."""
    if isinstance(error, smtplib.SMTPNotSupportedError | UnicodeError):
        # An address that needs SMTPUTF8 on a server without it: no retry will change that.
        return Verdict.PERMANENT
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return Verdict.PERMANENT if codes and all(code >= 500 for code in codes) else Verdict.RETRY
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return Verdict.CONNECTION_LOST
    if isinstance(error, smtplib.SMTPSenderRefused):
        # MAIL FROM carries the message's size: 552 refuses this message; anything else refuses
        # MAIL_FROM itself, which every message shares.
        return Verdict.PERMANENT if error.smtp_code == 552 else Verdict.SENDER_REFUSED
    if isinstance(error, smtplib.SMTPResponseException):
        # 421 is the server closing the session, not an answer about this message.
        if error.smtp_code == 421:
            return Verdict.CONNECTION_LOST
        return Verdict.PERMANENT if error.smtp_code >= 500 else Verdict.RETRY
    if isinstance(error, OSError):
        return Verdict.CONNECTION_LOST
    return Verdict.RETRY


def describe(error: BaseException) -> str:
    """The reason kept in last_error, for staff."""
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return (
            "the address needs internationalised email (SMTPUTF8), which the SMTP server does not offer: "
            f"{error}"
        )[:1000]
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        detail = "; ".join(f"{code} {_reason(reason)}" for code, reason in error.recipients.values())
        return f"recipient refused: {detail}"[:1000]
    if isinstance(error, smtplib.SMTPResponseException):
        return f"SMTP {error.smtp_code} {_reason(error.smtp_error)}"[:1000]
    return f"{type(error).__name__}: {error}"[:1000]


def _reason(raw) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def flush(
    engine: Engine,
    smtp: SmtpSettings,
    *,
    now: datetime | None = None,
    batch: int = BATCH,
    max_messages: int = 1000,
    worker_id: int | None = None,
) -> FlushResult:
    """Sends due messages until none is due or `max_messages` were handled. Without an SMTP host it
    sends nothing: mail stays pending, visible in admin. When the server cannot be reached or
    refuses the login, nothing is claimed and `unavailable` says why. `worker_id` is the
    procrastinate worker running this (its messages are taken over once it stops beating);
    `now` fixes the clock (for tests)."""
    result = FlushResult()
    if not smtp.configured:
        return result
    clock = (lambda: now) if now else (lambda: datetime.now(UTC))
    with engine.connect() as conn:
        if conn.execute(ANY_DUE, {"now": clock()}).first() is None:
            return result  # no SMTP session just to find nothing to send
    with SmtpConnection(smtp) as connection:
        try:
            connection.open()
        except (smtplib.SMTPException, OSError) as error:
            result.unavailable = describe(error)
            log.warning(
                "outbox: the SMTP server %s:%s cannot be used (%s); mail waits, no attempt counted",
                smtp.host,
                smtp.port,
                result.unavailable,
            )
            return result
        while result.handled < max_messages:
            claimed_at = clock()
            lease_end = claimed_at + LEASE
            with engine.begin() as conn:
                rows = conn.execute(
                    CLAIM,
                    {
                        "now": claimed_at,
                        "lease_end": lease_end,
                        "limit": min(batch, max_messages - result.handled),
                        "worker": worker_id,
                    },
                ).all()
            if not rows:
                break
            if not _send_batch(engine, connection, smtp, rows, lease_end, clock, result):
                break
    if result.handled or result.unavailable:
        log.info(
            "outbox: %d sent, %d to retry, %d failed%s",
            result.sent,
            result.retrying,
            result.failed,
            f"; stopped: {result.unavailable}" if result.unavailable else "",
        )
    return result


def _send_batch(engine, connection: SmtpConnection, smtp, rows, lease_end, clock, result) -> bool:
    """Sends claimed rows one by one. Returns False when the server cannot be used any more (it
    cannot be reached again after losing the session, or it refuses our sender address): the rows
    not sent are released with the reason, no attempt used."""
    for index, row in enumerate(rows):
        renewed = clock() + LEASE
        with engine.begin() as conn:
            held = conn.execute(RENEW_LEASE, {"id": row.id, "held": lease_end, "lease_end": renewed}).first()
        if held is None:
            continue  # another worker took it over after the lease ran out: it sends it
        if not connection.is_open:
            try:
                connection.open()
            except (smtplib.SMTPException, OSError) as error:
                return _give_back(engine, row, renewed, rows[index + 1 :], lease_end, error, clock, result)
        try:
            message = build_message(
                smtp, str(row.id), row.to_address, row.subject, row.body_text, row.body_html, row.headers
            )
        except (ValueError, TypeError) as error:
            _record(engine, MARK_FAILED, {"id": row.id, "error": f"cannot build the message: {error}"[:1000]})
            result.failed += 1
            continue
        try:
            connection.send(message)
        except (smtplib.SMTPException, OSError, UnicodeError) as error:
            verdict = judge(error)
            if verdict is Verdict.SENDER_REFUSED:
                return _give_back(engine, row, renewed, rows[index + 1 :], lease_end, error, clock, result)
            if verdict is Verdict.PERMANENT:
                _record(engine, MARK_FAILED, {"id": row.id, "error": describe(error)})
                result.failed += 1
            else:
                # The connection ending mid-message counts against that message (it may be the
                # cause); the next message gets a new session.
                _retry(engine, row, describe(error), clock(), result)
            continue
        _record(engine, MARK_SENT, {"id": row.id, "now": clock()})
        result.sent += 1
    return True


def _give_back(engine, row, renewed, rest, lease_end, error, clock, result) -> bool:
    """Releases this row and the rest of the batch, untried and uncharged; always False."""
    result.unavailable = describe(error)
    leases = [(row.id, renewed)] + [(other.id, lease_end) for other in rest]
    with engine.begin() as conn:
        for row_id, held in leases:
            conn.execute(RELEASE, {"id": row_id, "held": held, "now": clock(), "error": result.unavailable})
    log.warning(
        "outbox: stopped sending (%s); %d messages wait, no attempt counted", result.unavailable, len(leases)
    )
    return False


def _retry(engine, row, error: str, now: datetime, result: FlushResult) -> None:
    attempts = row.attempts + 1
    _record(
        engine,
        MARK_RETRY,
        {
            "id": row.id,
            "error": error,
            "next_attempt_at": now + backoff(attempts),
            "max_attempts": MAX_ATTEMPTS,
        },
    )
    if attempts >= MAX_ATTEMPTS:
        result.failed += 1
    else:
        result.retrying += 1


def _record(engine: Engine, statement, params: dict) -> None:
    with engine.begin() as conn:
        conn.execute(statement, params)
