"""`llmclient run --engine ray`: the same run from the shell, joining the session's cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scale_support import RAY_WARNINGS, EchoServer, shard_lines

from llmclient.testing.server import LoopbackServer

pytestmark = RAY_WARNINGS


def llmclient(*args: str, cwd: Path, address: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMCLIENT_BACKEND", "LLMCLIENT_CONFIG")}
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.run(
        [sys.executable, "-m", "llmclient", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_run_with_engine_ray_writes_a_folder_of_shards(ray_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(
        "".join(json.dumps({"id": i, "dish": f"d{i}"}) + "\n" for i in range(6))
    )
    with LoopbackServer(EchoServer()) as server:
        (tmp_path / "llmclient.toml").write_text(
            f'[backends.echo]\ntype = "openai-compatible"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
        )
        done = llmclient(
            "run",
            "rows.jsonl",
            "-b",
            "echo",
            "-t",
            "Describe {{ dish }}",
            "-o",
            "out",
            "--id-field",
            "id",
            "--engine",
            "ray",
            "--actors",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
            cwd=tmp_path,
            address=ray_cluster,
        )
    assert done.returncode == 0, done.stderr
    assert "6 done, 0 failed" in done.stdout
    assert len(shard_lines(tmp_path / "out")) == 6


def test_actors_without_the_ray_engine_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"id": 1, "dish": "x"}\n')
    refused = llmclient(
        "run",
        "rows.jsonl",
        "-b",
        "openai-compatible:m",
        "-t",
        "{{ dish }}",
        "-o",
        "out.jsonl",
        "--actors",
        "2",
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "--actors and --num-gpus need --engine ray" in refused.stderr
