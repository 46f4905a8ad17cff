"""Helpers shared by the credentials lifecycle tests: credentials files and the CLI as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.fakes.oauth import FakeOAuthServer

HOUR_MS = 3600 * 1000

# Keys a real file carries besides the tokens; a rewrite must keep every one of them.
EXTRA_OAUTH = {
    "scopes": ["user:inference", "user:profile"],
    "subscriptionType": "max",
    "rateLimitTier": "default_claude_max_20x",
    "someFutureField": {"nested": [1, 2, 3]},
}
EXTRA_TOP = {"mcpOAuth": {"server-x": {"accessToken": "unrelated-value", "expiresAt": 1}}, "version": 3}


def now_ms() -> int:
    return int(time.time() * 1000)


def credentials_doc(access: str, refresh: str | None, expires_at_ms: int | None) -> dict[str, Any]:
    oauth: dict[str, Any] = {"accessToken": access}
    if refresh is not None:
        oauth["refreshToken"] = refresh
    if expires_at_ms is not None:
        oauth["expiresAt"] = expires_at_ms
    oauth.update(EXTRA_OAUTH)
    return {"claudeAiOauth": oauth, **EXTRA_TOP}


def write_credentials(
    path: Path, access: str, refresh: str | None, expires_at_ms: int | None, mode: int = 0o600
) -> bytes:
    data = json.dumps(credentials_doc(access, refresh, expires_at_ms)).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return data


def read_oauth(path: Path) -> dict[str, Any]:
    oauth: dict[str, Any] = json.loads(path.read_bytes())["claudeAiOauth"]
    return oauth


def cli_env(tmp_path: Path, fake: FakeOAuthServer | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "ANTHROPIC_API_KEY",
            "CLAUDE_ACCESS_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CREDENTIALS_PATH",
            "CLAUDE_CONFIG_DIR",
            "CLAUDE_OAUTH_TOKEN_URL",
            "CLAUDE_OAUTH_CLIENT_ID",
            "LOG_LEVEL",
        }
    }
    env["HOME"] = str(tmp_path / "home")
    termination = tmp_path / "termination-log"
    termination.touch()
    env["CLAUDE_PROXY_TERMINATION_LOG"] = str(termination)
    if fake is not None:
        env["CLAUDE_OAUTH_TOKEN_URL"] = fake.url
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "claude_proxy", *args]


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), env=dict(env), capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def outcome_line(stdout: str) -> dict[str, Any]:
    """The single JSON outcome line a lifecycle command prints (and nothing else on stdout)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one outcome line, got {lines!r}"
    outcome: dict[str, Any] = json.loads(lines[0])
    assert set(outcome) == {"command", "result", "reason", "message", "expiresAt"}
    return outcome


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    secrets = [s for s in secrets if s]
    assert secrets, "no secrets to look for: the check would be vacuous"
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a token appeared in output"
        assert "sk-ant-o" not in text, "something shaped like an OAuth token appeared in output"
