"""``llmclient chat`` prints the tool calls a reply holds, readably, streamed or not; tools can come
from a backend's configured defaults.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from remote_support import API_KEY

from llmclient.cli import main
from llmclient.testing.server import ToolCallHandler, tool_call

CONFIG = """
[backends.remote]
type = "openai-compatible"
model = "m"
base_url = "{base_url}"
api_key = "{api_key}"

[[backends.remote.defaults.tools]]
type = "function"
[backends.remote.defaults.tools.function]
name = "get_weather"
parameters = {{ type = "object", properties = {{ city = {{ type = "string" }} }} }}
"""


@pytest.mark.parametrize("stream", [True, False])
def test_chat_prints_the_calls_of_a_reply(
    serve, tmp_path: Path, capsys: pytest.CaptureFixture[str], stream: bool
) -> None:
    calls = [tool_call("get_weather", {"city": "Lisbon"}, id="call_l")]
    server = serve(ToolCallHandler(lambda body: calls if body["tools"] else "no tools"))
    config = tmp_path / "llmclient.toml"
    config.write_text(CONFIG.format(base_url=server.base_url, api_key=API_KEY))
    args = ["chat", "--config", str(config), "-b", "remote", *([] if stream else ["--no-stream"]), "Weather?"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == 'tool call call_l: get_weather(city="Lisbon")'
    assert server.requests[-1].json()["tools"][0]["function"]["name"] == "get_weather"
