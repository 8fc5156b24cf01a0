"""Structured output on the chat-completions wire: the ``response_format`` field, and replies read back.

OpenAI's strict mode (``"strict": true``, also honoured by OpenRouter, vLLM, Groq, Fireworks, ...)
accepts a subset of JSON Schema: every object closed (``additionalProperties: false``) and listing
every property in ``required``, an object at the root, no ``oneOf``, ``default`` or size keywords.
:func:`strict_schema` rewrites a schema into that subset, as pydantic-ai's OpenAI transformer and the
openai SDK's ``to_strict_json_schema`` do: optional properties become required but may be ``null``
(a union with ``null``), ``$ref`` is inlined (kept in ``$defs`` only where a schema refers to itself),
``oneOf`` becomes ``anyOf``, and keywords strict mode refuses move into the ``description``.

What is sent may be looser than what was asked; the reply is still checked against the schema the
user gave (by the base class), so nothing invalid gets through. The one thing read back differently
is ``null``: a ``null`` for an optional property whose own schema has no ``null`` means "absent"
(:func:`normalised` drops it). Pure functions, like ``wire``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from typing import Any

from llmclient.errors import UnsupportedFeatureError
from llmclient.structured import WRAPPER_KEY, OutputFormat

_DROPPED = ("$schema", "default", "discriminator")
"""Keywords strict mode refuses that carry no constraint a reply is checked by here."""
_MOVED = (
    "minLength",
    "maxLength",
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "uniqueItems",
)
"""Constraints strict mode refuses: moved into the ``description`` (the model still reads them, and
the reply is checked against them)."""
_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
"""String formats strict mode accepts; others move into the ``description``."""
_SCALARS = frozenset({"string", "number", "integer", "boolean"})


def response_format_field(fmt: OutputFormat) -> dict[str, Any]:
    """The ``response_format`` body field for ``fmt``: ``json_object``, or a strict ``json_schema``.

    A :class:`~llmclient.Choice` or :class:`~llmclient.Regex` is sent as an object with one required
    string property (``value``, an enum or an anchored ``pattern``), since strict mode wants an
    object at the root; the base class unwraps it. A schema whose root is not an object raises
    :class:`~llmclient.errors.UnsupportedFeatureError` naming the fixes.
    """
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": _strict(fmt), "strict": True}}


@functools.lru_cache(maxsize=256)
def _strict(fmt: OutputFormat) -> dict[str, Any]:
    """The strict schema of ``fmt``, made once per format."""
    if fmt.kind in ("choice", "regex"):
        value = fmt.json_schema() or {}
        if fmt.kind == "regex":  # JSON Schema patterns search; Regex means the whole text
            value["pattern"] = f"^(?:{fmt.pattern})$"
        return {
            "type": "object",
            "properties": {WRAPPER_KEY: value},
            "required": [WRAPPER_KEY],
            "additionalProperties": False,
        }
    schema = strict_schema(fmt.schema or {})
    if schema.get("type") != "object":
        raise UnsupportedFeatureError(
            f"response_format {fmt.name!r}: strict structured output needs an object at the schema's root, "
            f"got {json.dumps(fmt.schema)[:200]}. Wrap it: {{'type': 'object', 'properties': "
            f"{{'items': <your schema>}}, 'required': ['items']}}, or set structured_fallback = \"prompt\""
        )
    return schema


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` rewritten into OpenAI's strict subset (see the module's docstring)."""
    return _Strictifier(schema).run()


def _ref_key(ref: str) -> str:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    if ref == "#":
        return "#"
    raise UnsupportedFeatureError(
        f"response_format: only local references (#/$defs/...) can be sent in strict mode, got $ref {ref!r}"
    )


class _Strictifier:
    """One walk over a schema: references inlined, each node made strict."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = copy.deepcopy(dict(schema))
        self.defs: dict[str, Any] = {
            **self.root.pop("definitions", {}),
            **self.root.pop("$defs", {}),
            "#": self.root,
        }
        self.stack: list[str] = []
        self.kept: dict[str, Any] = {}  # definitions that refer to themselves, sent in $defs

    def run(self) -> dict[str, Any]:
        out: dict[str, Any] = self.node(self.root)
        while missing := [key for key, value in self.kept.items() if value is None]:
            for key in missing:
                self.stack = [key]
                self.kept[key] = self.node(self.defs[key])
        if self.kept:
            out["$defs"] = self.kept
        return out

    def node(self, schema: Any) -> Any:
        if not isinstance(schema, Mapping):
            return schema
        schema = dict(schema)
        ref = schema.pop("$ref", None)
        if isinstance(ref, str):
            key = _ref_key(ref)
            if key not in self.defs:
                raise UnsupportedFeatureError(f"response_format: $ref {ref!r} points to no definition")
            if key in self.stack:  # a schema that refers to itself: keep the reference
                self.kept.setdefault(key, None)
                target = "#" if key == "#" else f"#/$defs/{key}"
                return {"anyOf": [{"$ref": target}], **self.node(schema)} if schema else {"$ref": target}
            self.stack.append(key)
            try:
                return self.node({**self.defs[key], **schema})  # the reference's siblings win
            finally:
                self.stack.pop()
        return self._strict_node(schema)

    def _strict_node(self, schema: dict[str, Any]) -> dict[str, Any]:
        for key in _DROPPED:
            schema.pop(key, None)
        moved = [f"{key}={schema.pop(key)!r}" for key in _MOVED if key in schema]
        if "format" in schema and schema["format"] not in _FORMATS:
            moved.append(f"format={schema.pop('format')!r}")
        if moved:
            notes = ", ".join(moved)
            schema["description"] = (
                f"{schema['description']} ({notes})" if schema.get("description") else notes
            )
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
        if "anyOf" in schema:
            schema["anyOf"] = [self.node(member) for member in schema["anyOf"]]
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            del schema["allOf"]
            schema = {**self.node(all_of[0]), **schema}
        if "items" in schema:
            schema["items"] = self.node(schema["items"])
        if "prefixItems" in schema:
            schema["prefixItems"] = [self.node(item) for item in schema["prefixItems"]]
        if schema.get("type") == "object" or "properties" in schema:
            self._close_object(schema)
        return schema

    def _close_object(self, schema: dict[str, Any]) -> None:
        required = set(schema.get("required") or ())
        properties = {key: self.node(value) for key, value in (schema.get("properties") or {}).items()}
        schema["properties"] = {
            key: value if key in required else _or_null(value) for key, value in properties.items()
        }
        schema["required"] = list(properties)
        schema["additionalProperties"] = False
        schema.setdefault("type", "object")


def _or_null(schema: Any) -> Any:
    """``schema``, or ``null``: how strict mode says a property may be left out."""
    if admits_null(schema):
        return schema
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _SCALARS and "enum" not in schema and "const" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def admits_null(schema: Any, root: Mapping[str, Any] | None = None) -> bool:
    """Whether ``null`` can match ``schema`` (references followed in ``root``, where given)."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        return False
    if root is not None and isinstance(schema.get("$ref"), str):
        return admits_null(_resolve(schema, root), None)
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if "const" in schema:
        return schema["const"] is None
    if "enum" in schema:
        return None in schema["enum"]
    members = [*schema.get("anyOf", ()), *schema.get("oneOf", ())]
    if members:
        return any(admits_null(member, root) for member in members)
    return kind is None and "$ref" not in schema and "allOf" not in schema


def _resolve(schema: Any, root: Mapping[str, Any]) -> Any:
    """``schema`` with its ``$ref`` (a local one) followed, a few levels at most."""
    for _ in range(8):
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else ():
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        schema = target
    return schema


def absent_nulls(value: Any, schema: Any, root: Mapping[str, Any]) -> Any:
    """``value`` without the ``null`` of optional properties whose schema has no ``null``.

    Strict mode makes such properties required-or-null; this reads ``null`` back as "left out", so
    the value checks against the schema the user gave. A union is followed where only one of its
    members is not ``null``.
    """
    schema = _resolve(schema, root)
    if not isinstance(schema, Mapping):
        return value
    members = [*schema.get("anyOf", ()), *schema.get("oneOf", ()), *schema.get("allOf", ())]
    if members:
        real = [m for m in members if not (isinstance(m, Mapping) and m.get("type") == "null")]
        return absent_nulls(value, real[0], root) if len(real) == 1 else value
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [absent_nulls(item, schema["items"], root) for item in value]
    properties = schema.get("properties")
    if not isinstance(value, dict) or not isinstance(properties, Mapping):
        return value
    required = set(schema.get("required") or ())
    out = {}
    for key, item in value.items():
        sub = properties.get(key)
        if sub is not None and item is None and key not in required and not admits_null(sub, root):
            continue
        out[key] = item if sub is None else absent_nulls(item, sub, root)
    return out


def unfenced(text: str) -> str:
    """``text`` without a Markdown code fence around the whole of it (```` ```json ... ``` ````)."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3].strip()
    return text


def normalised(fmt: OutputFormat, text: str) -> str:
    """The reply's text as the user's schema reads it: unfenced, optional nulls left out.

    Unchanged when there is nothing to change, so a reply is rewritten only where it must be.
    """
    inner = unfenced(text)
    if fmt.kind != "json_schema" or fmt.schema is None:
        return inner
    try:
        value = json.loads(inner)
    except ValueError:
        return inner
    cleaned = absent_nulls(value, fmt.schema, fmt.schema)
    return inner if cleaned == value else json.dumps(cleaned, ensure_ascii=False)


class StrictFormat(OutputFormat):
    """An :class:`OutputFormat` that reads a reply as :func:`normalised` does, equal to the one it
    copies (the same cassette and resume keys): what a remote backend's streams are checked by.
    """

    __slots__ = ()

    @classmethod
    def of(cls, fmt: OutputFormat) -> StrictFormat:
        """``fmt`` as a :class:`StrictFormat`."""
        if isinstance(fmt, StrictFormat):
            return fmt
        return cls(
            fmt.kind,
            schema=fmt.schema,
            name=fmt.name,
            choices=fmt.choices,
            pattern=fmt.pattern,
            model=fmt.model,
        )

    def _parse(self, text: str) -> Any:
        return super()._parse(normalised(self, text))
