"""A driver killed mid-run (SIGKILL) and a rerun: every row has exactly one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scale_support import RAY_WARNINGS, EchoServer, echo_config, shard_lines

from llmclient.scale import ray as engine
from llmclient.scale.shards import read_results
from llmclient.testing.server import LoopbackServer

pytestmark = RAY_WARNINGS

ROWS = [{"id": i, "dish": f"dish {i}"} for i in range(40)]

DRIVER = """
import json, sys
from llmclient.scale import ray as engine

config, rows, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
engine.run(config, rows, template="Describe {{ dish }}", output=out, id_field="id",
           actors=2, batch_size=2, concurrency=1, progress=False)
"""


def test_a_killed_driver_rerun_leaves_every_row_exactly_once(ray_cluster: str, tmp_path: Path) -> None:
    rows, out = tmp_path / "rows.jsonl", tmp_path / "out"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    with LoopbackServer(EchoServer(latency=0.2)) as server:
        config = echo_config(server)
        env = {**os.environ, "RAY_ADDRESS": ray_cluster}  # the driver joins the session's cluster
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(config), str(rows), str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while len(list(read_results(out))) < 6:  # some rows written, most not
                assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else ""
                assert time.monotonic() < deadline, "the driver wrote nothing in 120 s"
                time.sleep(0.1)
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
            if driver.stderr:
                driver.stderr.close()
        assert driver.returncode == -signal.SIGKILL
        first = len(list(read_results(out)))
        assert 6 <= first < len(ROWS)

        summary = engine.run(
            config,
            rows,
            template="Describe {{ dish }}",
            output=out,
            id_field="id",
            actors=2,
            batch_size=4,
            progress=False,
        )
    lines = shard_lines(out)  # each key once
    assert len(lines) == len(ROWS)
    assert sorted(line["row_id"] for line in lines.values()) == list(range(len(ROWS)))
    assert all(line["status"] == "ok" for line in lines.values())
    assert summary.skipped >= first and summary.done + summary.skipped == len(ROWS)
