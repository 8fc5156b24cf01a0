"""llmclient: one prompt pipeline, any backend.

Run the same chat calls on a local Hugging Face model or on any OpenAI-compatible API, chosen by
configuration::

    import llmclient

    backend = llmclient.load("openrouter:meta-llama/llama-3.1-8b-instruct")
    reply = backend.chat([{"role": "user", "content": "Hi"}], max_new_tokens=64, temperature=0)
    print(reply.text, reply.finish_reason, reply.usage)

Importing this package is cheap: HTTP stacks, torch and transformers load only when a backend that
needs them is built.
"""

from llmclient.backend import ChatBackend, Messages
from llmclient.config import BackendConfig, ConfigFile, load
from llmclient.errors import (
    AuthenticationError,
    BackendClosedError,
    BackendUnavailableError,
    CassetteError,
    ChatTemplateError,
    ConfigError,
    ContextWindowExceededError,
    InvalidRequestError,
    LLMClientError,
    MalformedResponseError,
    ModelLoadError,
    ProviderError,
    RateLimitError,
    StructuredOutputError,
    TimeoutError,
    UnsupportedFeatureError,
)
from llmclient.images import image
from llmclient.logprobs import CandidateScore, TokenLogprob
from llmclient.registry import backend_types, register
from llmclient.stream import AsyncChatStream, ChatStream
from llmclient.structured import JSON, Choice, OutputFormat, Regex
from llmclient.tools import Tool, ToolCall, ToolCallError, ToolRun, arun_tools, run_tools, tool_result
from llmclient.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    GenerationOptions,
    GenerationParams,
    Message,
    MessageLike,
    Role,
    StreamDelta,
    Usage,
)
from llmclient.wrapper import WrapperBackend

__version__ = "0.1.0"

__all__ = [
    "JSON",
    "AsyncChatStream",
    "AuthenticationError",
    "BackendClosedError",
    "BackendConfig",
    "BackendUnavailableError",
    "CandidateScore",
    "CassetteError",
    "ChatBackend",
    "ChatRequest",
    "ChatResponse",
    "ChatStream",
    "ChatTemplateError",
    "Choice",
    "ConfigError",
    "ConfigFile",
    "ContextWindowExceededError",
    "FinishReason",
    "GenerationOptions",
    "GenerationParams",
    "InvalidRequestError",
    "LLMClientError",
    "MalformedResponseError",
    "Message",
    "MessageLike",
    "Messages",
    "ModelLoadError",
    "OutputFormat",
    "ProviderError",
    "RateLimitError",
    "Regex",
    "Role",
    "StreamDelta",
    "StructuredOutputError",
    "TimeoutError",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallError",
    "ToolRun",
    "UnsupportedFeatureError",
    "Usage",
    "WrapperBackend",
    "__version__",
    "arun_tools",
    "backend_types",
    "image",
    "load",
    "register",
    "run_tools",
    "tool_result",
]
