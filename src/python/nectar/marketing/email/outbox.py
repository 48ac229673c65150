"""The outbox sender: claims due messages, sends them over SMTP, records what happened.

A message is claimed in a short transaction (FOR UPDATE SKIP LOCKED, so workers never take the same
row) and marked 'sending' with a lease: while it is sending, next_attempt_at is when the lease
ends. It is then sent outside any transaction and marked 'sent', or put back to 'pending' with
attempts + 1, the error and an exponential backoff, or 'failed' after MAX_ATTEMPTS or a permanent
(5xx) refusal. A row whose lease ended (its worker died mid-send) is claimed again.

Every time is computed from `now`, a parameter, so tests can move the clock.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from nectar.marketing.email.smtp import SmtpConnection, SmtpSettings, build_message

# 30 s, 1, 2, 4 ... 64 min, then 2 h: the tenth failure, about four hours in, is final.
MAX_ATTEMPTS = 10
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=2)
# A claimed batch must be sent before its lease ends, even when each message takes the whole SMTP
# timeout (BATCH x 30 s), or another worker would send it again.
LEASE = timedelta(minutes=15)
BATCH = 20
log = logging.getLogger(__name__)

CLAIM = text(
    "WITH due AS ("
    "  SELECT id FROM email_outbox"
    "  WHERE (status = 'pending' OR status = 'sending') AND next_attempt_at <= :now"
    "  ORDER BY next_attempt_at, created_at LIMIT :limit FOR UPDATE SKIP LOCKED"
    ") "
    "UPDATE email_outbox o SET status = 'sending', next_attempt_at = :lease_end, "
    # A row still 'sending' here was abandoned by a worker that died: that attempt counts.
    "  attempts = o.attempts + CASE WHEN o.status = 'sending' THEN 1 ELSE 0 END, "
    "  last_error = CASE WHEN o.status = 'sending' THEN 'the worker sending it stopped; sending again' "
    "  ELSE o.last_error END "
    "FROM due WHERE o.id = due.id "
    "RETURNING o.id, o.to_address, o.subject, o.body_text, o.body_html, o.headers, o.attempts"
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


@dataclass
class FlushResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.sent + self.retrying + self.failed


class Permanent(Exception):
    """This message can never be delivered as it is (a 5xx refusal, an unusable address)."""


def backoff(attempts_so_far: int) -> timedelta:
    """Wait before the next try after `attempts_so_far` failed ones: 30 s, 1 min, 2 min, ... at most 2 h."""
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts_so_far - 1)))


def _classify(error: Exception) -> Exception:
    """Permanent for a 5xx refusal of this message (its recipient or its content); anything else
    (4xx, connection, TLS, authentication, our sender address: the server's or our configuration's
    state, not the message's) is retried."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            detail = "; ".join(
                f"{code} {reason.decode(errors='replace')}" for code, reason in error.recipients.values()
            )
            return Permanent(f"recipient refused: {detail}")
        return error
    if isinstance(error, smtplib.SMTPDataError) and error.smtp_code >= 500:
        return Permanent(f"{error.smtp_code} {_reason(error.smtp_error)}")
    return error


def _reason(raw) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _describe(error: Exception) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"SMTP {error.smtp_code} {_reason(error.smtp_error)}"[:1000]
    return f"{type(error).__name__}: {error}"[:1000]


def flush(
    engine: Engine,
    smtp: SmtpSettings,
    *,
    now: datetime | None = None,
    batch: int = BATCH,
    max_messages: int = 1000,
) -> FlushResult:
    """Sends due messages until none is due or `max_messages` were handled. Without an SMTP host it
    sends nothing: mail stays pending, visible in admin. `now` fixes the clock (for tests)."""
    result = FlushResult()
    if not smtp.configured:
        return result
    clock = (lambda: now) if now else (lambda: datetime.now(UTC))
    with SmtpConnection(smtp) as connection:
        while result.handled < max_messages:
            claimed_at = clock()
            with engine.begin() as conn:
                rows = conn.execute(
                    CLAIM,
                    {
                        "now": claimed_at,
                        "lease_end": claimed_at + LEASE,
                        "limit": min(batch, max_messages - result.handled),
                    },
                ).all()
            if not rows:
                break
            if not _send_batch(engine, connection, smtp, rows, clock, result):
                break  # the server is unreachable: the rest waits for its backoff
    if result.handled:
        log.info("outbox: %d sent, %d to retry, %d failed", result.sent, result.retrying, result.failed)
    return result


def _send_batch(engine, connection, smtp, rows, clock, result) -> bool:
    """Sends claimed rows one by one; returns False when the server went away (the remaining rows
    are put back for a later try)."""
    for index, row in enumerate(rows):
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
        except (smtplib.SMTPException, OSError) as raw:
            error = _classify(raw)
            if isinstance(error, Permanent):
                _record(engine, MARK_FAILED, {"id": row.id, "error": str(error)[:1000]})
                result.failed += 1
                continue
            _retry(engine, row, _describe(error), clock(), result)
            if _connection_lost(error):
                for rest in rows[index + 1 :]:
                    _retry(engine, rest, _describe(error), clock(), result)
                return False
            continue
        _record(engine, MARK_SENT, {"id": row.id, "now": clock()})
        result.sent += 1
    return True


def _connection_lost(error: Exception) -> bool:
    """Whether the session is unusable (so is every message after this one), rather than this
    one message being refused for now."""
    session_errors = (
        smtplib.SMTPAuthenticationError,
        smtplib.SMTPSenderRefused,
        smtplib.SMTPServerDisconnected,
        smtplib.SMTPConnectError,
        smtplib.SMTPHeloError,
    )
    if isinstance(error, session_errors):
        return True
    return not isinstance(error, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused)


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
