"""Importing llmclient is cheap: HTTP stacks, torch and transformers load only when a backend needs them.

Each check runs in a fresh interpreter, since this test process has long since imported everything.
The import time itself is measured by hand (best of 5 runs of ``python -c "import llmclient"``
against ``python -c pass``), not asserted: timings on a shared machine are too noisy for a test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "openai",
    "httpx2",
    "aiohttp",
    "tenacity",
    "opentelemetry",  # tracing looks for a configured provider without importing it (llmclient.tracing)
)


def heavy_modules_after(code: str) -> list[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "code",
    [
        "import llmclient",
        # the cheap parts of the API stay cheap too
        "import llmclient; llmclient.backend_types()",
        "import llmclient.config as c; c.resolve('openrouter:meta-llama/llama-3.1-8b-instruct')",
        "import llmclient; llmclient.GenerationParams.from_options({'temperature': 0})",
        # a call with no tracer provider configured loads nothing of OpenTelemetry
        "from llmclient.testing import FunctionBackend; FunctionBackend(lambda m, p: 'hi').chat('x')",
    ],
)
def test_nothing_heavy_is_imported(code: str) -> None:
    assert heavy_modules_after(code) == []


def test_the_probe_would_see_a_heavy_import() -> None:
    # Guards the test above against passing vacuously: a module that is imported is reported.
    assert heavy_modules_after("import tenacity") == ["tenacity"]
