"""A Python function's tool schema, read from its type hints and its Google-style docstring.

The rules are those of ``transformers.utils.get_json_schema`` (so a function written for a chat
template's ``tools`` reads the same here), written without importing transformers, with three
differences: a missing docstring or argument description leaves the description out instead of
failing; an optional type is written as JSON Schema (``{"type": ["string", "null"]}``), not
OpenAPI's ``nullable``; and a JSON-plain default is written as ``default``.

- The description is the docstring up to ``Args:``, ``Returns:`` or ``Raises:``.
- Each ``name: text`` line of ``Args:`` describes that argument (continuation lines are joined); a
  trailing ``(choices: ["a", "b"])`` becomes an ``enum``.
- ``int``, ``float``, ``str``, ``bool``, ``None``, ``list[T]``, ``tuple[A, B]``, ``dict[str, T]``,
  ``Literal[...]``, ``Enum`` classes, unions and ``Optional`` map to their JSON Schema; ``Any`` to no
  constraint. An argument without a default is required; ``self``/``cls`` without a hint and
  ``*args``/``**kwargs`` are left out.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from llmclient.errors import InvalidRequestError

_DESCRIPTION = re.compile(r"^(.*?)[\n\s]*(Args:|Returns:|Raises:|\Z)", re.DOTALL)
_ARGS = re.compile(r"\n\s*Args:\n(.*?)[\n\s]*(Returns:|Raises:|\Z)", re.DOTALL)
_ARG = re.compile(  # "name:" or "name (type):" and its text, up to the next name not indented deeper
    r"(?:^|\n)([ \t]*)(\w+)(?:[ \t]*\([^()\n]*\))?:\s*(.*?)\s*"
    r"(?=\n(?!\1[ \t])[ \t]*\w+(?:[ \t]*\([^()\n]*\))?:|\Z)",
    re.DOTALL,
)
_CHOICES = re.compile(r"\(choices:\s*(.*?)\)\s*$", re.IGNORECASE)
_SCALARS: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    type(None): "null",
}
_PLAIN: dict[Any, dict[str, Any]] = {
    **{t: {"type": name} for t, name in _SCALARS.items()},
    list: {"type": "array"},
    tuple: {"type": "array"},
    dict: {"type": "object"},
    Any: {},
}


def function_schema(function: Callable[..., Any], *, where: str = "tool") -> tuple[str, dict[str, Any]]:
    """``function``'s description and the JSON Schema of its arguments.

    Raises :class:`~llmclient.errors.InvalidRequestError` naming ``where`` and the argument when an
    argument has no type hint or one with no JSON form (a custom class: write the tool as a dict).
    """
    description, described = _docstring(inspect.getdoc(function) or "")
    try:
        hints = get_type_hints(function)
    except Exception as exc:  # a hint that does not resolve: a NameError, a bad forward reference
        raise InvalidRequestError(f"{where}: its type hints do not resolve: {exc}") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    parameters = list(inspect.signature(function).parameters.values())
    for position, parameter in enumerate(parameters):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if position == 0 and parameter.name in ("self", "cls") and parameter.name not in hints:
            continue
        if parameter.name not in hints:
            raise InvalidRequestError(
                f"{where}: argument {parameter.name!r} has no type hint; every argument the model fills "
                f"needs one (str, int, Literal[...], ...)"
            )
        try:
            schema = _schema_of(hints[parameter.name])
        except TypeError as exc:
            raise InvalidRequestError(f"{where}: argument {parameter.name!r}: {exc}") from None
        text = described.get(parameter.name)
        if text:
            choices = _CHOICES.search(text)
            if choices:
                schema["enum"] = json.loads(choices.group(1))
                text = text[: choices.start()].strip()
            schema["description"] = text
        if parameter.default is parameter.empty:
            required.append(parameter.name)
        elif _is_plain_json(parameter.default):
            schema["default"] = parameter.default
        properties[parameter.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return description, out


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description and each argument's text, from a Google-style docstring."""
    doc = doc.strip()
    found = _DESCRIPTION.search(doc)
    description = found.group(1).strip() if found else ""
    block = _ARGS.search(doc)
    if block is None:
        return description, {}
    lines = "\n".join(line for line in block.group(1).split("\n") if line.strip())
    return description, {m[1]: re.sub(r"\s*\n+\s*", " ", m[2].strip()) for m in _ARG.findall(lines)}


def _schema_of(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one type hint; :class:`TypeError` saying why when it has none."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Annotated:
        return _schema_of(args[0])
    if origin is None and isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum([member.value for member in hint], f"the Enum {hint.__name__}")
    if origin is None:
        if hint in _PLAIN:
            return dict(_PLAIN[hint])
        raise TypeError(
            f"the type {hint!r} has no JSON Schema here (a custom class?); use str, int, float, bool, "
            f"Literal, Enum, list, dict or unions of them, or pass the tool as a JSON Schema dict"
        )
    if origin is Union or origin is types.UnionType:
        options = [_schema_of(a) for a in args]
        if all(set(o) == {"type"} and isinstance(o["type"], str) for o in options):
            names = list(dict.fromkeys(o["type"] for o in options))
            return {"type": names[0] if len(names) == 1 else names}
        return {"anyOf": options}
    if origin is Literal:
        return _enum(list(args), "a Literal")
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if not args or ... in args:
            return {"type": "array", "items": _schema_of(args[0])} if args else {"type": "array"}
        return {"type": "array", "prefixItems": [_schema_of(a) for a in args], "minItems": len(args)}
    if origin is dict:
        out: dict[str, Any] = {"type": "object"}
        if len(args) == 2:
            out["additionalProperties"] = _schema_of(args[1])
        return out
    raise TypeError(f"the type {hint!r} has no JSON Schema here; pass the tool as a JSON Schema dict")


def _enum(values: list[Any], what: str) -> dict[str, Any]:
    if not values or any(type(v) not in _SCALARS for v in values):
        raise TypeError(f"{what} needs values that are JSON scalars (str, int, float, bool, None)")
    names = list(dict.fromkeys(_SCALARS[type(v)] for v in values))
    return {"type": names[0] if len(names) == 1 else names, "enum": values}


def _is_plain_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
