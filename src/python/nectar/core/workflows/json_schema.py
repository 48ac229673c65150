"""JSON Schema (draft 2020-12) for schemas tenants write, and for checking data against any schema.

Tenants' `pattern` and `patternProperties` are regular expressions. Python's `re` backtracks:
`^(a+)+$` took 6.6 s on a 27-character body, doubling per character, and held the interpreter lock
all along. Here every regular expression runs on RE2, in time linear in the text; a pattern RE2
cannot run (backreferences, lookaround) is refused when its schema is saved (`schema_problems`).
Patterns keep their JSON Schema meaning: unanchored (a search), with ECMA-262's \\uXXXX escapes.

jsonschema matches patterns with `re` in four keywords (pattern, patternProperties,
additionalProperties, unevaluatedProperties); `TenantValidator` replaces each, makes uniqueItems
linear rather than quadratic, and checks the thread's time limit (time_limit.py) before every
keyword, so validation counts against its call's time limit however its schema nests.
"""

from __future__ import annotations

import functools
from string import hexdigits

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema._keywords import additionalProperties as _additional_properties
from jsonschema.exceptions import ValidationError
from referencing import Registry

from nectar.core.workflows import time_limit

# RE2's memory for one compiled pattern, program and matching cache together: enough for
# ^[\p{L} .'-]{1,200}$ (1 MiB was not), and a pattern that needs more is refused when saved.
# Matching never takes more: RE2 falls back to a slower, still linear, engine when its cache is full.
PATTERN_MAX_MEMORY = 4 << 20
PATTERNS_KEPT = 128  # compiled patterns kept per process (most recently used): 512 MiB at the very most


class PatternRefused(ValueError):
    """A regular expression RE2 cannot run (a backreference, lookaround, or too big)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEMORY
    options.log_errors = False  # a refused pattern is the tenant's, reported to them, not logged
    return options


def _as_re2(pattern: str) -> str:
    """ECMA-262's \\uXXXX escapes in RE2's spelling, \\x{XXXX}; the rest means the same to both."""
    if "\\u" not in pattern:
        return pattern
    parts, index = [], 0
    while index < len(pattern):
        if pattern[index] != "\\":
            parts.append(pattern[index])
            index += 1
            continue
        digits = pattern[index + 2 : index + 6]
        if pattern[index + 1 : index + 2] == "u" and len(digits) == 4 and all(c in hexdigits for c in digits):
            parts.append(f"\\x{{{digits}}}")
            index += 6
        else:  # any other escape, an escaped backslash included, stays as it is
            parts.append(pattern[index : index + 2])
            index += 2
    return "".join(parts)


@functools.lru_cache(maxsize=PATTERNS_KEPT)
def compile_pattern(pattern: str):
    """`pattern` (a JSON Schema regular expression) compiled by RE2; raises PatternRefused, saying
    why, for one RE2 cannot run."""
    try:
        return re2.compile(_as_re2(pattern), _options())
    except re2.error as error:
        reason = error.args[0] if error.args else "not a regular expression"
        raise PatternRefused(
            reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        ) from None


def pattern_found(pattern: str, text: str) -> bool:
    """Whether `pattern` matches anywhere in `text`, as JSON Schema's `pattern` asks; raises
    PatternRefused for a pattern RE2 cannot run."""
    # A lone surrogate (JSON's "\\ud800") goes in as the bytes UTF-8 would give it, not refused.
    return compile_pattern(pattern).search(text.encode("utf-8", "surrogatepass")) is not None


# --- checking a schema when it is saved -----------------------------------------------------------

_SCHEMA_FORMATS = FormatChecker()


@_SCHEMA_FORMATS.checks("regex", raises=PatternRefused)
def _runs_on_re2(instance) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=_SCHEMA_FORMATS)


def pointer(parts) -> str:
    """The JSON Pointer (RFC 6901) of a path given as its keys and indexes."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def schema_problems(schema) -> list[tuple[str, str]]:
    """(JSON Pointer within `schema`, message) for each way `schema` is not a draft 2020-12 schema
    this module can run, a pattern RE2 cannot run included; empty when it is fine."""
    problems = []
    try:
        errors = list(_META_VALIDATOR.iter_errors(schema))
    except RecursionError:
        return [("", "it nests too deeply")]
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "format" and error.validator_value == "regex":
            if "propertyNames" in error.absolute_schema_path:
                path.append(error.instance)  # a patternProperties key: point at it, not at its object
            message = (
                f"{error.instance!r} is not a pattern this service can run ({error.cause}); "
                "backreferences and lookaround are not supported"
            )
        else:
            message = error.message
        problems.append((pointer(path), message))
    return sorted(problems)


# --- checking data against a schema ---------------------------------------------------------------


def _matches(pattern: str, text: str) -> bool:
    """pattern_found, where a pattern RE2 cannot run (saved before patterns were checked) matches
    nothing; the keyword that holds it reports it."""
    try:
        return pattern_found(pattern, text)
    except PatternRefused:
        return False


def _refused(pattern: str) -> ValidationError | None:
    try:
        compile_pattern(pattern)
    except PatternRefused as error:  # the schema's fault, answered as a problem, never a 500
        return ValidationError(f"the schema's pattern {pattern!r} cannot be run: {error}")
    return None


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield _refused(pattern) or ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        time_limit.check()
        if (refused := _refused(pattern)) is not None:
            yield refused
            continue
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties_on_re2(validator, additional, instance, schema):
    if not validator.is_type(instance, "object") or "patternProperties" not in schema:
        yield from _additional_properties(validator, additional, instance, schema)  # no pattern to match
        return
    properties, patterns = schema.get("properties", {}), schema["patternProperties"]
    extras = sorted(
        key for key in instance if key not in properties and not any(_matches(p, key) for p in patterns)
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        verb = "does" if len(extras) == 1 else "do"
        yield ValidationError(
            f"{', '.join(repr(each) for each in extras)} {verb} not match any of the regexes: "
            f"{', '.join(repr(each) for each in sorted(patterns))}"
        )


def _valid(errors) -> bool:
    return next(iter(errors), None) is None


def _evaluated_keys(validator, instance: dict, schema) -> list[str]:
    """The keys some keyword of `schema` evaluated (jsonschema's
    find_evaluated_property_keys_by_schema, matching patterns on RE2)."""
    if validator.is_type(schema, "boolean"):
        return []
    time_limit.check()
    keys = []
    for reference in ("$ref", "$dynamicRef"):
        if (ref := schema.get(reference)) is not None:
            resolved = validator._resolver.lookup(ref)
            inner = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys += _evaluated_keys(inner, instance, resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys += [key for key, value in instance.items() if _valid(validator.descend(value, subschema))]
    for pattern in schema.get("patternProperties", {}):
        keys += [key for key in instance if _matches(pattern, key)]
    for key, subschema in schema.get("dependentSchemas", {}).items():
        if key in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(validator, unevaluated, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    failed = [
        key
        for key in instance
        if key not in evaluated
        and not _valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
    ]
    if failed:
        listed = ", ".join(repr(key) for key in sorted(failed))
        if unevaluated is False:
            verb = "was" if len(failed) == 1 else "were"
            yield ValidationError(f"Unevaluated properties are not allowed ({listed} {verb} unexpected)")
        else:
            yield ValidationError(f"Unevaluated properties are not valid under the given schema ({listed})")


def _canonical(value):
    """A hashable form of a JSON value, equal for values JSON Schema calls equal (1 and 1.0; objects
    whatever their key order) and different for true and 1."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    return ("string", value)


def _unique_items(validator, unique, instance, schema):
    # jsonschema compares items pairwise when they do not sort (objects): quadratic in the body.
    if unique and validator.is_type(instance, "array"):
        seen = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{instance!r} has non-unique elements")
                return
            seen.add(key)


def _within_time_limit(keyword):
    def checked(validator, value, instance, schema):
        time_limit.check()
        return keyword(validator, value, instance, schema)

    return checked


TenantValidator = validators.extend(
    Draft202012Validator,
    {
        name: _within_time_limit(keyword)
        for name, keyword in {
            **Draft202012Validator.VALIDATORS,
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties_on_re2,
            "unevaluatedProperties": _unevaluated_properties,
            "uniqueItems": _unique_items,
        }.items()
    },
)


def validator(schema, *, check_formats: bool = False, registry: Registry | None = None):
    """A validator of data against `schema` that never fetches anything (no remote $ref: only
    what `registry` holds) and runs its patterns on RE2; `check_formats` asserts `format` (an
    annotation by default)."""
    return TenantValidator(
        schema,
        registry=registry or Registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER if check_formats else None,
    )
