"""A server whose model takes no images says so in a 400 (or OpenRouter's 404): that becomes
UnsupportedFeatureError, not retried, with the fix; other 400s about images stay InvalidRequestError.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from remote_support import Caller

import llmclient
from llmclient.backends.openai.failures import error_from_status
from llmclient.errors import InvalidRequestError, UnsupportedFeatureError
from llmclient.testing.server import json_reply

# Bodies as the servers returned them, quoted verbatim by users in public issues.
OPENAI_400 = {  # gpt-3.5-turbo given an image: github.com/vllm-project/vllm/issues/11629,
    "error": {  # github.com/browser-use/web-ui/issues/274 (Azure OpenAI, the same body)
        "message": "Invalid content type. image_url is only supported by certain models.",
        "type": "invalid_request_error",
        "param": "messages.[0].content.[1].type",
        "code": None,
    }
}
# OpenRouter passing OpenAI's refusal on: github.com/danny-avila/LibreChat/issues/6333
OPENROUTER_RELAYED_400 = {
    "error": {
        "code": 400,
        "message": "Provider returned error",
        "metadata": {
            "provider_name": "OpenAI",
            "raw": '{\n  "error": {\n    "message": "Invalid content type. image_url is only supported by '
            'certain models.",\n    "type": "invalid_request_error",\n    "param": '
            '"messages.[0].content.[1].type",\n    "code": null\n  }\n}',
        },
    }
}
# OpenRouter's routing refusal, quoted as "HTTP 404: No endpoints found that support image input" in
# github.com/NousResearch/hermes-agent/pull/23411, in OpenRouter's error shape.
OPENROUTER_404 = {"error": {"message": "No endpoints found that support image input", "code": 404}}
VLLM_400 = {  # vLLM serving a text-only model: github.com/studio-dots-ai/dots.ocr/issues/61
    "object": "error",
    "message": "facebook/opt-125m is not a multimodal model None",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
PLAIN_400 = {
    "error": {"message": "This model does not support image input.", "type": "invalid_request_error"}
}
NOT_SUPPORTED_400 = {"detail": "Image input is not supported for this model"}

REFUSALS = {
    "openai": (400, OPENAI_400),
    "openrouter relayed": (400, OPENROUTER_RELAYED_400),
    "openrouter 404": (404, OPENROUTER_404),
    "vllm": (400, VLLM_400),
    "does not support image input": (400, PLAIN_400),
    "image input is not supported": (400, NOT_SUPPORTED_400),
}


def image_messages() -> list[dict[str, Any]]:
    part = llmclient.image("https://example.com/cat.png")
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refusal_of_images_becomes_unsupported_feature_error(
    serve, make_backend, call: Caller, name: str
) -> None:
    status, body = REFUSALS[name]
    server = serve(lambda request: json_reply(body, status=status))
    with pytest.raises(UnsupportedFeatureError, match="does not take images") as caught:
        call.chat(make_backend(server), image_messages())
    error = caught.value
    assert "use a vision model" in error.message
    assert error.status_code == status
    assert len(server.requests) == 1  # a refusal is final: not retried


@pytest.mark.parametrize(
    "message",
    [
        "Failed to download image from https://example.com/cat.png",
        "Invalid image URL: expected a base64 data URL or an https URL",
        "No endpoints found for meta-llama/llama-9-nonexistent.",
    ],
)
def test_other_complaints_about_images_stay_invalid_request_errors(message: str) -> None:
    raw = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    error = error_from_status(400, {}, raw)
    assert type(error) is InvalidRequestError
    assert message in error.message


def test_a_flat_vllm_error_reads_its_message_rather_than_the_whole_json() -> None:
    raw = json.dumps({**VLLM_400, "message": "max_tokens must be at least 1, got 0."}).encode()
    error = error_from_status(400, {}, raw)
    assert type(error) is InvalidRequestError
    assert (
        error.message == "the server rejected the request (HTTP 400): max_tokens must be at least 1, got 0."
    )
    assert error.provider_reason == "BadRequestError"


def test_with_the_structured_fallback_an_image_refusal_is_not_taken_for_a_schema_refusal(
    serve, make_backend
) -> None:
    server = serve(lambda request: json_reply(OPENAI_400, status=400))
    backend = make_backend(server, structured_fallback="prompt")
    schema = {"type": "object", "properties": {"animal": {"type": "string"}}}
    with pytest.raises(UnsupportedFeatureError, match="does not take images"):
        backend.chat(image_messages(), response_format=schema)
    assert len(server.requests) == 1  # not resent with the schema in the prompt
    with pytest.raises(UnsupportedFeatureError):
        backend.chat(image_messages(), response_format=schema)
    assert "response_format" in server.requests[1].json()  # json_schema not remembered as refused
