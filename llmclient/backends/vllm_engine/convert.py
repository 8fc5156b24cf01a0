"""llmclient's values as vLLM's, and vLLM's outputs and errors as llmclient's: pure functions.

Nothing here imports vLLM: parameters become the keyword arguments of ``SamplingParams`` (and of
``StructuredOutputsParams``), which :mod:`.engine` builds; outputs are read by attribute
(``RequestOutput``, ``CompletionOutput``, ``Logprob``), so these rules are tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmclient.backends.vllm_engine.settings import DEFAULT_MAX_NEW_TOKENS
from llmclient.errors import (
    ChatTemplateError,
    ContextWindowExceededError,
    InvalidRequestError,
    LLMClientError,
    ProviderError,
    UnsupportedFeatureError,
)
from llmclient.structured import OutputFormat
from llmclient.types import (
    ChatResponse,
    GenerationParams,
    Message,
    StreamDelta,
    TokenLogprob,
    Usage,
    normalise_finish_reason,
)

MODEL_DEFAULT_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)
"""The model's generation-config values (as vLLM reads them) that apply where a call sets none;
``max_new_tokens`` is not one: llmclient's default applies, as on the local backend."""
_MAPPED = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_new_tokens",
    "stop": "stop",
    "seed": "seed",
    "logprobs": "logprobs / top_logprobs",
    "structured_outputs": "response_format",
    "guided_decoding": "response_format",
    "output_kind": "stream()",
    "n": "chat_many with the conversation repeated",
}


def sampling_kwargs(params: GenerationParams, model_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``vllm.SamplingParams`` for ``params``.

    Values a call leaves unset follow the model's generation config (``model_defaults``, vLLM's
    ``get_diff_sampling_param()``); an unset temperature the model's config does not set either is
    greedy, as on the local backend (vLLM's own default would sample at 1.0). ``max_new_tokens``
    becomes ``max_tokens`` (256 when unset), ``logprobs`` the number of alternatives per token (0 for
    the chosen token only), and ``extra`` adds any other ``SamplingParams`` field
    (``repetition_penalty``, ``min_p``, ...); an ``extra`` key that one of llmclient's parameters
    sets is refused, naming that parameter.
    """
    kwargs: dict[str, Any] = {k: model_defaults[k] for k in MODEL_DEFAULT_KEYS if k in model_defaults}
    temperature = params.temperature if params.temperature is not None else kwargs.get("temperature", 0)
    kwargs["temperature"] = float(temperature)
    if params.top_p is not None:
        kwargs["top_p"] = params.top_p
    if params.top_k is not None:
        kwargs["top_k"] = params.top_k
    kwargs["max_tokens"] = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.wants_logprobs:
        kwargs["logprobs"] = params.top_logprobs or 0
    for key, value in params.extra.items():
        if key in _MAPPED:
            raise InvalidRequestError(
                f"extra={{{key!r}: ...}} is set through llmclient's own parameter: use {_MAPPED[key]}"
            )
        kwargs[key] = value
    return kwargs


def structured_spec(fmt: OutputFormat | None) -> dict[str, Any] | None:
    """The keyword arguments of vLLM's ``StructuredOutputsParams`` for ``fmt``; ``None`` without one.

    A JSON Schema keeps objects closed where the schema does not say otherwise
    (``disable_additional_properties``, as the local backend's grammars do), a Choice is vLLM's
    ``choice``, a Regex its ``regex``, ``llmclient.JSON`` its ``json_object``.
    """
    if fmt is None:
        return None
    if fmt.kind == "json_schema":
        return {"json": fmt.json_schema(), "disable_additional_properties": True}
    if fmt.kind == "choice":
        return {"choice": list(fmt.choices or ())}
    if fmt.kind == "regex":
        return {"regex": fmt.pattern}
    return {"json_object": True}


def conversation(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as ``LLM.chat`` takes them: OpenAI dicts, ``developer`` spoken as ``system``, and text
    parts joined as :attr:`Message.text` joins them (other parts, images, passed through as they are).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item = message.to_dict()
        if message.role == "developer":
            item["role"] = "system"
        content = message.content
        if content is None or (isinstance(content, list) and all(p.get("type") == "text" for p in content)):
            item["content"] = message.text
        out.append(item)
    return out


def token_logprobs(
    token_ids: Sequence[int], entries: Sequence[Mapping[int, Any]] | None, top_n: int
) -> list[TokenLogprob]:
    """The per-position logprob dicts of vLLM (token id to ``Logprob``) as one entry per generated token.

    Each dict holds the chosen token and the ``top_n`` most likely ones (ranked from 1); the
    chosen token is the one ``token_ids`` names, whatever its rank.
    """
    out: list[TokenLogprob] = []
    for token_id, entry in zip(token_ids, entries or (), strict=False):
        chosen = entry.get(token_id)
        if chosen is None:
            continue
        ranked = sorted(
            (lp for lp in entry.values() if lp.rank is not None and lp.rank <= top_n), key=lambda lp: lp.rank
        )
        out.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=float(chosen.logprob),
                top=[(lp.decoded_token or "", float(lp.logprob)) for lp in ranked],
            )
        )
    return out


def response(output: Any, model: str, params: GenerationParams) -> ChatResponse:
    """A finished ``RequestOutput`` as a reply: text, finish reason, usage and, where asked, logprobs."""
    completion = output.outputs[0]
    finish, details = _finish(completion)
    return ChatResponse(
        text=completion.text,
        finish_reason=finish,
        usage=Usage(
            prompt_tokens=len(output.prompt_token_ids or ()), completion_tokens=len(completion.token_ids)
        ),
        model=model,
        details=details,
        logprobs=_logprobs(completion, params),
    )


def delta(output: Any, params: GenerationParams, prompt_tokens: int, generated: int) -> StreamDelta:
    """A ``RequestOutput`` of a stream (``RequestOutputKind.DELTA``) as one delta; the last carries
    the finish reason and the usage of the whole reply (``generated`` tokens in all).
    """
    completion = output.outputs[0]
    finish, details = _finish(completion) if output.finished else (None, {})
    return StreamDelta(
        text=completion.text,
        finish_reason=finish,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=generated) if output.finished else None,
        details=details,
        logprobs=_logprobs(completion, params),
    )


def engine_error(exc: BaseException, params: GenerationParams) -> LLMClientError:
    """What vLLM raised for a request, as llmclient's typed error (raised ``from`` it by the caller).

    A prompt over the engine's window is :class:`ContextWindowExceededError`; a template failure
    :class:`ChatTemplateError`; a refused ``response_format`` :class:`UnsupportedFeatureError`;
    other request errors :class:`InvalidRequestError`; anything else (a dead engine)
    :class:`ProviderError`.
    """
    if isinstance(exc, LLMClientError):
        return exc
    text = str(exc) or type(exc).__name__
    message = f"vLLM refused the request: {text}"
    lowered = text.lower()
    if any(words in lowered for words in _WINDOW_WORDS):
        return ContextWindowExceededError(
            f"{message}. Shorten the conversation, or raise max_model_len where the model allows it"
        )
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "TemplateError" in names or "chat template" in lowered:
        return ChatTemplateError(f"{message}. Set chat_template in the backend's settings")
    if params.response_format is not None and any(w in lowered for w in _STRUCTURED_WORDS):
        return UnsupportedFeatureError(
            f"vLLM cannot constrain the reply to {params.response_format!r}: {text}. Simplify the "
            f"schema or pattern, or choose another backend for structured output "
            f"(engine_args.structured_outputs_config)"
        )
    if names & {"ValueError", "TypeError", "VLLMClientError"}:
        return InvalidRequestError(message)
    return ProviderError(f"the vLLM engine failed: {text}")


def typed_error(exc: BaseException, params: GenerationParams) -> LLMClientError:
    """:func:`engine_error`, with ``exc`` as its cause."""
    error = engine_error(exc, params)
    if error is not exc:
        error.__cause__ = exc
    return error


_WINDOW_WORDS = ("maximum model length", "maximum context length", "max_model_len")
_STRUCTURED_WORDS = ("structured", "grammar", "schema", "regex", "guided", "xgrammar", "guidance", "json")


def _finish(completion: Any) -> tuple[Any, dict[str, Any]]:
    """The normalised finish reason, and vLLM's own word where it differs (``abort``)."""
    native = completion.finish_reason
    finish = normalise_finish_reason(native)
    details: dict[str, Any] = {}
    if native is not None and native != finish:
        details["native_finish_reason"] = native
    return finish, details


def _logprobs(completion: Any, params: GenerationParams) -> list[TokenLogprob]:
    if not params.wants_logprobs:
        return []
    return token_logprobs(completion.token_ids, completion.logprobs, params.top_logprobs or 0)
