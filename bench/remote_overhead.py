"""What llmclient's OpenAI-compatible backend costs over raw HTTP, measured in one run.

    python bench/remote_overhead.py [--quick]

Starts the loopback server (llmclient.testing.server) in its own process, then measures, against it:

1. sequential requests at 0 ms server latency: microseconds per request, sync and async, for raw
   httpx2, raw aiohttp, the openai SDK and llmclient;
2. 2,000 requests at 50 ms server latency with 64 in flight: percent of the ideal 2000/64 x 50 ms;
3. a 200-chunk stream: microseconds per chunk, wall clock and CPU time, the clients taking turns
   in each round (sync against raw httpx2, async against raw aiohttp);
4. tracing (``--tracing`` runs only this case): a sync llmclient request with no tracer provider
   (OpenTelemetry not imported, then imported but not configured) and with the OpenTelemetry SDK
   recording every span (the ratio is the cost of tracing; off must stay within 2%).

Each figure is the best of several rounds, and every comparison is a ratio within this one run,
because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx2
import loopback
import openai

import llmclient

MESSAGES = [{"role": "user", "content": "Say hello."}]
BODY = json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 16}).encode()
STREAM_BODY = json.dumps(
    {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
).encode()
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
TEXT = "Hello there, this is a short benchmark reply."


@contextmanager
def server(latency: float = 0.0, pieces: int | None = None) -> Iterator[str]:
    """The loopback server in a separate process on a CPU of its own; yields its /v1 base URL."""
    extra = ["--stream-pieces", str(pieces), "--text", "x" * pieces] if pieces else ["--text", TEXT]
    with loopback.server(latency, *extra) as base:
        yield base


def best_us(fn: Callable[[], object], n: int, rounds: int) -> float:
    for _ in range(n // 5):
        fn()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


async def abest_us(fn: Callable[[], Awaitable[object]], n: int, rounds: int) -> float:
    for _ in range(n // 5):
        await fn()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            await fn()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


def sequential(n: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with server() as base:
        url = base + "/chat/completions"
        raw = httpx2.Client()
        sdk = openai.OpenAI(base_url=base, api_key="sk-bench", max_retries=0)
        ours = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": base})

        def raw_call() -> str:
            response = raw.post(url, content=BODY, headers=HEADERS)
            return str(json.loads(response.content)["choices"][0]["message"]["content"])

        def sdk_call() -> str:
            return (
                sdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)
                .choices[0]
                .message.content
                or ""
            )  # type: ignore[arg-type]

        def our_call() -> str:
            return ours.chat(MESSAGES, max_new_tokens=16).text

        for name, fn in (
            ("sync raw httpx2", raw_call),
            ("sync openai SDK", sdk_call),
            ("sync llmclient", our_call),
        ):
            results[name] = best_us(fn, n, rounds)

        async def run_async() -> None:
            araw = httpx2.AsyncClient()
            aio = aiohttp.ClientSession()
            asdk = openai.AsyncOpenAI(base_url=base, api_key="sk-bench", max_retries=0)

            async def araw_call() -> str:
                response = await araw.post(url, content=BODY, headers=HEADERS)
                return str(json.loads(response.content)["choices"][0]["message"]["content"])

            async def aio_call() -> str:
                async with aio.post(url, data=BODY, headers=HEADERS) as response:
                    return str(json.loads(await response.read())["choices"][0]["message"]["content"])

            async def asdk_call() -> str:
                reply = await asdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
                return reply.choices[0].message.content or ""

            async def aour_call() -> str:
                return (await ours.achat(MESSAGES, max_new_tokens=16)).text

            for name, fn in (
                ("async raw httpx2", araw_call),
                ("async raw aiohttp", aio_call),
                ("async openai SDK", asdk_call),
                ("async llmclient", aour_call),
            ):
                results[name] = await abest_us(fn, n, rounds)
            await araw.aclose()
            await aio.close()
            await asdk.close()
            await ours.aclose()

        asyncio.run(run_async())
        raw.close()
        sdk.close()
        ours.close()
    return results


def throughput(requests: int, in_flight: int, latency: float, rounds: int) -> dict[str, float]:
    ideal = requests / in_flight * latency
    results: dict[str, float] = {}
    with server(latency=latency) as base:
        url = base + "/chat/completions"

        async def gather(fn: Callable[[], Awaitable[object]]) -> float:
            gate = asyncio.Semaphore(in_flight)

            async def one() -> object:
                async with gate:
                    return await fn()

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            return time.perf_counter() - started

        async def run() -> None:
            limits = httpx2.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
            araw = httpx2.AsyncClient(limits=limits)
            aio = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight))
            asdk = openai.AsyncOpenAI(
                base_url=base,
                api_key="sk-bench",
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(limits=limits),
            )
            ours = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": base})

            async def araw_call() -> object:
                response = await araw.post(url, content=BODY, headers=HEADERS)
                return json.loads(response.content)

            async def aio_call() -> object:
                async with aio.post(url, data=BODY, headers=HEADERS) as response:
                    return json.loads(await response.read())

            async def asdk_call() -> object:
                return await asdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]

            async def aour_call() -> object:
                return await ours.achat(MESSAGES, max_new_tokens=16)

            for name, fn in (
                ("raw aiohttp", aio_call),
                ("raw httpx2", araw_call),
                ("openai SDK", asdk_call),
                ("llmclient achat", aour_call),
            ):
                best = min([await gather(fn) for _ in range(rounds)])
                results[name] = ideal / best * 100
            best = float("inf")
            for _ in range(rounds):
                best = min(best, await _timed(ours.achat_many([MESSAGES] * requests, concurrency=in_flight)))
            results["llmclient achat_many"] = ideal / best * 100
            await araw.aclose()
            await aio.close()
            await asdk.close()
            await ours.aclose()
            ours.close()

        asyncio.run(run())
        ours_sync = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": base})
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            ours_sync.chat_many([MESSAGES] * requests, concurrency=in_flight)
            best = min(best, time.perf_counter() - started)
        results["llmclient chat_many (sync)"] = ideal / best * 100
        ours_sync.close()
    return results


async def _timed(awaitable: Awaitable[object]) -> float:
    started = time.perf_counter()
    await awaitable
    return time.perf_counter() - started


def streaming(pieces: int, n: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Microseconds per chunk of a ``pieces``-chunk stream, wall clock and this process's CPU time.

    The clients take turns within each round (``n`` streams each), so a busy machine slows them
    alike; each figure is the best round. The CPU time (``time.process_time``) is what the client
    itself spends per chunk: on a shared machine it moves much less than the wall clock, and the
    server, on a CPU of its own, is not in it.
    """
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with server(pieces=pieces) as base:
        url = base + "/chat/completions"
        raw = httpx2.Client()
        sdk = openai.OpenAI(base_url=base, api_key="sk-bench", max_retries=0)
        ours = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": base})
        loop = asyncio.new_event_loop()
        araw = httpx2.AsyncClient()
        session = loop.run_until_complete(_session())

        def content(chunk: dict[str, Any]) -> str:
            return (chunk["choices"][0]["delta"].get("content") or "") if chunk["choices"] else ""

        def raw_stream() -> str:
            text = []
            with raw.stream("POST", url, content=STREAM_BODY, headers=HEADERS) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        text.append(content(json.loads(line[6:])))
            return "".join(text)

        def sdk_stream() -> str:
            text = []
            stream = sdk.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},  # type: ignore[arg-type]
            )
            for chunk in stream:
                if chunk.choices:
                    text.append(chunk.choices[0].delta.content or "")
            return "".join(text)

        def our_stream() -> str:
            return "".join(d.text for d in ours.stream(MESSAGES))

        async def araw_stream() -> str:
            text = []
            async with araw.stream("POST", url, content=STREAM_BODY, headers=HEADERS) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        text.append(content(json.loads(line[6:])))
            return "".join(text)

        async def aio_stream() -> str:
            text = []
            async with session.post(url, data=STREAM_BODY, headers=HEADERS) as response:
                async for line in response.content:  # one line at a time, as an SSE reader does
                    if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                        text.append(content(json.loads(line[6:])))
            return "".join(text)

        async def aour_stream() -> str:
            return "".join([d.text async for d in ours.astream(MESSAGES)])

        clients: dict[str, Callable[[], object]] = {
            "sync raw httpx2 SSE": raw_stream,
            "sync openai SDK": sdk_stream,
            "sync llmclient": our_stream,
            "async raw httpx2 SSE": lambda: loop.run_until_complete(araw_stream()),
            "async raw aiohttp SSE": lambda: loop.run_until_complete(aio_stream()),
            "async llmclient": lambda: loop.run_until_complete(aour_stream()),
        }
        assert all(fn() == "x" * pieces for fn in clients.values())

        for _ in range(max(1, n // 5)):  # warm up
            for fn in clients.values():
                fn()
        for _ in range(rounds):
            for name, fn in clients.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                for _ in range(n):
                    fn()  # an async client: one run_until_complete per stream, for raw ones too
                per_chunk = 1e6 / n / pieces
                wall[name] = min(wall.get(name, float("inf")), (time.perf_counter() - started) * per_chunk)
                cpu[name] = min(cpu.get(name, float("inf")), (time.process_time() - cpu_started) * per_chunk)

        async def close() -> None:
            await araw.aclose()
            await session.close()
            await ours.aclose()

        loop.run_until_complete(close())
        loop.close()
        raw.close()
        sdk.close()
        ours.close()
    return wall, cpu


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def tracing(n: int, rounds: int) -> dict[str, float]:
    """Sequential sync requests with tracing off, with OpenTelemetry imported but not configured,
    then with an SDK tracer provider recording every span (to no exporter: the cost of recording).
    The provider is global and set once, so the cases run in that order.
    """
    results: dict[str, float] = {}
    with server() as base:
        ours = llmclient.load({"type": "openai-compatible", "model": "m", "base_url": base})

        def our_call() -> str:
            return ours.chat(MESSAGES, max_new_tokens=16).text

        # "off" twice, around "imported": the spread of the two is the noise floor of this run
        results["sync llmclient, tracing off"] = best_us(our_call, n, rounds)
        import opentelemetry.trace  # noqa: F401 - imported, no provider: what a library user may have

        results["sync llmclient, OpenTelemetry imported, no provider"] = best_us(our_call, n, rounds)
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
        results["sync llmclient, tracing on (SDK, spans recorded)"] = best_us(our_call, n, rounds)
        ours.close()
    return results


def report(title: str, results: dict[str, float], unit: str, baselines: dict[str, str]) -> None:
    print(f"\n## {title}\n")
    print(f"| client | {unit} | ratio |")
    print("| --- | ---: | ---: |")
    for name, value in results.items():
        base = next((b for prefix, b in baselines.items() if name.startswith(prefix)), None)
        ratio = f"{value / results[base]:.2f}x {base}" if base and base != name and base in results else ""
        print(f"| {name} | {value:.1f} | {ratio} |")


SECTIONS = ("sequential", "throughput", "streaming")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds (a smoke run)")
    parser.add_argument(
        "--tracing", action="store_true", help="only the tracing case (needs opentelemetry-sdk)"
    )
    parser.add_argument(
        "--section", choices=SECTIONS, help="run one case in this process (by default each runs in its own)"
    )
    args = parser.parse_args()
    n, rounds = (200, 2) if args.quick else (2000, 3)
    if args.tracing:
        off = "sync llmclient, tracing off"
        report(
            "Tracing, sequential requests, 0 ms server latency",
            tracing(n, rounds),
            "us/request",
            {"sync": off},
        )
        return
    if args.section is None:
        # each case in a fresh process: after 40,000 sequential requests the heap and the collector
        # slowed the next case's clients, raw ones included, by 5-10 points of throughput
        for section in SECTIONS:
            extra = ["--quick"] if args.quick else []
            subprocess.run([sys.executable, __file__, "--section", section, *extra], check=True)
        return
    if args.section == "sequential":
        report(
            "Sequential requests, 0 ms server latency",
            sequential(n, rounds),
            "us/request",
            {"sync": "sync raw httpx2", "async": "async raw httpx2"},
        )
    elif args.section == "throughput":
        thr = throughput(2000, 64, 0.05, 2 if args.quick else 3)
        report("2,000 requests, 50 ms latency, 64 in flight", thr, "% of ideal (1.56 s)", {})
    else:
        wall, cpu = streaming(200, 20 if args.quick else 100, 3 if args.quick else 5)
        baselines = {"sync": "sync raw httpx2 SSE", "async": "async raw aiohttp SSE"}
        report("200-chunk stream, wall clock", wall, "us/chunk", baselines)
        report("200-chunk stream, this process's CPU time", cpu, "us/chunk", baselines)


if __name__ == "__main__":
    main()
