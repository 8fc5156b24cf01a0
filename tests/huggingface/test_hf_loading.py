"""Loading: where from, which class, which device and dtype, and errors that say what to do."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmclient
from llmclient import BackendUnavailableError, ConfigError, ModelLoadError
from llmclient.backends.huggingface import HuggingFaceBackend, HuggingFaceSettings
from llmclient.backends.huggingface import gguf as gguf_cache

torch = pytest.importorskip("torch")

from llmclient.backends.huggingface import loading  # noqa: E402


def test_a_config_dict_loads_a_local_directory(tiny_models: dict[str, Path]) -> None:
    backend = llmclient.load({"type": "huggingface", "model": str(tiny_models["llama"]), "device": "cpu"})
    try:
        assert isinstance(backend, HuggingFaceBackend)
        assert backend.chat("Hello", max_new_tokens=3, temperature=0).usage.completion_tokens <= 3
    finally:
        backend.close()


def test_the_hf_spec_and_the_long_type_name_are_the_same_backend(tiny_models: dict[str, Path]) -> None:
    backend = llmclient.load(f"hf:{tiny_models['llama']}")
    try:
        assert (type(backend), backend.name, backend.model) == (
            HuggingFaceBackend,
            "hf",
            str(tiny_models["llama"]),
        )
    finally:
        backend.close()


def test_loading_is_lazy_and_logs_the_model_device_and_dtype(
    tiny_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]))
    try:
        assert not backend.loaded
        with caplog.at_level(logging.INFO, logger="llmclient"):
            backend.chat("Hello", max_new_tokens=1)
        assert backend.loaded
        (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
        assert str(tiny_models["llama"]) in message
        dtype = "bfloat16" if loading.cpu_computes_bf16() else "float32"  # auto (test_dtype_choice.py)
        assert f"(LlamaForCausalLM) on cpu as {dtype}" in message
    finally:
        backend.close()


def test_eager_loading_happens_when_the_backend_is_built(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), load="eager")
    try:
        assert backend.loaded
    finally:
        backend.close()
    assert not backend.loaded


def test_auto_device_on_this_cpu_machine(llama_backend: Any) -> None:
    assert llama_backend.hf_model.device.type == "cpu"


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert loading.pick_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loading.pick_device("auto") == torch.device("cuda")
    assert loading.pick_device("cuda:1") == torch.device("cuda:1")


def test_auto_dtype_is_bf16_on_gpus_that_support_it_and_fp32_on_cpus_without_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert loading.pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert loading.pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert loading.pick_dtype("auto", torch.device("cpu"), {"avx512_bf16": False}) == torch.float32
    assert loading.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_a_chosen_dtype_is_used(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["llama"]), dtype="bfloat16", device="cpu")
    try:
        assert backend.hf_model.dtype == torch.bfloat16
        assert backend.chat("Hello", max_new_tokens=2).usage.completion_tokens <= 2
    finally:
        backend.close()


def test_device_map_is_passed_through(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    seen: dict[str, Any] = {}
    real = AutoModelForCausalLM.from_pretrained

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    backend = HuggingFaceBackend(str(tiny_models["llama"]), device_map={"": "cpu"}, load="eager")
    backend.close()
    assert seen["device_map"] == {"": "cpu"}
    assert seen["trust_remote_code"] is False
    assert seen["local_files_only"] is False


def test_an_encoder_decoder_model_loads_as_seq2seq(tiny_models: dict[str, Path], hf_oracle: Any) -> None:
    backend = HuggingFaceBackend(str(tiny_models["t5"]), device="cpu")
    try:
        assert type(backend.hf_model).__name__ == "T5ForConditionalGeneration"
        reply = backend.chat("Hello there", max_new_tokens=12, temperature=0)
        expected = hf_oracle(backend, "Hello there", max_new_tokens=12)
        assert reply.usage.completion_tokens == len(expected)
        ended = expected[-1] == backend.tokenizer.eos_token_id
        text_ids = expected[:-1] if ended else expected
        assert reply.text == backend.tokenizer.decode(text_ids, skip_special_tokens=True)
        assert reply.usage.prompt_tokens == backend.count_tokens("Hello there")
    finally:
        backend.close()


def test_an_encoder_only_model_is_refused(tiny_models: dict[str, Path]) -> None:
    backend = HuggingFaceBackend(str(tiny_models["bert"]))
    with pytest.raises(ModelLoadError, match=r"is an encoder-only model \(bert\); it cannot generate text"):
        backend.chat("Hello")


def test_an_encoder_only_model_object_is_refused_too(tiny_models: dict[str, Path]) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tiny_models["bert"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    with pytest.raises(ModelLoadError, match="cannot generate text"):
        HuggingFaceBackend.from_pretrained_objects(model, tokenizer)


def test_a_loaded_model_and_tokenizer_can_be_wrapped(tiny_models: dict[str, Path], hf_oracle: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    backend = HuggingFaceBackend.from_pretrained_objects(
        model, tokenizer, model_name="tiny-llama", settings=HuggingFaceSettings(context_window=128)
    )
    try:
        reply = backend.chat("Hello there", max_new_tokens=6, temperature=0)
        expected = hf_oracle(backend, "Hello there", max_new_tokens=6)
        assert reply.text == tokenizer.decode(expected, skip_special_tokens=True)
        assert (reply.model, backend.context_window) == ("tiny-llama", 128)
    finally:
        backend.close()


def test_a_missing_directory_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        HuggingFaceBackend(str(missing), load="eager")
    assert str(missing) in str(info.value)


def test_a_directory_without_weights_names_what_it_must_hold(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text((tiny_models["llama"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"must hold config\.json, the weights and the tokenizer files"):
        HuggingFaceBackend(str(tmp_path), load="eager")


def test_an_unknown_hub_id_offline_gives_the_fix() -> None:
    with pytest.raises(ModelLoadError) as info:
        HuggingFaceBackend("nobody-here/no-such-model-xyz", local_files_only=True, load="eager")
    message = str(info.value)
    assert "cannot load 'nobody-here/no-such-model-xyz'" in message
    assert "Check the model id and revision" in message
    assert "trust_remote_code = true" in message


def test_settings_are_checked_with_suggestions(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="unknown setting for type 'huggingface'; did you mean 'device'"):
        llmclient.load({"type": "huggingface", "model": "smollm2", "devcie": "cpu"})
    with pytest.raises(ConfigError, match=r"context_policy = 'drop'.*expected one of 'error', 'truncate'"):
        llmclient.load({"type": "hf", "model": "smollm2", "context_policy": "drop"})
    with pytest.raises(ConfigError, match="dtype = 'fp64': unknown dtype"):
        HuggingFaceBackend("smollm2", dtype="fp64")
    with pytest.raises(ConfigError, match="max_batch_size = 0: must be at least 1"):
        llmclient.load({"type": "hf", "model": "smollm2", "max_batch_size": 0})
    with pytest.raises(ConfigError, match="device = 'gpu7'"):
        HuggingFaceBackend(str(tiny_models["llama"]), device="gpu7", load="eager")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_the_backend_module_imports_neither_torch_nor_transformers() -> None:
    done = run_python(
        "import sys, llmclient.backends.huggingface as h; h.HuggingFaceBackend('smollm2');"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_torch_gives_the_install_hint() -> None:
    done = run_python(
        "import sys; sys.modules['torch'] = None\n"
        "import llmclient\n"
        "try:\n"
        "    llmclient.load('hf:smollm2').chat('hi')\n"
        "except llmclient.ModelLoadError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert 'needs torch, which is not installed: pip install "llmclient[hf]"' in done.stdout


# -- the GGUF cache --------------------------------------------------------------------------------


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMCLIENT_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "mine"
    assert gguf_cache.cache_root(str(tmp_path / "configured")) == tmp_path / "configured"
    monkeypatch.delenv("LLMCLIENT_CACHE")
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "llmclient"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gguf_cache.cache_root() == Path.home() / ".cache" / "llmclient"


def test_a_changed_gguf_file_gets_a_new_cached_copy(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"one")
    first = gguf_cache.checkpoint_dir(gguf, tmp_path / "cache")
    gguf.write_bytes(b"three")
    assert gguf_cache.checkpoint_dir(gguf, tmp_path / "cache") != first
    assert first.parent == tmp_path / "cache" / "gguf"
    assert first.name.startswith("model-")
    # a recorded content hash names the copy wherever the file is installed
    moved = tmp_path / "reinstalled" / "model.gguf"
    assert gguf_cache.checkpoint_dir(gguf, tmp_path, "sha256=abc") == gguf_cache.checkpoint_dir(
        moved, tmp_path, "sha256=abc"
    )


def test_a_failed_conversion_leaves_no_half_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "gguf" / "model-123"
    with pytest.raises(RuntimeError, match="killed halfway"), gguf_cache.atomic_directory(target) as scratch:
        (scratch / "config.json").write_text("{}")
        raise RuntimeError("killed halfway")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_a_finished_conversion_appears_at_once(tmp_path: Path) -> None:
    target = tmp_path / "gguf" / "model-123"
    with gguf_cache.atomic_directory(target) as scratch:
        (scratch / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (scratch / "model.safetensors").write_bytes(b"weights")
        assert not target.exists()
    assert gguf_cache.is_complete(target)
    assert sorted(os.listdir(target.parent)) == ["model-123"]


def test_a_conversion_that_lost_the_race_keeps_the_winners_copy(tmp_path: Path) -> None:
    target = tmp_path / "gguf" / "model-123"
    with gguf_cache.atomic_directory(target) as scratch:
        (scratch / "config.json").write_text("{}")
        (scratch / "who").write_text("ours")
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / "who").write_text("theirs")
    assert (target / "who").read_text() == "theirs"
    assert sorted(os.listdir(target.parent)) == ["model-123"]


class ClosedAfterPrepare(HuggingFaceBackend):
    """A backend that another thread closes just after a call has passed ``prepare``."""

    def prepare(self, messages: Any, options: Any) -> Any:
        request = super().prepare(messages, options)
        self.close()
        return request


CALLS: dict[str, Any] = {
    "chat": lambda b: b.chat("Hello", max_new_tokens=2),
    "chat_many": lambda b: b.chat_many(["Hello"], max_new_tokens=2),
    "achat": lambda b: asyncio.run(b.achat("Hello", max_new_tokens=2)),
    "achat_many": lambda b: asyncio.run(b.achat_many(["Hello"], max_new_tokens=2)),
    "stream": lambda b: b.stream("Hello", max_new_tokens=2).final(),
    "render_prompt": lambda b: b.render_prompt("Hello"),
    "count_tokens": lambda b: b.count_tokens("Hello"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("load", ["lazy", "eager"])
def test_a_call_that_races_close_never_loads_a_fresh_model(
    tiny_models: dict[str, Path], call: str, load: str
) -> None:
    # issue 12: the call passed prepare(), close() ran, then _ensure() loaded a model nobody would close
    backend = ClosedAfterPrepare(str(tiny_models["llama"]), device="cpu", load=load)
    with pytest.raises(BackendUnavailableError, match="the backend was closed") as info:
        CALLS[call](backend)
    assert info.value.retryable is False
    assert not backend.loaded
