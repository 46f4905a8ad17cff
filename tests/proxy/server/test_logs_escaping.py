"""What a client writes reaches the log cut and escaped, in both formats: a real `claude-proxy serve` process, its
stderr read back line by line, requests written by hand (a `%0a` in the path needs no key; a model with a newline,
or of a megabyte)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY
from tests.fakes.anthropic import FakeAnthropic, message, text
from tests.proxy.http_support import connect, read_response
from tests.proxy.serve_support import serve_process

FORGED = "2030-01-01T00:00:00.000Z INFO claude_proxy.access GET /admin 200"
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+ ")


def misbehave(url: str, fake: FakeAnthropic) -> None:
    forged = FORGED.replace(" ", "%20")
    with connect(url) as sock:  # a path that decodes to a line break and a whole forged line
        sock.sendall(f"GET /v1/nothing%0a{forged}%0d%0a{forged} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        assert read_response(sock)[0] == 404
    fake.script(message(text("ok")))
    answer = httpx.post(
        f"{url}/v1/messages",  # passed through: the proxy only reads the model, and logs it
        json={"model": f"claude-x\n{FORGED}", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code < 500
    answer = httpx.post(
        f"{url}/v1/messages",
        json={"model": "m" * 1_000_000, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code < 500


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_client_text_in_log_lines_is_cut_and_escaped(fake: FakeAnthropic, tmp_path: Path, fmt: str) -> None:
    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "LOG_FORMAT": fmt}
    with serve_process({**env, "PROXY_LOG_FIELD_CHARS": "100"}, tmp_path) as served:
        misbehave(served.url, fake)
        served.terminate()
        served.process.wait(15)
    lines = served.log_lines()
    assert lines
    text = served.log.read_text()
    assert len(text) < 100_000  # the megabyte model is not in it
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line is one whole record
        access = [r for r in records if r.get("logger") == "claude_proxy.access"]
        assert not any(r.get("path") == "/admin" for r in access)
        models = [r["model"] for r in access if r.get("model")]
    else:
        for line in lines:
            assert PLAIN_LINE.match(line), line  # no line but the proxy's own
            assert "GET /admin" not in line.replace("GET\\x20/admin", "")
        access = [line for line in lines if " claude_proxy.access " in line]
        models = [line.split(" model=")[1].split(" ")[0] for line in access if " model=" in line]
    assert len(access) >= 3
    assert any("\\n" in m or "\n" in m for m in models)  # the model with a newline is there, escaped (JSON: as data)
    long = [m for m in models if m.startswith("mmm")]
    assert long and all(len(m) < 200 and "...[1000000chars]" in m for m in long)
