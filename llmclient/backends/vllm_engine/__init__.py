"""The ``vllm-engine`` backend: a model run by vLLM's offline engine (``vllm.LLM``) in this process.

``llmclient.load("vllm-engine:smollm2")`` runs the built-in SmolLM2-135M-Instruct on vLLM; any hub
id or local model directory works the same way. It differs from the ``vllm`` type, which talks to
a vLLM *server* over HTTP (docs/vllm.md says when to use which). Importing this package is cheap:
vLLM loads with the engine, on the first call or when the backend is built with ``load = "eager"``.

How the modules fit: ``settings`` (what ``llmclient.toml`` may say) and ``backend`` (the public
class) are light; ``convert`` maps parameters to vLLM's ``SamplingParams`` keywords and outputs and
errors back, as pure functions; ``engine`` holds the ``vllm.LLM`` and the one worker thread that
runs everything on it, and is the only module that imports vLLM.
"""

from __future__ import annotations

from llmclient.backends.vllm_engine.backend import VLLMEngineBackend, from_config
from llmclient.backends.vllm_engine.settings import VLLMEngineSettings

__all__ = ["VLLMEngineBackend", "VLLMEngineSettings", "from_config"]
