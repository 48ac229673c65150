"""Connectors an organization imports from OpenAPI 3 documents, and http_request steps that call
their operations by operationId.

Path parameters, query and body are checked against the operation's schemas twice: when the
workflow is saved (literal values, and the shape around templated ones) and before each call
(the rendered values: a mismatch fails the step, naming the field, and nothing is sent).
Credentials come from a connection of the `openapi` template bound to the connector, sent as the
document's security schemes say; the URL is the connector's base URL and the operation's path,
and goes through the outbound guard like any http_request.
"""

from __future__ import annotations

import difflib
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.integrations import openapi_import
from nectar.core.integrations.openapi_import import DOCUMENT_URI, NOT_IMPORTED
from nectar.core.integrations.service import authorization, credential_texts, credentials_of, within_base
from nectar.core.workflows import json_schema
from nectar.core.workflows.definition import Problem, operation_calls_in
from nectar.schema.models import ImportedConnector, IntegrationConnection
from nectar.schema.models.columns import max_length
from nectar.shared.encryption import KeyRing
from nectar.shared.rejection import InputRejected

NAME_MAX = max_length(ImportedConnector.name)
OPENAPI_TEMPLATE = "openapi"
REGISTRIES_KEPT = 32  # connectors whose document is kept ready for checking values, per process


def import_connector(
    session: Session,
    ctx: OrgContext,
    *,
    name: str,
    source: bytes | str,
    base_url: str | None = None,
    user_id=None,
) -> ImportedConnector:
    """Reads `source` (an OpenAPI 3 document, JSON or YAML) into a new connector named `name`;
    raises InputRejected with every problem."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can import connectors.")
    name = (name or "").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise InputRejected(NOT_IMPORTED, [Problem("/name", f"Use 1 to {NAME_MAX} characters.")])
    read = openapi_import.read_document(source, base_url or None)
    connector = ImportedConnector(
        id=uuid.uuid4(),
        org_id=ctx.org_id,
        name=name,
        title=read.title,
        base_url=read.base_url,
        document=read.document,
        operations=read.operations,
        document_bytes=read.size,
        created_by=user_id,
    )
    session.add(connector)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InputRejected(
            NOT_IMPORTED, [Problem("/name", f"A connector named {name!r} exists already.")]
        ) from None
    return connector


def list_connectors(session: Session) -> list[ImportedConnector]:
    return list(session.scalars(select(ImportedConnector).order_by(ImportedConnector.name)))


def get_connector(session: Session, connector_id: uuid.UUID) -> ImportedConnector:
    connector = session.get(ImportedConnector, connector_id)
    if connector is None:
        raise LookupError("no such connector")
    return connector


def connector_named(session: Session, name: str) -> ImportedConnector | None:
    return session.scalar(select(ImportedConnector).where(ImportedConnector.name == name))


def delete_connector(session: Session, ctx: OrgContext, connector_id: uuid.UUID) -> None:
    """Removes a connector no connection uses. Connections are bound to it by name and keep their
    credentials: a connector imported again under that name, with another server, would receive
    them (InputRejected, 409, while any connection uses it)."""
    if not ctx.at_least("admin"):
        raise PermissionDenied("Only an admin or owner can remove connectors.")
    connector = get_connector(session, connector_id)
    users = session.scalars(
        select(IntegrationConnection.name).where(
            IntegrationConnection.service_key == "openapi",
            IntegrationConnection.config["connector"].astext == connector.name,
        )
    ).all()
    if users:
        raise InputRejected(
            f"Connections use this connector ({', '.join(sorted(users))}): delete them first.",
            field="connector",
            status=409,
        )
    session.delete(connector)


# --- which connector and operation a step calls ------------------------------------------------


class _NotFound(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _resolve(session: Session, step: dict) -> tuple[ImportedConnector, IntegrationConnection | None, dict]:
    """The step's connector, connection (if it names one) and operation; _NotFound names the field."""
    connection = None
    name = step.get("connector")
    if "connection" in step:
        connection = session.scalar(
            select(IntegrationConnection).where(IntegrationConnection.name == step["connection"])
        )
        if connection is None:
            raise _NotFound("connection", f"no connection named {step['connection']!r} in this organization")
        if connection.service_key != OPENAPI_TEMPLATE:
            raise _NotFound(
                "connection",
                f"connection {connection.name!r} is a {connection.service_key} connection; an operation needs "
                "one of an imported connector",
            )
        bound = connection.config.get("connector")
        if name is not None and name != bound:
            raise _NotFound(
                "connector", f"connection {connection.name!r} is bound to connector {bound!r}, not {name!r}"
            )
        name = bound
    connector = connector_named(session, name)
    if connector is None:
        raise _NotFound("connector", f"no imported connector {name!r} in this organization")
    operation = connector.operations.get(step["operation"])
    if operation is None:
        near = difflib.get_close_matches(step["operation"], list(connector.operations), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise _NotFound(
            "operation", f"connector {connector.name!r} has no operation {step['operation']!r}{hint}"
        )
    if operation["unsupported"]:
        raise _NotFound("operation", f"{step['operation']} cannot be called: {operation['unsupported']}")
    return connector, connection, operation


# --- checking values -------------------------------------------------------------------------------

_registries: OrderedDict[uuid.UUID, object] = OrderedDict()
_registries_lock = threading.Lock()


def _registry(connector: ImportedConnector):
    """The connector's document ready for checking values (connectors never change once imported)."""
    with _registries_lock:
        if connector.id in _registries:
            _registries.move_to_end(connector.id)
            return _registries[connector.id]
    registry = openapi_import.registry_of(connector.document)
    with _registries_lock:
        _registries[connector.id] = registry
        while len(_registries) > REGISTRIES_KEPT:
            _registries.popitem(last=False)
    return registry


def _errors(connector: ImportedConnector, schema_at: str | None, value) -> list[tuple[str, str]]:
    """(JSON Pointer within `value`, message) for each way `value` breaks the schema at `schema_at`."""
    if schema_at is None:
        return []
    # Quoted: the pointer is read back unquoted, and paths may hold % or spaces.
    reference = DOCUMENT_URI + "#" + quote(schema_at, safe="/~")
    check = json_schema.validator({"$ref": reference}, registry=_registry(connector))
    try:
        return [(json_schema.pointer(e.absolute_path), e.message) for e in check.iter_errors(value)]
    except RecursionError:
        return [("", "the document's schema nests too deeply to check")]


def _templated(value) -> bool:
    return isinstance(value, str) and "{{" in value


def _at(value, path: str):
    for key in [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _value_errors(
    connector, schema_at, value, *, saving: bool, text_may_be_json: bool
) -> list[tuple[str, str]]:
    """The schema's complaints about `value`. When saving, a templated value is not known yet: what
    is said about it alone is left for the call. A parameter's text may stand for a number or true/false
    (`"7"` from a URL), and a number for text, as it is sent as text anyway."""
    if saving and _templated(value):
        return []
    errors = _errors(connector, schema_at, value)
    if saving:
        errors = [(where, message) for where, message in errors if not _templated(_at(value, where))]
    if errors and text_may_be_json and isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return errors
        if isinstance(parsed, int | float | bool) and not _errors(connector, schema_at, parsed):
            return []
    elif errors and text_may_be_json and isinstance(value, int | float | bool):
        if not _errors(connector, schema_at, _as_text(value)):
            return []  # 7 for a text parameter: sent as "7" all the same
    return errors


def _call_problems(
    connector, operation: dict, step_id: str, values: dict, *, saving: bool
) -> list[tuple[str, str]]:
    """(field path below the step, message) for each way `values` (path_params, query, body) do not
    fit the operation."""
    problems = []
    parameters = operation["parameters"]
    for field, place in (("path_params", "path"), ("query", "query")):
        given = values.get(field)
        if given is None:
            given = {}
        if _templated(given) and saving:
            continue
        if not isinstance(given, dict):
            problems.append((f"/{field}", "expected an object of parameters"))
            continue
        declared = {p["name"]: p for p in parameters.get(place, [])}
        for name, parameter in declared.items():
            if parameter["required"] and name not in given:
                problems.append((f"/{field}", f"{name!r} is required by {step_id}"))
        for name, value in given.items():
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(
                    (
                        f"/{field}/{_escape(name)}",
                        f"{step_id} has no {place} parameter {name!r} (it has: {known})",
                    )
                )
                continue
            for where, message in _value_errors(
                connector, declared[name]["schema"], value, saving=saving, text_may_be_json=True
            ):
                problems.append((f"/{field}/{_escape(name)}{where}", message))
    problems += _header_problems(connector, parameters.get("header", []), step_id, values, saving=saving)
    body, declared_body = values.get("body"), operation["body"]
    if declared_body is None or declared_body["schema"] is None:
        if body is not None and declared_body is None:
            problems.append(("/body", f"{step_id} takes no request body"))
    elif body is None:
        if declared_body["required"]:
            problems.append(("/body", f"{step_id} requires a request body"))
    else:
        for where, message in _value_errors(
            connector, declared_body["schema"], body, saving=saving, text_may_be_json=False
        ):
            problems.append((f"/body{where}", message))
    return problems


def _header_problems(
    connector, declared: list, step_id: str, values: dict, *, saving: bool
) -> list[tuple[str, str]]:
    """The operation's header parameters among the step's headers (by any case); other headers go
    as they are."""
    given = values.get("headers") or {}
    if not isinstance(given, dict):
        return []
    by_name = {name.lower(): (name, value) for name, value in given.items()}
    problems = []
    for parameter in declared:
        found = by_name.get(parameter["name"].lower())
        if found is None:
            if parameter["required"]:
                problems.append(("/headers", f"the header {parameter['name']!r} is required by {step_id}"))
            continue
        name, value = found
        for where, message in _value_errors(
            connector, parameter["schema"], value, saving=saving, text_may_be_json=True
        ):
            problems.append((f"/headers/{_escape(name)}{where}", message))
    return problems


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def operation_problems(session: Session, definition: dict) -> list[Problem]:
    """When a workflow is saved: each step that calls an imported operation names one that exists,
    and its literal path parameters, query and body (the shape around templated values) fit it."""
    problems = []
    for path, step in operation_calls_in(definition):
        try:
            connector, _connection, operation = _resolve(session, step)
        except _NotFound as missing:
            problems.append(Problem(f"{path}/{missing.field}", str(missing)))
            continue
        for where, message in _call_problems(connector, operation, step["operation"], step, saving=True):
            problems.append(Problem(path + where, message))
    return problems


# --- making the call -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCall:
    method: str
    url: str
    headers: dict
    query: dict
    body: object
    credentials: tuple[str, ...] = ()  # what the answer must not show when recorded (credential_texts)


def prepare_call(session: Session, keys: KeyRing, step: dict, request: dict, lock=None) -> PreparedCall:
    """The request for a step's rendered values (`request`, see engine.py), checked against the
    operation and signed with the connection's credentials; ValueError names what does not fit."""
    with lock or threading.Lock():
        try:
            connector, connection, operation = _resolve(session, step)
        except _NotFound as missing:
            raise ValueError(f"{missing.field}: {missing}") from None
        secret = credentials_of(connection, keys) if connection is not None else None
        # Read here, while the session is held; the rest works on plain values.
        base_url, connector_name = connector.base_url, connector.name
    values = {key: request.get(key) for key in ("path_params", "query", "headers", "body")}
    problems = _call_problems(connector, operation, step["operation"], values, saving=False)
    if problems:
        where, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{where.lstrip('/')}: {message}{more}; not sent")
    path = operation["path"]
    for name, value in (values["path_params"] or {}).items():
        text = _as_text(value)
        if text in (".", ".."):
            raise ValueError(f"path_params/{name}: {text!r} cannot be a path segment; not sent")
        path = path.replace("{" + name + "}", quote(text, safe=""))
    url = base_url + path
    if not within_base(url, base_url):
        raise ValueError(f"{url} is outside the connector's base URL {base_url}; not sent")
    query = {name: _as_query(value) for name, value in (values["query"] or {}).items() if value is not None}
    headers = dict(request.get("headers") or {})
    credentials: tuple[str, ...] = ()
    if secret is not None:
        _sign(operation, secret, headers, query, connector_name, step["operation"])
        credentials = tuple(credential_texts(secret, headers))
    return PreparedCall(operation["method"], url, headers, query, values["body"], credentials)


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _as_query(value):
    return [_as_text(item) for item in value] if isinstance(value, list) else _as_text(value)


def _sign(
    operation: dict, secret: dict, headers: dict, query: dict, connector: str, operation_id: str
) -> None:
    """Sends the connection's credentials the first way the operation accepts that they can fill."""
    ways = operation["security"]
    if not ways or any(not way for way in ways):
        return  # the operation needs no credentials
    for way in ways:
        if all(_can_send(scheme, secret) for scheme in way):
            for scheme in way:
                _send(scheme, secret, headers, query)
            return
    wanted = " or ".join(" and ".join(_needs(s) for s in way) for way in ways)
    raise ValueError(
        f"connection: {connector}.{operation_id} needs {wanted}, which the connection does not hold"
    )


def _can_send(scheme: dict, secret: dict) -> bool:
    send = scheme["send"]
    if send == "api_key":
        return bool(secret.get("api_key"))
    if send == "bearer":
        return bool(secret.get("token"))
    if send == "basic":
        return bool(secret.get("username"))
    return False


def _needs(scheme: dict) -> str:
    send = scheme["send"]
    if send == "api_key":
        return f"an api_key (sent in the {scheme['in']} {scheme['name']})"
    if send == "bearer":
        return "a token"
    if send == "basic":
        return "a username and password"
    return f"{scheme['scheme']} ({scheme.get('why', '')}, not supported)"


def _send(scheme: dict, secret: dict, headers: dict, query: dict) -> None:
    send = scheme["send"]
    if send == "api_key" and scheme["in"] == "header":
        headers[scheme["name"]] = secret["api_key"]
    elif send == "api_key":
        query[scheme["name"]] = secret["api_key"]
    elif send in ("bearer", "basic"):
        headers["Authorization"] = authorization(send, secret)
