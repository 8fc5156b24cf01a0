"""The strict schema sent for a ``response_format``, against what the openai SDK itself sends, and how a
strict reply reads back against the schema the user gave."""

from __future__ import annotations

import copy
from typing import Any, Literal

from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from llmclient.backends.openai.schemas import normalised, strict_schema, unfenced
from llmclient.structured import output_format


class Item(BaseModel):
    name: str
    quantity: int


class Ticket(BaseModel):
    customer: str
    sentiment: Literal["positive", "negative", "mixed"]
    items: list[Item]
    refund: float | None


class Node(BaseModel):
    label: str
    children: list[Node]


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The SDK's schema with its (non-recursive) ``$defs`` inlined, as we send it."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def test_a_model_with_required_fields_matches_the_openai_sdk_once_inlined() -> None:
    assert strict_schema(Ticket.model_json_schema()) == _inlined(to_strict_json_schema(Ticket))


def test_a_recursive_model_keeps_its_reference_in_defs() -> None:
    ours = strict_schema(Node.model_json_schema())
    theirs = to_strict_json_schema(Node)
    assert ours["$defs"]["Node"] == theirs["$defs"]["Node"]
    assert ours["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert ours["required"] == ["label", "children"] and ours["additionalProperties"] is False


def test_one_of_becomes_any_of_and_a_single_all_of_is_merged() -> None:
    schema = {
        "type": "object",
        "properties": {
            "pet": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "owner": {"allOf": [{"type": "object", "properties": {"name": {"type": "string"}}}]},
        },
        "required": ["pet", "owner"],
    }
    out = strict_schema(schema)
    assert out["properties"]["pet"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert out["properties"]["owner"] == {
        "type": "object",
        "properties": {"name": {"type": ["string", "null"]}},
        "required": ["name"],
        "additionalProperties": False,
    }


def test_an_open_object_is_closed() -> None:
    out = strict_schema({"type": "object", "properties": {}, "additionalProperties": True})
    assert out == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


def test_nulls_strict_mode_added_read_as_left_out_but_real_nulls_stay() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": ["string", "null"]},
            "rows": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "integer"}}}},
        },
        "required": ["rows"],
    }
    fmt = output_format(schema)
    text = '{"a": null, "b": null, "rows": [{"c": null}, {"c": 2}]}'
    assert normalised(fmt, text) == '{"b": null, "rows": [{}, {"c": 2}]}'
    assert normalised(fmt, '{"b": "x", "rows": []}') == '{"b": "x", "rows": []}'  # untouched


def test_a_fenced_reply_is_unfenced() -> None:
    assert unfenced('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert unfenced("plain") == "plain"
