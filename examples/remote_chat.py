"""Chat, stream and batch against any OpenAI-compatible backend, chosen by configuration.

python examples/remote_chat.py --demo                     # offline: a local stand-in server
OPENROUTER_API_KEY=... python examples/remote_chat.py openrouter:meta-llama/llama-3.1-8b-instruct
python examples/remote_chat.py vllm:Qwen/Qwen2.5-7B-Instruct
LLMCLIENT_BACKEND=remote python examples/remote_chat.py   # a name from llmclient.toml
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import llmclient
from llmclient.testing.server import LoopbackServer, OpenAIHandler


@contextlib.contextmanager
def demo_backend() -> Iterator[llmclient.ChatBackend]:
    """A backend talking to the loopback stand-in server, for trying the API offline."""
    with (
        LoopbackServer(
            OpenAIHandler(text=lambda body: f"You said: {body['messages'][-1]['content']}")
        ) as server,
        llmclient.load(
            {"type": "openai-compatible", "model": "demo", "base_url": server.base_url}
        ) as backend,
    ):
        yield backend


def run(backend: llmclient.ChatBackend) -> None:
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    reply = backend.chat(messages, max_new_tokens=64, temperature=0)
    print(f"chat: {reply.text!r} (finish={reply.finish_reason}, usage={reply.usage}, {reply.latency:.2f}s)")

    print("stream: ", end="")
    with backend.stream(messages, max_new_tokens=64, temperature=0) as stream:
        for delta in stream:
            print(delta.text, end="", flush=True)
    print(f"  [{stream.final().finish_reason}]")

    questions = [f"What is {n} squared?" for n in range(2, 7)]
    replies = backend.chat_many(
        questions, concurrency=4, max_new_tokens=32, temperature=0, return_exceptions=True
    )
    for question, answer in zip(questions, replies, strict=True):
        shown = answer.text if isinstance(answer, llmclient.ChatResponse) else f"failed: {answer}"
        print(f"{question} -> {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "spec", nargs="?", help="a backend name or provider:model (default: LLMCLIENT_BACKEND)"
    )
    parser.add_argument("--demo", action="store_true", help="use a local stand-in server, no network or key")
    args = parser.parse_args()
    if args.demo:
        with demo_backend() as backend:
            run(backend)
        return
    try:
        backend = llmclient.load(args.spec)
    except llmclient.ConfigError as error:
        raise SystemExit(f"configuration problem: {error}") from None
    with backend:
        run(backend)


if __name__ == "__main__":
    main()
