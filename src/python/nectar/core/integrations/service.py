"""The integration hub: connections an organization configures from the catalog's templates.

Credentials are validated against the template, encrypted at rest (nectar.shared.encryption)
and never returned: the API and pages only say whether a connection has them. "Test connection"
makes a real call and stores the outcome.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.workflows import json_schema, outbound
from nectar.core.workflows.definition import Problem
from nectar.schema.models import CatalogService, ImportedConnector, IntegrationConnection
from nectar.schema.models.columns import max_length
from nectar.shared.encryption import DecryptionFailed, KeyRing
from nectar.shared.rejection import InputRejected

NAME_MAX = max_length(IntegrationConnection.name)


INVALID_CONNECTION = "The connection is not valid."


def catalog(session: Session) -> list[CatalogService]:
    return list(session.scalars(select(CatalogService).order_by(CatalogService.name)))


def _problems(schema: dict, value, prefix: str) -> list[Problem]:
    return [
        Problem(prefix + json_schema.pointer(error.absolute_path), error.message)
        for error in json_schema.validator(schema, check_formats=True).iter_errors(value)
    ]


# Config that says where credentials are sent.
DESTINATION_KEYS = ("base_url", "host", "port", "connector")


def save_connection(
    session: Session,
    ctx: OrgContext,
    keys: KeyRing,
    *,
    service_key: str,
    name: str,
    config: dict,
    credentials: dict | None,
    user_id=None,
    connection: IntegrationConnection | None = None,
) -> IntegrationConnection:
    """Creates or updates a connection. `credentials=None` on an update keeps the stored ones."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change connections.")
    template = session.get(CatalogService, service_key)
    if template is None:
        raise InputRejected(
            INVALID_CONNECTION, [Problem("/service_key", f"No connector {service_key!r} in the catalog.")]
        )
    name = (name or "").strip()
    problems = [] if 1 <= len(name) <= NAME_MAX else [Problem("/name", f"Use 1 to {NAME_MAX} characters.")]
    problems += _problems(template.config_schema, config, "/config")
    if service_key == "openapi" and not problems and not _connector_exists(session, config["connector"]):
        problems.append(Problem("/config/connector", f"No imported connector {config['connector']!r}."))
    if credentials is not None:
        problems += _problems(template.credentials_schema, credentials, "/credentials")
    elif connection is None:
        problems += _problems(template.credentials_schema, {}, "/credentials")
    elif any(config.get(key) != connection.config.get(key) for key in DESTINATION_KEYS):
        # Stored secrets were given for one server: never send them to a new one unasked.
        problems.append(Problem("/credentials", "The destination changed; enter the credentials again."))
    if problems:
        raise InputRejected(INVALID_CONNECTION, problems)
    connection = connection or IntegrationConnection(id=uuid.uuid4(), org_id=ctx.org_id, created_by=user_id)
    connection.service_key, connection.name, connection.config = service_key, name, config
    if credentials is not None:
        connection.credentials_ciphertext, connection.key_id = keys.encrypt(json.dumps(credentials).encode())
    connection.updated_at = datetime.now(UTC)
    session.add(connection)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InputRejected(
            INVALID_CONNECTION, [Problem("/name", f"A connection named {name!r} exists already.")]
        ) from None
    return connection


def _connector_exists(session: Session, name: str) -> bool:
    return session.scalar(select(ImportedConnector.id).where(ImportedConnector.name == name)) is not None


def get_connection(session: Session, connection_id: uuid.UUID) -> IntegrationConnection:
    connection = session.get(IntegrationConnection, connection_id)
    if connection is None:
        raise LookupError("no such connection")
    return connection


def connection_named(session: Session, name: str) -> IntegrationConnection | None:
    return session.scalar(select(IntegrationConnection).where(IntegrationConnection.name == name))


def list_connections(session: Session) -> list[IntegrationConnection]:
    return list(session.scalars(select(IntegrationConnection).order_by(IntegrationConnection.name)))


def delete_connection(session: Session, ctx: OrgContext, connection_id: uuid.UUID) -> None:
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can change connections.")
    session.delete(get_connection(session, connection_id))


def credentials_of(connection: IntegrationConnection, keys: KeyRing) -> dict:
    if connection.credentials_ciphertext is None:
        return {}
    return json.loads(keys.decrypt(connection.credentials_ciphertext))


def credential_texts(secret: dict, headers: dict) -> list[str]:
    """What of a connection's credentials an answer must not show when a run records it (a service
    may repeat them: an introspection call, an error quoting the key): each value but a user name,
    and the Authorization header's credential as sent (Basic's is base64)."""
    texts = [value for name, value in secret.items() if name != "username" and isinstance(value, str)]
    texts.append(str(headers.get("Authorization", "")).rpartition(" ")[2])
    return [text for text in texts if len(text) >= 4]


def authorize(
    connection: IntegrationConnection, keys: KeyRing, url: str, headers: dict
) -> tuple[str, dict, list[str]]:
    """A REST connection's base URL and auth applied to a step's request, with what its answer must
    not show when recorded (credential_texts)."""
    if connection.service_key != "rest":
        raise ValueError(
            f"connection {connection.name!r} is a {connection.service_key} connector, not a REST API"
        )
    config, secret = connection.config, credentials_of(connection, keys)
    if not url.startswith(("http://", "https://")):
        url = config["base_url"].rstrip("/") + "/" + url.lstrip("/")
    if not within_base(url, config["base_url"]):
        # Credentials only ever go to the connection's own service.
        raise ValueError(f"{url} is outside the connection's base URL {config['base_url']}")
    headers = dict(headers)
    auth = config["auth"]
    if auth in ("bearer", "basic"):
        headers["Authorization"] = authorization(auth, secret)
    elif auth == "api_key":
        headers[config.get("api_key_header") or "X-API-Key"] = secret.get("api_key", "")
    return url, headers, credential_texts(secret, headers)


def authorization(scheme: str, secret: dict) -> str:
    """The Authorization header's value for `bearer` (a token) or `basic` (a user name and password)
    credentials."""
    if scheme == "bearer":
        return f"Bearer {secret.get('token', '')}"
    pair = f"{secret.get('username', '')}:{secret.get('password', '')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def within_base(url: str, base: str) -> bool:
    """Same scheme, host and port as the base, no user info, and under its path on a segment boundary."""
    from urllib3.util import parse_url

    target, root = parse_url(url), parse_url(base)
    if target.auth or "\\" in url:
        return False
    if (target.scheme, target.host, target.port) != (root.scheme, root.host, root.port):
        return False
    prefix = (root.path or "/").rstrip("/") + "/"
    return ((target.path or "/").rstrip("/") + "/").startswith(prefix)


def test_connection(
    session: Session, ctx: OrgContext, keys: KeyRing, connection: IntegrationConnection, policy
) -> tuple[bool, str]:
    """Makes a real call with the connection and records the outcome; returns (ok, message)."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can test connections.")
    try:
        if connection.service_key == "openapi":
            message = _probe_connector(session, connection, policy)
        else:
            message = _probe(connection, keys, policy)
        ok = True
    except (outbound.OutboundRefused, DecryptionFailed, ValueError, OSError, smtplib.SMTPException) as error:
        ok, message = False, str(error) or type(error).__name__
    connection.last_tested_at, connection.last_test_ok = datetime.now(UTC), ok
    connection.last_test_error = None if ok else message[:1000]
    return ok, message


def _probe_connector(session: Session, connection: IntegrationConnection, policy) -> str:
    """An imported connector's operations differ too much for one safe call: its base URL is checked
    against the outbound guard instead."""
    name = connection.config["connector"]
    base_url = session.scalar(select(ImportedConnector.base_url).where(ImportedConnector.name == name))
    if base_url is None:
        raise ValueError(f"no imported connector {name!r}")
    outbound.check_url(base_url, policy)
    return f"{base_url} may be called; each operation is checked when a step calls it"


def _probe(connection: IntegrationConnection, keys: KeyRing, policy) -> str:
    kind, config = connection.service_key, connection.config
    secret = credentials_of(connection, keys)
    if kind == "rest":
        url, headers, _ = authorize(connection, keys, config.get("health_path") or "/", {})
        result = outbound.send("GET", url, policy=policy, headers=headers, timeout=10)
        if result.status >= 400:
            raise ValueError(f"GET {url} answered {result.status}")
        return f"GET {url} answered {result.status}"
    if kind == "slack":
        post_to_slack(connection, keys, policy, "Nectar Studio connection test")
        return "Slack accepted the test message"
    if kind == "smtp":
        outbound.check_url(f"http://{config['host']}:{config['port']}/", policy)
        with smtplib.SMTP(config["host"], config["port"], timeout=10) as smtp:
            smtp.ehlo()
            if config.get("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if secret.get("username"):
                smtp.login(secret["username"], secret.get("password", ""))
            smtp.noop()
        return f"{config['host']}:{config['port']} accepted the connection"
    if kind == "webhook":
        return (
            "Ready: POST to its URL with X-Nectar-Signature: sha256=<HMAC-SHA256 of the body with the secret>"
        )
    raise ValueError(f"no test for {kind} connections")


def post_to_slack(
    connection: IntegrationConnection, keys: KeyRing, policy, text: str, *, idempotency_key: str | None = None
) -> None:
    """Posts `text` through a Slack connection's incoming webhook; ValueError (or OutboundRefused)
    when it was not accepted."""
    if connection.service_key != "slack":
        raise ValueError(f"connection {connection.name!r} is a {connection.service_key} connector, not Slack")
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    url = credentials_of(connection, keys)["webhook_url"]
    result = outbound.send("POST", url, policy=policy, headers=headers, body={"text": text}, timeout=10)
    if result.status >= 400:
        raise ValueError(f"Slack answered {result.status}: {str(result.body)[:200]}")


def signature_valid(
    connection: IntegrationConnection, keys: KeyRing, body: bytes, header: str | None
) -> bool:
    if connection.service_key != "webhook" or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(credentials_of(connection, keys)["secret"].encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))
