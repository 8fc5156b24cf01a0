"""Messages, finish reasons and usage: the value types every backend speaks."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llmclient import ChatRequest, GenerationParams, InvalidRequestError, Message, Usage
from llmclient.types import TEXT_PART_SEPARATOR, normalise_finish_reason, to_message, to_messages

IMAGE_PART: dict[str, Any] = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


# -- messages accepted --------------------------------------------------------------------------


def test_plain_openai_dicts_become_messages() -> None:
    messages = to_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
        ]
    )
    assert messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Hi", name="ann"),
    ]


def test_message_objects_are_accepted_as_they_are() -> None:
    message = Message(role="assistant", content="Hello")
    assert to_messages([message])[0] is message


def test_dicts_and_message_objects_can_be_mixed() -> None:
    messages = to_messages([{"role": "user", "content": "a"}, Message(role="assistant", content="b")])
    assert [m.role for m in messages] == ["user", "assistant"]
    assert [m.text for m in messages] == ["a", "b"]


def test_a_bare_string_becomes_one_user_message() -> None:
    assert to_messages("What is 2+2?") == [Message(role="user", content="What is 2+2?")]


def test_any_iterable_of_messages_is_accepted() -> None:
    generator = ({"role": "user", "content": str(i)} for i in range(3))
    assert [m.text for m in to_messages(generator)] == ["0", "1", "2"]


def test_tool_call_fields_round_trip_to_the_wire_form() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assistant = to_message({"role": "assistant", "content": None, "tool_calls": [call]})
    tool = to_message({"role": "tool", "content": "42", "tool_call_id": "call_1"})
    assert assistant.to_dict() == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert tool.to_dict() == {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    assert assistant.text == ""


def test_to_dict_leaves_out_fields_that_are_not_set() -> None:
    assert Message(role="user", content="Hi").to_dict() == {"role": "user", "content": "Hi"}


def test_a_message_without_content_gets_empty_text() -> None:
    assert to_message({"role": "user"}).text == ""


# -- multimodal content -------------------------------------------------------------------------


def test_multimodal_content_parts_keep_their_shape() -> None:
    parts = [{"type": "text", "text": "What is in "}, IMAGE_PART, {"type": "text", "text": "this image?"}]
    message = to_message({"role": "user", "content": parts})
    assert message.content == parts
    assert message.to_dict() == {"role": "user", "content": parts}


def test_message_text_joins_only_the_text_parts() -> None:
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "What is in"},
        IMAGE_PART,
        {"type": "text", "text": "this image?"},
    ]
    assert Message(role="user", content=parts).text == "What is in this image?"


def test_text_parts_are_joined_by_one_space_as_transformers_serve_does() -> None:
    # issue 12 item 24: they were glued together ("Name threecolours.")
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
    assert to_message({"role": "user", "content": parts}).text == "Name three colours."
    assert TEXT_PART_SEPARATOR == " "
    # each part's own text is kept as it is: no stripping, no collapsing
    spaced = [{"type": "text", "text": "a "}, {"type": "text", "text": "\nb"}]
    assert Message(role="user", content=spaced).text == "a  \nb"


# -- messages refused ---------------------------------------------------------------------------


def test_a_bad_role_names_the_message_index_and_the_allowed_roles() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages([{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}])
    message = str(info.value)
    assert "messages[1]" in message
    assert "'robot'" in message
    assert "assistant" in message and "system" in message


def test_a_near_miss_role_gets_a_did_you_mean() -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\].*'assitant'.*did you mean 'assistant'\?"):
        to_messages([{"role": "assitant", "content": "x"}])


def test_a_missing_role_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\] has role None"):
        to_messages([{"content": "x"}])


def test_an_unknown_key_is_named_with_the_allowed_keys() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b", "text": "c"}])
    message = str(info.value)
    assert "messages[1]" in message
    assert "['text']" in message
    assert "tool_call_id" in message  # the allowed keys are listed


@pytest.mark.parametrize("content", [42, {"type": "text", "text": "x"}, b"bytes"])
def test_a_wrong_content_type_names_the_index_and_the_type(content: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages([{"role": "user", "content": "ok"}, {"role": "user", "content": content}])
    message = str(info.value)
    assert "messages[1].content" in message
    assert type(content).__name__ in message


@pytest.mark.parametrize("parts", [["plain string"], [1], [{"text": "no type"}]])
def test_content_parts_must_be_typed_dicts(parts: list[object]) -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content\[0\]"):
        to_messages([{"role": "user", "content": parts}])


def test_a_message_that_is_not_a_dict_names_the_index_and_the_type() -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[2\].*got int"):
        to_messages([{"role": "user", "content": "a"}, Message(role="assistant", content="b"), 7])  # type: ignore[list-item]


def test_an_empty_conversation_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="messages is empty"):
        to_messages([])


def test_invalid_request_error_carries_its_message() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_messages([])
    assert info.value.message == str(info.value)
    assert info.value.status_code is None


# -- finish reasons and usage -------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls", "content_filter"])
def test_standard_finish_reasons_are_kept(reason: str) -> None:
    assert normalise_finish_reason(reason) == reason


@pytest.mark.parametrize(
    ("native", "normal"),
    [
        ("max_tokens", "length"),
        ("model_length", "length"),
        ("function_call", "tool_calls"),
        ("tool_use", "tool_calls"),
        ("eos", "stop"),
        ("eos_token", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("content_filtered", "content_filter"),
    ],
)
def test_vendor_finish_reasons_are_folded_in(native: str, normal: str) -> None:
    assert normalise_finish_reason(native) == normal


@pytest.mark.parametrize("reason", [None, "", "weird_new_reason", "STOP"])
def test_unknown_finish_reasons_become_none(reason: str | None) -> None:
    assert normalise_finish_reason(reason) is None


def test_usage_total_is_prompt_plus_completion() -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=30)
    assert usage.total_tokens == 42
    assert usage.to_dict() == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}


def test_empty_usage_counts_zero() -> None:
    assert Usage().to_dict() == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_value_types_are_frozen() -> None:
    message = Message(role="user", content="x")
    with pytest.raises(AttributeError):
        message.content = "y"  # type: ignore[misc]
    request = ChatRequest(messages=(message,), params=GenerationParams())
    with pytest.raises(AttributeError):
        request.messages = ()  # type: ignore[misc]


def test_role_error_lists_every_role_sorted() -> None:
    with pytest.raises(InvalidRequestError) as info:
        to_message({"role": "x"}, 3)
    roles = re.search(r"expected one of (\[.*?\])", str(info.value))
    assert roles is not None
    assert roles.group(1) == "['assistant', 'developer', 'system', 'tool', 'user']"
