"""Reading a third-party OpenAPI 3 document into what calls need: its base URL and, by operationId,
each operation's method, path, parameters, request body and security.

The document is the tenant's and untrusted: it is bounded in size and nesting before anything
else, read as JSON or as YAML with the safe loader (no tags that build objects), and only
references inside it (`#/...`) are followed, never fetched; how many there are and how long a
chain of them may be are bounded too. Every problem names its place in the document as a JSON
Pointer, e.g. `/paths/~1pets/get: operationId missing`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime

import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from urllib3.util import parse_url

from nectar.core.workflows.definition import Problem
from nectar.core.workflows.json_schema import pointer
from nectar.shared.bad_input import refused_text
from nectar.shared.rejection import InputRejected

# Inside the 1 MiB every request of the service is held to (shared/web.py), with room for the
# JSON or form around the document.
MAX_DOCUMENT_BYTES = 900 * 1024
MAX_NESTING = 64  # objects and arrays inside one another
MAX_VALUES = 500_000  # every value once, YAML aliases counted each time they are used
MAX_REFS = 10_000
MAX_REF_CHAIN = 16  # a reference to a reference to ...
MAX_OPERATIONS = 2_000
# What an http_request step can send; OPTIONS and TRACE operations are left out.
METHODS = ("get", "put", "post", "delete", "patch", "head")
PARAMETER_PLACES = ("path", "query", "header", "cookie")
VERSION = re.compile(r"^3\.\d+(\.\d+)?(-[\w.]+)?$")
TEMPLATE_NAME = re.compile(r"\{([^{}/]+)\}")
# The document's schemas are checked as JSON Schema 2020-12 under this address.
DOCUMENT_URI = "urn:nectar:imported-document"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The safe loader (plain values only; the C one where PyYAML has it) without merge keys (<<):
    PyYAML copies merged mappings before anything counts them, so nested merges of a few hundred
    bytes grow to billions of entries. OpenAPI documents do not use them."""

    def flatten_mapping(self, node):
        for key, _value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not accepted", key.start_mark
                )
        return super().flatten_mapping(node)


# Why an import is refused, with `problems` saying where in the document (InputRejected, 422).
NOT_IMPORTED = "The OpenAPI document was not imported."


@dataclass(frozen=True)
class ReadDocument:
    document: dict
    title: str
    base_url: str
    operations: dict[str, dict]
    size: int


def read_document(source: bytes | str, base_url: str | None = None) -> ReadDocument:
    """Parses and checks an OpenAPI 3 document (JSON or YAML); raises InputRejected. `base_url`,
    when given, replaces the document's servers."""
    raw = source.encode() if isinstance(source, str) else source
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise InputRejected(
            NOT_IMPORTED,
            [Problem("/", f"the document is {len(raw)} bytes; at most {MAX_DOCUMENT_BYTES} are accepted")],
        )
    document = _parse(raw)
    if not isinstance(document, dict):
        raise InputRejected(NOT_IMPORTED, [Problem("/", "expected an object: an OpenAPI 3.x document")])
    _check_version(document)
    reader = _Reader(document)
    operations = reader.operations()
    title = document.get("info", {}).get("title") if isinstance(document.get("info"), dict) else None
    if not isinstance(title, str) or not title.strip():
        reader.problems.append(Problem("/info/title", "missing: the API needs a title"))
    url = reader.base_url(base_url)
    if reader.problems:
        raise InputRejected(NOT_IMPORTED, reader.problems[:50])
    return ReadDocument(document, title.strip()[:200], url, operations, len(raw))


def _parse(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputRejected(NOT_IMPORTED, [Problem("/", f"not UTF-8 text (byte {error.start})")]) from None
    try:
        if text.lstrip().startswith("{"):
            loaded = json.loads(text)
        else:
            # The safe loader builds only plain values; the C one where PyYAML has it.
            loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 - safe: see _Loader
    except json.JSONDecodeError as error:
        raise InputRejected(
            NOT_IMPORTED, [Problem("/", f"not JSON: {error.msg} at line {error.lineno}")]
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = getattr(error, "problem", None) or "not YAML"
        raise InputRejected(NOT_IMPORTED, [Problem("/", f"neither JSON nor YAML: {reason}{where}")]) from None
    except RecursionError:
        raise InputRejected(
            NOT_IMPORTED, [Problem("/", f"it nests more than {MAX_NESTING} levels deep")]
        ) from None
    except ValueError as error:  # a number past Python's 4300 digits; in YAML, a date that does not exist
        reason = str(error).split(";")[0]
        raise InputRejected(
            NOT_IMPORTED, [Problem("/", f"a value it holds cannot be read ({reason})")]
        ) from None
    return _plain(loaded)


def _plain(loaded: object) -> object:
    """The parsed value as JSON: keys as text (YAML reads `200:` as a number), dates as ISO text;
    refuses what nests too deeply or, through YAML aliases, expands too far."""
    budget = [MAX_VALUES]
    # A document's text holds its own; through aliases, a YAML one can repeat a long text at three
    # bytes a use, and storing it copies each.
    text_budget = [MAX_DOCUMENT_BYTES]

    def spend_text(characters: int) -> None:
        text_budget[0] -= characters
        if text_budget[0] < 0:
            message = f"more than {MAX_DOCUMENT_BYTES} characters of text (YAML aliases count each use)"
            raise InputRejected(NOT_IMPORTED, [Problem("/", message)])

    def walk(value, path: list, depth: int):
        budget[0] -= 1
        if budget[0] < 0:
            raise InputRejected(
                NOT_IMPORTED, [Problem("/", f"more than {MAX_VALUES} values (YAML aliases count each use)")]
            )
        if isinstance(value, str):
            spend_text(len(value))
        elif isinstance(value, dict):
            spend_text(sum(len(str(key)) for key in value))
        if depth > MAX_NESTING:
            raise InputRejected(
                NOT_IMPORTED, [Problem(pointer(path), f"nested more than {MAX_NESTING} levels deep")]
            )
        if isinstance(value, dict):
            return {str(key): walk(item, [*path, str(key)], depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, [*path, index], depth + 1) for index, item in enumerate(value)]
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
            raise InputRejected(NOT_IMPORTED, [Problem(pointer(path) or "/", "not a JSON number")])
        if isinstance(value, str) and (reason := refused_text(value)):
            raise InputRejected(NOT_IMPORTED, [Problem(pointer(path) or "/", f"the text holds {reason}")])
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise InputRejected(
            NOT_IMPORTED, [Problem(pointer(path) or "/", f"a {type(value).__name__} is not a JSON value")]
        )

    return walk(loaded, [], 0)


def _check_version(document: dict) -> None:
    if "swagger" in document:
        raise InputRejected(
            NOT_IMPORTED,
            [Problem("/swagger", f"expected OpenAPI 3.x at /openapi; this is Swagger {document['swagger']}")],
        )
    version = document.get("openapi")
    if version is None:
        raise InputRejected(NOT_IMPORTED, [Problem("/openapi", "missing; expected 3.x")])
    if not isinstance(version, str) or not VERSION.match(version):
        raise InputRejected(NOT_IMPORTED, [Problem("/openapi", f"expected 3.x, got {version!r}")])


class _Reader:
    """Walks one parsed document, collecting problems and the operations' index."""

    def __init__(self, document: dict):
        self.document, self.problems = document, []
        self.refs = 0

    def problem(self, parts: list, message: str) -> None:
        self.problems.append(Problem(pointer(parts) or "/", message))

    def resolve(self, value, parts: list) -> tuple[object, list]:
        """`value` with its $ref followed (to the end of a chain), and the path it was found at."""
        for _ in range(MAX_REF_CHAIN + 1):
            if not isinstance(value, dict) or "$ref" not in value:
                return value, parts
            self.refs += 1
            if self.refs > MAX_REFS:
                raise InputRejected(
                    NOT_IMPORTED, [Problem(pointer(parts) + "/$ref", f"more than {MAX_REFS} references")]
                )
            target = value["$ref"]
            found = self.target(target, [*parts, "$ref"])
            if found is None:
                return None, parts
            value, parts = found
        self.problem([*parts, "$ref"], f"a chain of more than {MAX_REF_CHAIN} references")
        return None, parts

    def target(self, reference, parts: list) -> tuple[object, list] | None:
        if not isinstance(reference, str) or not reference.startswith("#/"):
            self.problem(
                parts, f"only references inside the document (#/...) are followed, not {reference!r}"
            )
            return None
        keys = [key.replace("~1", "/").replace("~0", "~") for key in reference[2:].split("/")]
        value = self.document
        for key in keys:
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                self.problem(parts, f"{reference!r} is not in the document")
                return None
        return value, keys

    def check_schema_refs(self, value, parts: list) -> None:
        """Every $ref inside a schema points inside the document (they are resolved when values are
        checked, so recursive schemas stay references)."""
        pending = [(value, parts)]
        while pending:
            item, at = pending.pop()
            if isinstance(item, dict):
                if "$ref" in item:
                    self.refs += 1
                    if self.refs > MAX_REFS:
                        raise InputRejected(
                            NOT_IMPORTED, [Problem(pointer(at) + "/$ref", f"more than {MAX_REFS} references")]
                        )
                    self.target(item["$ref"], [*at, "$ref"])
                pending += [(inner, [*at, key]) for key, inner in item.items() if key != "$ref"]
            elif isinstance(item, list):
                pending += [(inner, [*at, index]) for index, inner in enumerate(item)]

    def operations(self) -> dict[str, dict]:
        paths = self.document.get("paths")
        if not isinstance(paths, dict):
            self.problem(["paths"], "missing: expected an object of paths")
            return {}
        found: dict[str, dict] = {}
        first_at: dict[str, str] = {}
        for template, item in paths.items():
            if not template.startswith("/"):
                self.problem(["paths", template], "a path must start with /")
                continue
            item, item_parts = self.resolve(item, ["paths", template])
            if not isinstance(item, dict):
                if item is not None:
                    self.problem(item_parts, "expected a path item object")
                continue
            shared = self.parameters(item.get("parameters", []), [*item_parts, "parameters"])
            for method in METHODS:
                if method not in item:
                    continue
                at = [*item_parts, method]
                operation = item[method]
                if not isinstance(operation, dict):
                    self.problem(at, "expected an operation object")
                    continue
                operation_id = operation.get("operationId")
                if not isinstance(operation_id, str) or not operation_id.strip():
                    self.problem(at, "operationId missing")
                    continue
                if len(operation_id) > 200:
                    self.problem([*at, "operationId"], "at most 200 characters")
                    continue
                if operation_id in first_at:
                    self.problem(
                        [*at, "operationId"],
                        f"{operation_id!r} is used twice (first at {first_at[operation_id]})",
                    )
                    continue
                first_at[operation_id] = pointer(at)
                if len(found) >= MAX_OPERATIONS:
                    raise InputRejected(
                        NOT_IMPORTED, [Problem(pointer(at), f"more than {MAX_OPERATIONS} operations")]
                    )
                found[operation_id] = self.operation(template, method, operation, at, shared)
        if not found and not self.problems:
            self.problem(["paths"], "no operations: nothing to call")
        return found

    def parameters(self, listed, parts: list) -> dict[tuple[str, str], dict]:
        if not isinstance(listed, list):
            self.problem(parts, "expected a list of parameters")
            return {}
        result = {}
        for index, parameter in enumerate(listed):
            parameter, at = self.resolve(parameter, [*parts, index])
            if parameter is None:
                continue
            if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                self.problem(at, "a parameter needs a name")
                continue
            place = parameter.get("in")
            if place not in PARAMETER_PLACES:
                self.problem([*at, "in"], f"expected one of {', '.join(PARAMETER_PLACES)}")
                continue
            schema_at = [*at, "schema"]
            if (
                "schema" not in parameter
                and isinstance(parameter.get("content"), dict)
                and parameter["content"]
            ):
                media = next(iter(parameter["content"]))
                schema_at = [*at, "content", media, "schema"]
            schema = _at(self.document, schema_at)
            self.check_schema_refs(schema, schema_at)
            result[(place, parameter["name"])] = {
                "name": parameter["name"],
                "required": bool(parameter.get("required")) or place == "path",
                "schema": pointer(schema_at) if schema is not None else None,
            }
        return result

    def operation(self, template: str, method: str, operation: dict, at: list, shared: dict) -> dict:
        parameters = {**shared, **self.parameters(operation.get("parameters", []), [*at, "parameters"])}
        by_place: dict[str, list] = {place: [] for place in PARAMETER_PLACES}
        for (place, _name), parameter in parameters.items():
            by_place[place].append(parameter)
        declared = {p["name"] for p in by_place["path"]}
        for name in TEMPLATE_NAME.findall(template):
            if name not in declared:
                self.problem(at, f"the path parameter {name!r} of {template} is not declared")
        unsupported = None
        body = None
        if "requestBody" in operation:
            request_body, body_at = self.resolve(operation["requestBody"], [*at, "requestBody"])
            if isinstance(request_body, dict) and isinstance(request_body.get("content"), dict):
                media = next((m for m in request_body["content"] if _is_json(m)), None)
                if media is None and request_body["content"]:
                    unsupported = f"its request body is {next(iter(request_body['content']))}; only JSON bodies can be sent"
                schema_at = [*body_at, "content", media, "schema"] if media else None
                schema = _at(self.document, schema_at) if schema_at else None
                if schema is not None:
                    self.check_schema_refs(schema, schema_at)
                body = {
                    "required": bool(request_body.get("required")),
                    "media_type": media,
                    "schema": pointer(schema_at) if schema is not None else None,
                }
            elif request_body is not None:
                self.problem(body_at, "a request body needs content")
        security = operation.get("security", self.document.get("security", []))
        return {
            "method": method.upper(),
            "path": template,
            "at": pointer(at),
            "summary": str(operation.get("summary") or "")[:300],
            "parameters": {place: listed for place, listed in by_place.items() if listed},
            "body": body,
            "security": self.security(
                security, [*at, "security"] if "security" in operation else ["security"]
            ),
            "unsupported": unsupported,
        }

    def security(self, requirements, parts: list) -> list[list[dict]]:
        """Each way the operation may be authorized (any one will do), each a list of schemes that
        are all sent; an empty way means none is needed."""
        if not isinstance(requirements, list):
            self.problem(parts, "expected a list of security requirements")
            return []
        schemes = _at(self.document, ["components", "securitySchemes"]) or {}
        ways = []
        for index, requirement in enumerate(requirements):
            if not isinstance(requirement, dict):
                self.problem([*parts, index], "expected a security requirement object")
                continue
            way = []
            for name in requirement:
                scheme, at = self.resolve(schemes.get(name), ["components", "securitySchemes", name])
                if not isinstance(scheme, dict):
                    self.problem([*parts, index, name], f"no security scheme {name!r} in components")
                    continue
                way.append({"scheme": name, **_how_to_send(scheme)})
            ways.append(way)
        return ways

    def base_url(self, chosen: str | None) -> str:
        if chosen:
            url, parts = chosen.strip(), ["base_url"]
        else:
            servers = self.document.get("servers")
            if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
                self.problem(
                    ["servers"], "missing: the document names no server; give a base URL to import it"
                )
                return ""
            server, parts = servers[0], ["servers", 0, "url"]
            url = server.get("url")
            if not isinstance(url, str):
                self.problem(parts, "expected a URL")
                return ""
            variables = server.get("variables") if isinstance(server.get("variables"), dict) else {}
            for name in TEMPLATE_NAME.findall(url):
                default = (
                    (variables.get(name) or {}).get("default")
                    if isinstance(variables.get(name), dict)
                    else None
                )
                if not isinstance(default, str):
                    self.problem(["servers", 0, "variables", name], "a server variable needs a default")
                    return ""
                url = url.replace("{" + name + "}", default)
        if not url.startswith(("http://", "https://")):
            self.problem(parts, f"{url!r} is not an http or https URL; give a base URL to import it")
            return ""
        parsed = parse_url(url)
        if parsed.auth or parsed.query or parsed.fragment or not parsed.host or len(url) > 2000:
            self.problem(parts, f"{url!r}: a base URL has a host and no user name, query or fragment")
            return ""
        return url.rstrip("/")


def _at(document: dict, parts: list | None):
    value = document
    for key in parts or ():
        if isinstance(value, list) and str(key).isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


def _is_json(media_type: str) -> bool:
    kind = media_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _how_to_send(scheme: dict) -> dict:
    """What a security scheme asks to be sent, in the terms of an `openapi` connection's
    credentials; `unsupported` when it cannot be (cookies, mutual TLS)."""
    kind = scheme.get("type")
    if kind == "apiKey" and scheme.get("in") in ("header", "query") and isinstance(scheme.get("name"), str):
        return {"send": "api_key", "in": scheme["in"], "name": scheme["name"]}
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "basic":
        return {"send": "basic"}
    if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
        return {"send": "bearer"}
    if kind in ("oauth2", "openIdConnect"):
        return {"send": "bearer"}  # an access token the connection holds, as a bearer token
    return {"send": "unsupported", "why": f"{kind} {scheme.get('in') or scheme.get('scheme') or ''}".strip()}


# --- checking values against the document's schemas -----------------------------------------------


def as_json_schema(document: dict) -> dict:
    """The document with OpenAPI 3.0's schema dialect spelled as JSON Schema 2020-12 (`nullable`,
    boolean `exclusiveMinimum`/`exclusiveMaximum`); a 3.1 document is already so."""
    if str(document.get("openapi", "")).startswith("3.0"):
        return _converted(document)
    return document


def _converted(value):
    if isinstance(value, list):
        return [_converted(item) for item in value]
    if not isinstance(value, dict):
        return value
    result = {key: _converted(item) for key, item in value.items()}
    if result.get("nullable") is True:
        kind = result.get("type")
        if isinstance(kind, str):
            result["type"] = [kind, "null"]
        if "enum" in result and None not in result["enum"]:
            result["enum"] = [*result["enum"], None]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(result.get(exclusive), bool):
            if result.pop(exclusive) and bound in result:
                result[exclusive] = result.pop(bound)
    return result


def registry_of(document: dict) -> Registry:
    """A registry holding the document (as JSON Schema), so `{"$ref": DOCUMENT_URI + "#/..."}` checks a
    value against one of its schemas, its own references resolved inside it."""
    resource = Resource.from_contents(as_json_schema(document), default_specification=DRAFT202012)
    return Registry().with_resource(DOCUMENT_URI, resource)
