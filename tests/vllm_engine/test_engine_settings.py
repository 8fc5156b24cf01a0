"""The vllm-engine backend without vLLM: its settings, its registration, and a light import.

Building the backend starts no engine (``load = "lazy"``), so none of this needs vLLM installed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from engine_support import vllm_installed

import llmclient
from llmclient.backends.vllm_engine import VLLMEngineBackend, VLLMEngineSettings
from llmclient.errors import ConfigError, ModelLoadError


def test_settings_become_engine_arguments() -> None:
    settings = VLLMEngineSettings(
        dtype="BFloat16", max_model_len=4096, seed=3, engine_args={"enforce_eager": True, "max_num_seqs": 8}
    )
    assert settings.engine_kwargs("some/model") == {
        "model": "some/model",
        "dtype": "bfloat16",
        "tensor_parallel_size": 1,
        "trust_remote_code": False,
        "max_model_len": 4096,
        "seed": 3,
        "enforce_eager": True,
        "max_num_seqs": 8,
    }


def test_options_override_settings_and_are_checked_like_a_config_file() -> None:
    backend = VLLMEngineBackend("smollm2", settings=VLLMEngineSettings(dtype="float32"), max_model_len=2048)
    assert backend.settings.dtype == "float32" and backend.settings.max_model_len == 2048
    assert not backend.loaded
    with pytest.raises(ConfigError, match=r"max_model_lenn.*did you mean 'max_model_len'"):
        VLLMEngineBackend("smollm2", max_model_lenn=2048)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"dtype": "float8"}, "unknown dtype"),
        ({"max_model_len": 0}, "at least 1"),
        ({"gpu_memory_utilization": 1.5}, r"must be in \(0, 1\]"),
        ({"engine_args": {"model": "x"}}, "sets model"),
        ({"engine_args": {"dtype": "half"}}, "sets dtype, which is a setting of its own"),
        ({"load": "later"}, "expected one of"),
    ],
)
def test_bad_settings_name_the_key(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        VLLMEngineBackend("smollm2", **options)


def test_the_type_is_registered_and_read_from_a_config() -> None:
    assert "vllm-engine" in llmclient.backend_types()
    backend = llmclient.load(
        {"type": "vllm-engine", "model": "smollm2", "max_model_len": 1024, "defaults": {"temperature": 0}}
    )
    assert isinstance(backend, VLLMEngineBackend)
    assert backend.settings.max_model_len == 1024 and backend.defaults.temperature == 0
    assert not backend.loaded and backend.type_name == "vllm-engine"


def test_importing_the_backend_loads_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import llmclient\n"
        "from llmclient.backends.vllm_engine import VLLMEngineBackend\n"
        "VLLMEngineBackend('smollm2', max_model_len=64)\n"
        "import json\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted(loaded & {'vllm', 'torch', 'transformers'})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed here")
def test_without_vllm_the_first_call_says_what_to_install() -> None:
    backend = VLLMEngineBackend("smollm2")
    with pytest.raises(ModelLoadError, match=r'pip install "llmclient\[vllm\]"'):
        backend.chat("hi")
    backend.close()
