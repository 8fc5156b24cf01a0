"""The local backend: a Hugging Face model run in this process with transformers and torch.

``llmclient.load("hf:smollm2")`` runs the built-in SmolLM2-135M-Instruct; any hub id or local model
directory works the same way. Importing this package is cheap: torch and transformers load with the
model, on the first call or when the backend is built with ``load = "eager"``.

How the modules fit: ``settings`` (what ``llmclient.toml`` may say) and ``backend`` (the public
class) are light; the rest loads with the model. ``loading`` finds and loads it (``gguf`` converts
GGUF weights once, ``smollm2`` resolves the built-in alias); ``engine`` holds the loaded model with
everything that runs on it; ``prompting`` renders chat templates and fits the window;
``generation`` runs one batched ``generate``; ``scheduler`` is the one way into the one worker
thread that runs the model, where calls that wait at the same time are batched; ``streaming``
decodes a stream's tokens into text; ``grammars`` compiles a ``response_format`` for llguidance and
``constrained`` masks each constrained row of a batch to its grammar.
"""

from __future__ import annotations

from llmclient.backends.huggingface.backend import HuggingFaceBackend, from_config
from llmclient.backends.huggingface.settings import DEFAULT_MAX_NEW_TOKENS, HuggingFaceSettings

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "HuggingFaceBackend", "HuggingFaceSettings", "from_config"]
