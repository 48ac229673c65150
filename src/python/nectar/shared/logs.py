"""Logging for every process: one JSON object per line in production, readable text elsewhere, and
the request id of the request being answered in every line logged while answering it.

A request's id comes from its X-Request-ID header when that is a sane value (REQUEST_ID_PATTERN),
else it is made here; it is sent back in the response and passed on to the services it calls
(nectar.shared.tracing.service_call_headers).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from nectar.shared.config import Observability
from nectar.shared.ids import random_id

REQUEST_ID_HEADER = "X-Request-ID"
# Bounded, and nothing a log line, a header or a terminal could be fooled by.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_request_id: ContextVar[str | None] = ContextVar("nectar_request_id", default=None)


def accepted_request_id(offered: str | None) -> str:
    """The id a request goes by: the one it offered when sane, else a new one."""
    if offered and REQUEST_ID_PATTERN.fullmatch(offered):
        return offered
    return random_id().hex


def current_request_id() -> str | None:
    """The id of the request this thread answers, if any."""
    return _request_id.get()


def bind_request_id(request_id: str | None):
    """Makes `request_id` the current one; returns the token that `unbind_request_id` takes."""
    return _request_id.set(request_id)


def unbind_request_id(token) -> None:
    """Restores the request id that was current before `bind_request_id` returned `token`."""
    _request_id.reset(token)


_masked_values: ContextVar[tuple[str, ...]] = ContextVar("nectar_masked_values", default=())
_factory_lock = threading.Lock()
_plain_record_factory = None  # the record factory before masking's, once masking is installed
MASK = "***"


@contextmanager
def masked_in_logs(values: tuple[str, ...]) -> Iterator[None]:
    """Every log record made in this context (threads started from it with a copy of it too)
    shows MASK where any of `values` (longest first) would be: its message and its exception's
    text, whichever logger, handler or library made it. A workflow run's secrets, say."""
    if not values:
        yield
        return
    _install_masking()
    token = _masked_values.set(values)
    try:
        yield
    finally:
        _masked_values.reset(token)


def _install_masking() -> None:
    """A record factory, not a filter: filters belong to one logger or handler, and a record
    reaches others (pytest's, a library's) without them."""
    global _plain_record_factory
    with _factory_lock:
        if _plain_record_factory is not None:
            return
        _plain_record_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_masking_record)


def _masking_record(*args, **kwargs) -> logging.LogRecord:
    record = _plain_record_factory(*args, **kwargs)
    values = _masked_values.get()
    if values:
        message, exception = record.getMessage(), None
        if record.exc_info:
            exception = logging.Formatter().formatException(record.exc_info)
        for value in values:
            message = message.replace(value, MASK)
            exception = exception.replace(value, MASK) if exception else exception
        record.msg, record.args = message, None
        if exception:
            record.exc_text = exception  # formatters use it rather than formatting exc_info again
    return record


class RequestIdFilter(logging.Filter):
    """Gives every record a `request_id` (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
            if record.name == "gunicorn.access" and isinstance(record.args, dict):
                # gunicorn logs once the request has ended: its id is the one the response carried.
                record.request_id = record.args.get("{x-request-id}o") or None
        return True


# gunicorn's access log passes its fields as a dict; these become fields of the JSON line.
_ACCESS_FIELDS = {"m": "method", "U": "path", "s": "status", "D": "duration_us", "h": "remote"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, request id, and the
    traceback when there is one."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            line.update({name: record.args.get(atom) for atom, name in _ACCESS_FIELDS.items()})
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The development console's lines, with the request id at the end when there is one."""

    def __init__(self, service: str):
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request {request_id}]" if request_id else text


def log_handler(service: str, observability: Observability) -> logging.Handler:
    """The handler every line of a process goes through (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    json_lines = observability.log_format == "json"
    handler.setFormatter(JsonFormatter(service) if json_lines else TextFormatter(service))
    handler.addFilter(RequestIdFilter())
    return handler


_json_lines = False


def announce(message: str, file=None) -> None:
    """A line a command says once (a worker started): printed as it is on the development console,
    where the launcher waits for it (on stdout, or `file`); a log line like any other in JSON."""
    if _json_lines:
        logging.getLogger("nectar").info(message)
    else:
        print(message, file=file or sys.stdout, flush=True)


def configure_logging(service: str, observability: Observability) -> None:
    """Sends the process's logging through `log_handler`, at LOG_LEVEL."""
    global _json_lines
    _json_lines = observability.log_format == "json"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(service, observability))
    root.setLevel(observability.log_level)


def gunicorn_log_config(service: str, observability: Observability) -> dict | None:
    """gunicorn's `logconfig_dict` for JSON lines: its error and access logs through the same
    handler as ours (the access line carries the request id). None for text, where gunicorn's own
    lines stay as the development console shows them."""
    if observability.log_format != "json":
        return None
    handler = {"()": log_handler, "service": service, "observability": observability}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"nectar": handler},
        "root": {"level": observability.log_level, "handlers": ["nectar"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
