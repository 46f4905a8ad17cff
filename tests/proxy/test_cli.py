"""The CLI leaves nobody guessing: `--version`, a `serve --help` that lists the main variables and points at the
settings table, a `check` that names the right source and says what is wrong or due, and a `refresh` that says how to
log in when there is no file yet."""

from __future__ import annotations

import importlib.metadata
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from claude_proxy.config import Settings
from tests.conftest import API_KEY, OAUTH_TOKEN, ProxyFactory
from tests.fakes.anthropic import FakeAnthropic
from tests.proxy.lifecycle_support import (
    HOUR_MS,
    assert_no_secrets,
    cli_command,
    cli_env,
    now_ms,
    outcome_line,
    run_cli,
    write_credentials,
)
from tests.proxy.serve_support import free_port, proxy_env, serve_process

ROOT = Path(__file__).resolve().parents[2]
ACCESS = "sk-ant-oat01-test-cli"
REFRESH = "sk-ant-ort01-test-cli"
CHAT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def hole_has_a_connection(hole: socket.socket) -> bool:
    """Whether a connection waits in the listening socket's backlog (the proxy's upstream call reached it)."""
    import select

    return bool(select.select([hole], [], [], 0)[0])


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", env=cli_env(tmp_path))
    assert result.returncode == 0
    assert result.stdout.strip() == f"claude-proxy {importlib.metadata.version('claude-code-proxy')}"


def test_serve_help_lists_the_main_variables_and_points_at_the_settings_table(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    text = result.stdout
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CREDENTIALS_PATH", "ANTHROPIC_BASE_URL"):
        assert name in text
    for name in ("PORT", "PROXY_API_KEYS", "PROXY_MODEL_ALIASES", "LOG_LEVEL"):
        assert name in text
    assert "docs/configuration.md" in text and "claude-proxy check" in text
    defaults = Settings()  # the help gives the defaults the settings have
    assert f"listen address (default {defaults.host}, {defaults.port})" in text
    assert f"(env PROXY_SHUTDOWN_GRACE, default {defaults.shutdown_grace:g})" in " ".join(text.split())
    # every variable the help names is one the settings table of docs/configuration.md documents
    table = (ROOT / "docs" / "configuration.md").read_text().split("# Configuration", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\b(?:ANTHROPIC|CLAUDE|PROXY|LOG)_[A-Z_]+\b|\b(?:HOST|PORT)\b", text))
    assert named and all(name in table for name in named), named - {n for n in named if n in table}


def test_check_names_claude_code_oauth_token_as_the_source(tmp_path: Path) -> None:
    result = run_cli("check", "--json", env=cli_env(tmp_path, CLAUDE_CODE_OAUTH_TOKEN=ACCESS))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["source"], report["kind"]) == ("CLAUDE_CODE_OAUTH_TOKEN", "access_token")
    text = run_cli("check", env=cli_env(tmp_path, CLAUDE_ACCESS_TOKEN=ACCESS)).stdout
    assert "source:       CLAUDE_ACCESS_TOKEN" in text
    assert_no_secrets([result.stdout, result.stderr, text], [ACCESS])


def test_check_says_unreadable_not_missing(tmp_path: Path) -> None:
    unreadable = tmp_path / "creds"
    unreadable.mkdir()  # there, but no file to read (a permission bit would not stop root, who runs CI)
    result = run_cli("check", "--json", "--credentials", str(unreadable), env=cli_env(tmp_path))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "unreadable" and report["source"] == str(unreadable)
    assert f"cannot read {unreadable}" in report["message"]
    missing = run_cli("check", "--json", "--credentials", str(tmp_path / "none.json"), env=cli_env(tmp_path))
    assert json.loads(missing.stdout)["status"] == "missing"


def test_check_warns_when_the_token_is_due_for_refresh(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    write_credentials(creds, ACCESS, REFRESH, now_ms() + HOUR_MS // 2)
    result = run_cli("check", "--credentials", str(creds), env=cli_env(tmp_path))
    assert result.returncode == 0 and "status:       valid" in result.stdout
    assert "warning: the access token expires within 1h00m and is due for refresh" in result.stdout
    assert "claude-proxy refresh" in result.stdout.split("warning:", 1)[1]
    write_credentials(creds, ACCESS, REFRESH, now_ms() + 3 * HOUR_MS)
    later = run_cli("check", "--json", "--credentials", str(creds), env=cli_env(tmp_path))
    assert json.loads(later.stdout)["warnings"] == []


def test_check_says_an_empty_api_key_was_ignored(tmp_path: Path) -> None:
    result = run_cli("check", "--json", env=cli_env(tmp_path, ANTHROPIC_API_KEY=""))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "missing"
    assert "ANTHROPIC_API_KEY is set but empty" in report["message"]
    assert report["warnings"] == ["ANTHROPIC_API_KEY is set but empty, so it is ignored"]


def test_check_refuses_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    result = run_cli("check", env=cli_env(tmp_path, ANTHROPIC_BASE_URL="api.anthropic.com"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "claude-proxy: ANTHROPIC_BASE_URL must start with http:// or https://, e.g. https://api.anthropic.com "
        "(got 'api.anthropic.com')"
    ]


def test_refresh_without_a_file_suggests_claude_auth_login(tmp_path: Path) -> None:
    result = run_cli("refresh", env=cli_env(tmp_path))  # a workstation that never logged in: no ~/.claude
    assert result.returncode == 1
    outcome = outcome_line(result.stdout)
    assert (outcome["result"], outcome["reason"]) == ("failed", "missing")
    assert "run `claude auth login`" in outcome["message"]
    assert str(tmp_path / "home" / ".claude" / ".credentials.json") in outcome["message"]


def test_serve_help_lists_every_endpoint_the_proxy_serves(tmp_path: Path) -> None:
    from claude_proxy.server.app import ENDPOINTS

    text = run_cli("serve", "--help", env=cli_env(tmp_path)).stdout
    served = [item.split(" (")[0].split(" ", 1) for item in ENDPOINTS.split(", ")]
    assert len(served) >= 9
    for method, path in served:
        lines = [line for line in text.splitlines() if path in line.split() or f"{path}," in line.split()]
        assert lines and any(method in line for line in lines), f"{method} {path} is not in serve --help"


def test_serve_takes_a_log_level_and_every_command_only_real_levels(tmp_path: Path) -> None:
    for command in ("serve", "refresh", "seed", "check"):
        wrong = run_cli(command, "--log-level", "verbose", env=cli_env(tmp_path))
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
        assert "'verbose' is not a log level: use one of critical, error, warning, info, debug, trace" in wrong.stderr
    from_env = run_cli("check", env=cli_env(tmp_path, LOG_LEVEL="verbose"))
    assert from_env.returncode == 2
    assert from_env.stderr.strip() == (
        "claude-proxy: LOG_LEVEL must be one of critical, error, warning, info, debug, trace (got 'verbose')"
    )
    assert run_cli("check", "--log-level", "TRACE", env=cli_env(tmp_path, ANTHROPIC_API_KEY="k")).returncode == 0


@pytest.mark.slow
def test_serve_log_level_overrides_the_variable(fake: FakeAnthropic, tmp_path: Path) -> None:
    port = free_port()
    env = proxy_env(tmp_path, {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": API_KEY, "LOG_LEVEL": "info"})
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [*cli_command("serve", "--port", str(port), "--host", "127.0.0.1", "--log-level", "error")],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log.read_text()
    assert "Traceback" not in text
    assert "credential:" not in text and "Application startup complete" not in text  # info lines: not at error


@pytest.mark.slow
def test_a_second_ctrl_c_stops_serve_without_a_traceback(tmp_path: Path) -> None:
    hole = socket.socket()  # an upstream that takes the connection and never answers: the request stays in flight
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{hole.getsockname()[1]}", "ANTHROPIC_API_KEY": API_KEY}
    outcome: list[object] = []

    def ask(url: str) -> None:
        try:
            httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    try:
        with serve_process(env, tmp_path) as served:
            client = threading.Thread(target=ask, args=(served.url,))
            client.start()
            deadline = time.monotonic() + 10
            while not hole_has_a_connection(hole) and time.monotonic() < deadline:
                time.sleep(0.05)
            served.process.send_signal(signal.SIGINT)  # drain: the request gets the grace
            time.sleep(0.5)
            assert served.process.poll() is None
            served.process.send_signal(signal.SIGINT)  # enough: stop now
            assert served.process.wait(20) == 130
            client.join(30)
            text = served.log.read_text()
    finally:
        hole.close()
    assert "Traceback" not in text and "CancelledError" not in text and "KeyboardInterrupt" not in text, text
    assert "second interrupt: stopping now" in text


def test_check_usage_fails_when_anthropic_refuses_the_credential(fake: FakeAnthropic, tmp_path: Path) -> None:
    env = cli_env(tmp_path, ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-ant-api03-not-a-key-it-knows")
    result = run_cli("check", "--usage", env=env)
    assert result.returncode == 1, result.stdout
    assert "status:       refused" in result.stdout
    assert "refused: Anthropic answered HTTP 401 (authentication_error: invalid x-api-key)" in result.stdout
    as_json = json.loads(run_cli("check", "--usage", "--json", env=env).stdout)
    assert as_json["status"] == "refused" and as_json["usageError"].startswith("refused: Anthropic answered HTTP 401")
    assert "sk-ant-api03-not" not in result.stdout + result.stderr


def test_an_oauth_token_in_anthropic_api_key_is_used_as_one(
    fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path
) -> None:
    result = run_cli("check", "--json", env=cli_env(tmp_path, ANTHROPIC_API_KEY=OAUTH_TOKEN))
    report = json.loads(result.stdout)
    assert result.returncode == 0 and (report["kind"], report["source"]) == ("access_token", "ANTHROPIC_API_KEY")
    assert "sent as a Bearer token" in report["message"]
    assert OAUTH_TOKEN not in result.stdout + result.stderr

    url = proxy(ANTHROPIC_API_KEY=OAUTH_TOKEN)
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=20)
    assert answer.status_code == 200, answer.text
    sent = fake.messages_requests[-1].headers
    assert sent["authorization"] == f"Bearer {OAUTH_TOKEN}" and "x-api-key" not in sent
    assert "oauth-2025-04-20" in sent["anthropic-beta"]


def test_compose_runs_the_proxy_and_a_refresher_the_cli_accepts_on_one_login(tmp_path: Path) -> None:
    import yaml

    from claude_proxy.cli import _refresh, _serve, build_parser

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"proxy", "refresher"}
    proxy, refresher = services["proxy"], services["refresher"]
    assert proxy["image"] == refresher["image"] and "claude-code-proxy" in proxy["image"]
    assert proxy["user"] == refresher["user"]  # both can read the file, and the refresher's rewrite stays readable

    def mount(service: dict[str, object]) -> tuple[str, str, str]:
        (volume,) = service["volumes"]  # type: ignore[misc]
        match = re.fullmatch(r"(.+):(/[^:]*)(?::(ro|rw))?", str(volume))
        assert match, volume
        return match.group(1), match.group(2), match.group(3) or "rw"

    (source, target, mode), (refresher_source, refresher_target, refresher_mode) = mount(proxy), mount(refresher)
    assert (source, target) == (refresher_source, refresher_target) and "~/.claude" in source
    assert (mode, refresher_mode) == ("ro", "rw")  # the proxy only reads; the refresher rewrites the file
    path = proxy["environment"]["CLAUDE_CREDENTIALS_PATH"]
    assert path == refresher["environment"]["CLAUDE_CREDENTIALS_PATH"] and path.startswith(f"{target}/")

    # The commands are ones the CLI takes: parsed as the image's entrypoint would, and every flag in `--help`.
    serve_args = build_parser().parse_args(proxy["command"])
    assert serve_args.func is _serve
    refresh_args = build_parser().parse_args(refresher["command"])
    assert refresh_args.func is _refresh and refresh_args.every == 1800 and refresh_args.credentials == path
    help_text = run_cli("refresh", "--help", env=cli_env(tmp_path)).stdout
    flags = [part for part in refresher["command"] if part.startswith("--")]
    assert flags and all(flag in help_text for flag in flags)
