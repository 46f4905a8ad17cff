"""Settings are checked once, at start: a bad value ends `claude-proxy serve` with one line naming the variable and
exit 2, before anything listens; good values (and no values at all) give the documented defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from claude_proxy.cli import main
from claude_proxy.config import DEFAULT_BASE_URL, ConfigError, Settings, variables_of
from claude_proxy.convert.request import ThinkingBudgets
from tests.proxy.serve_support import free_port, proxy_env

# (environment, the variable the line must name, words the line must contain)
BAD = [
    ({"PORT": "99999"}, "PORT", "port number from 1 to 65535"),
    ({"PORT": "0"}, "PORT", "port number from 1 to 65535"),
    ({"PORT": "http"}, "PORT", "whole number"),
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "critical, error, warning, info, debug or trace"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "json or plain"),
    ({"PROXY_ADAPTIVE_THINKING_MODELS": "^claude-(opus"}, "PROXY_ADAPTIVE_THINKING_MODELS", "regular expression"),
    ({"PROXY_FIXED_SAMPLING_MODELS": "[a-"}, "PROXY_FIXED_SAMPLING_MODELS", "regular expression"),
    ({"ANTHROPIC_BASE_URL": "api.anthropic.com"}, "ANTHROPIC_BASE_URL", "http:// or https://"),
    ({"ANTHROPIC_BASE_URL": "ftp://api.anthropic.com"}, "ANTHROPIC_BASE_URL", "http:// or https://"),
    ({"ANTHROPIC_BASE_URL": "https://"}, "ANTHROPIC_BASE_URL", "no host name"),
    ({"ANTHROPIC_BASE_URL": "http://gw:port"}, "ANTHROPIC_BASE_URL", "not a valid URL"),
    ({"ANTHROPIC_BASE_URL": "https://api.anthropic.com/v1"}, "ANTHROPIC_BASE_URL", "use https://api.anthropic.com"),
    ({"ANTHROPIC_API_BASE": "https://gw.example/anthropic/v1/"}, "ANTHROPIC_API_BASE", "https://gw.example/anthropic"),
    ({"ANTHROPIC_BASE_URL": "https://gw.example/?key=1"}, "ANTHROPIC_BASE_URL", "query"),
    ({"PROXY_MAX_CONCURRENCY": "0"}, "PROXY_MAX_CONCURRENCY", "at least 1"),
    ({"PROXY_MAX_QUEUE": "-1"}, "PROXY_MAX_QUEUE", "at least 0"),
    ({"PROXY_MAX_QUEUE": "2.5"}, "PROXY_MAX_QUEUE", "whole number"),
    ({"PROXY_DEFAULT_MAX_TOKENS": "lots"}, "PROXY_DEFAULT_MAX_TOKENS", "whole number"),
    ({"PROXY_MAX_BODY_BYTES": "100"}, "PROXY_MAX_BODY_BYTES", "at least 1024"),
    ({"PROXY_THINKING_BUDGET_LOW": "512"}, "PROXY_THINKING_BUDGET_LOW", "at least 1024"),
    ({"PROXY_MAX_RETRIES": "-2"}, "PROXY_MAX_RETRIES", "at least 0"),
    ({"PROXY_READ_TIMEOUT": "0"}, "PROXY_READ_TIMEOUT", "at least 0.1"),
    ({"PROXY_CONNECT_TIMEOUT": "nan"}, "PROXY_CONNECT_TIMEOUT", "finite number"),
    ({"PROXY_STREAM_IDLE_TIMEOUT": "inf"}, "PROXY_STREAM_IDLE_TIMEOUT", "finite number"),
    ({"PROXY_HEADER_TIMEOUT": "soon"}, "PROXY_HEADER_TIMEOUT", "must be a number"),
    ({"PROXY_BODY_TIMEOUT": "-5"}, "PROXY_BODY_TIMEOUT", "at least 0.1"),
    ({"PROXY_KEEPALIVE_TIMEOUT": "0.01"}, "PROXY_KEEPALIVE_TIMEOUT", "at least 0.1"),
    ({"PROXY_QUEUE_TIMEOUT": "-1"}, "PROXY_QUEUE_TIMEOUT", "at least 0"),
    ({"PROXY_RETRY_MAX_WAIT": "-1"}, "PROXY_RETRY_MAX_WAIT", "at least 0"),
    ({"PROXY_SHUTDOWN_GRACE": "forever"}, "PROXY_SHUTDOWN_GRACE", "must be a number"),
    ({"PROXY_MODELS_CACHE_SECONDS": "-1"}, "PROXY_MODELS_CACHE_SECONDS", "at least 0"),
    ({"PROXY_PROMPT_CACHE": "maybe"}, "PROXY_PROMPT_CACHE", "true or false"),
    ({"PROXY_MODEL_ALIASES": "gpt-4o"}, "PROXY_MODEL_ALIASES", "alias=model"),
    ({"PROXY_RESPONSES_STORE_MB": "-1"}, "PROXY_RESPONSES_STORE_MB", "at least 0"),
    ({"PROXY_RESPONSES_STORE_MB": "1.5"}, "PROXY_RESPONSES_STORE_MB", "whole number"),
    ({"PROXY_RESPONSES_STORE_MB": "99999"}, "PROXY_RESPONSES_STORE_MB", "at most 65536"),
    ({"PROXY_RESPONSES_STORE_TTL": "0"}, "PROXY_RESPONSES_STORE_TTL", "at least 1"),
    ({"PROXY_RESPONSES_STORE_TTL": "inf"}, "PROXY_RESPONSES_STORE_TTL", "finite number"),
]


# The cases a first try of the proxy met, each run as its own `claude-proxy serve` process; every case in BAD goes
# through the same `main(["serve"])` in-process below (a process each would cost 40 s of a busy 2-core machine).
IN_A_PROCESS = {
    "PORT=99999",
    "LOG_LEVEL=verbose",
    "PROXY_ADAPTIVE_THINKING_MODELS=^claude-(opus",
    "PROXY_FIXED_SAMPLING_MODELS=[a-",
    "ANTHROPIC_BASE_URL=api.anthropic.com",
    "ANTHROPIC_BASE_URL=https://api.anthropic.com/v1",
    "PROXY_CONNECT_TIMEOUT=nan",
    "PROXY_MAX_CONCURRENCY=0",
}


def _id(env: dict[str, str]) -> str:
    return "".join(f"{name}={value}" for name, value in env.items())


IDS = [_id(env) for env, _, _ in BAD]
PROCESS_CASES = [case for case, id_ in zip(BAD, IDS, strict=True) if id_ in IN_A_PROCESS]


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("claude-proxy")  # the installed entry point, as a user runs it
    return [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "claude_proxy"])]


def _assert_refused(code: int | None, out: str, err: str, name: str, words: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"claude-proxy: {name} "), lines[0]
    assert words in lines[0]


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int | None, str, str]]:
    """`claude-proxy serve` started once per case of PROCESS_CASES, all at once: (exit code, stdout, stderr) each."""
    home = tmp_path_factory.mktemp("home")
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [*_serve_command(), "serve", "--host", "127.0.0.1"],
            env=proxy_env(home, {"PORT": port, "ANTHROPIC_API_KEY": "sk-ant-api03-unused", **env}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env, _, _ in PROCESS_CASES
    ]
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # it started serving: the setting was accepted
            process.kill()
            out, err = process.communicate()
        results.append((process.returncode, out, err))
    return results


def test_the_process_cases_are_cases() -> None:
    assert len(PROCESS_CASES) == len(IN_A_PROCESS)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PROCESS_CASES)), ids=[_id(env) for env, _, _ in PROCESS_CASES])
def test_serve_refuses_a_bad_setting_with_one_line_and_exit_2(
    refused: list[tuple[int | None, str, str]], index: int
) -> None:
    _, name, words = PROCESS_CASES[index]
    _assert_refused(*refused[index], name, words)


@pytest.mark.parametrize("env,name,words", BAD, ids=IDS)
def test_serve_main_refuses_every_bad_setting_with_one_line_and_exit_2(
    env: dict[str, str],
    name: str,
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable in list(os.environ):
        if variable.startswith(("ANTHROPIC_", "CLAUDE_", "PROXY_")) or variable in ("PORT", "HOST", "LOG_LEVEL"):
            monkeypatch.delenv(variable)
    for variable, value in {"HOME": str(tmp_path), "ANTHROPIC_API_KEY": "sk-ant-api03-unused", **env}.items():
        monkeypatch.setenv(variable, value)
    # --workers 0 is refused only after the settings are read: a bad setting that slipped through fails the test
    # with that other line instead of serving forever
    code = main(["serve", "--host", "127.0.0.1", "--workers", "0"])
    captured = capsys.readouterr()
    _assert_refused(code, captured.out, captured.err, name, words)


@pytest.mark.parametrize("env,name,words", BAD, ids=IDS)
def test_each_bad_setting_is_a_config_error_naming_it(env: dict[str, str], name: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith(f"{name} ") and words in message and "\n" not in message


def test_every_bad_variable_is_named_on_the_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PORT": "70000", "LOG_LEVEL": "loud", "PROXY_MAX_CONCURRENCY": "1"})
    message = str(caught.value)
    assert "PORT " in message and "LOG_LEVEL " in message and "PROXY_MAX_CONCURRENCY" not in message
    assert "\n" not in message


def test_a_body_budget_that_cannot_hold_the_largest_body_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PROXY_BODY_BUDGET_MB": "16"})  # the default largest body is 32 MB
    assert str(caught.value) == (
        "PROXY_BODY_BUDGET_MB (16 MiB) must hold at least one body of PROXY_MAX_BODY_BYTES (32000000 bytes)"
    )
    settings = Settings.from_env({"PROXY_BODY_BUDGET_MB": "16", "PROXY_MAX_BODY_BYTES": "16000000"})
    assert settings.body_budget_bytes >= settings.max_body_bytes


def test_a_password_in_the_base_url_is_never_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ANTHROPIC_BASE_URL": "https://user:hunter2@gw.example/v1"})
    assert "hunter2" not in str(caught.value)
    assert "use https://gw.example" in str(caught.value)


def test_no_variables_give_the_embedded_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(credentials_path=settings.credentials_path)
    assert (settings.host, settings.port, settings.base_url) == ("127.0.0.1", 8080, DEFAULT_BASE_URL)
    assert settings.log_level == "info" and settings.api_key is None and settings.empty_credentials == ()
    assert (settings.responses_store_bytes, settings.responses_store_ttl) == (16 * 1024 * 1024, 3600.0)


def test_an_idle_proxy_checks_its_login_every_half_minute_by_default() -> None:
    # With the operator's login watch (20 s) a dead login shows as LoginValid=False within a minute of going idle.
    assert Settings.from_env({}).login_check_seconds == 30.0
    assert Settings.from_env({"PROXY_LOGIN_CHECK_SECONDS": "0"}).login_check_seconds == 0.0


def test_blank_values_mean_the_default_and_values_are_normalised() -> None:
    settings = Settings.from_env(
        {
            "PORT": "",
            "LOG_LEVEL": " DEBUG ",
            "LOG_FORMAT": "Plain",
            "PROXY_PROMPT_CACHE": "off",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9000/gateway/",
            "PROXY_MODEL_ALIASES": "gpt-4o = claude-sonnet-4-6, fast=claude-haiku-4-5",
            "PROXY_MODELS": " , ",
            "PROXY_API_KEYS": "inbound-key-one-0001, inbound-key-two-0002,",
            "PROXY_MAX_QUEUE": "0",
            "PROXY_SHUTDOWN_GRACE": "0",
            "PROXY_RESPONSES_STORE_MB": "0",
            "PROXY_RESPONSES_STORE_TTL": "",
        }
    )
    assert settings.port == 8080
    assert (settings.log_level, settings.log_format, settings.prompt_cache) == ("debug", "plain", False)
    assert settings.base_url == "http://127.0.0.1:9000/gateway"
    assert settings.model_aliases == {"gpt-4o": "claude-sonnet-4-6", "fast": "claude-haiku-4-5"}
    assert settings.models == Settings().models
    assert settings.inbound_keys == ("inbound-key-one-0001", "inbound-key-two-0002")
    assert (settings.max_queue, settings.shutdown_grace) == (0, 0.0)
    assert (settings.responses_store_bytes, settings.responses_store_ttl) == (0, 3600.0)
    assert Settings.from_env({"PROXY_RESPONSES_STORE_MB": "2"}).responses_store_bytes == 2 * 1024 * 1024


def test_anthropic_base_url_wins_over_the_older_name() -> None:
    both = {"ANTHROPIC_BASE_URL": "http://a.example", "ANTHROPIC_API_BASE": "http://b.example"}
    assert Settings.from_env(both).base_url == "http://a.example"
    assert Settings.from_env({"ANTHROPIC_API_BASE": "http://b.example/"}).base_url == "http://b.example"


def test_the_access_token_variable_and_empty_credentials_are_recorded() -> None:
    settings = Settings.from_env({"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-x"})
    assert settings.api_key is None
    assert settings.access_token == "sk-ant-oat01-x"
    assert settings.access_token_variable == "CLAUDE_CODE_OAUTH_TOKEN"
    assert settings.empty_credentials == ("ANTHROPIC_API_KEY",)
    both = Settings.from_env({"CLAUDE_ACCESS_TOKEN": "a", "CLAUDE_CODE_OAUTH_TOKEN": "b"})
    assert (both.access_token, both.access_token_variable) == ("a", "CLAUDE_ACCESS_TOKEN")
    assert Settings.from_env({"CLAUDE_ACCESS_TOKEN": "  "}).empty_credentials == ("CLAUDE_ACCESS_TOKEN",)


def test_settings_built_by_field_name_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-from-env")
    monkeypatch.setenv("CLAUDE_CREDENTIALS_PATH", "/elsewhere/c.json")
    settings = Settings(host="127.0.0.1")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.api_key is None and settings.credentials_path is None
    assert settings.empty_credentials == () and settings.access_token_variable == "CLAUDE_ACCESS_TOKEN"
    from_env = Settings.from_env()  # the process environment, read only here
    assert (from_env.port, from_env.credentials_path) == (9999, Path("/elsewhere/c.json"))


def test_settings_are_frozen_and_keep_secrets_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "ANTHROPIC_API_KEY": "sk-ant-api03-secret1",
            "CLAUDE_ACCESS_TOKEN": "sk-ant-oat01-secret2",
            "PROXY_API_KEYS": "inbound-secret3-of-the-test",
        }
    )
    assert (settings.api_key, settings.access_token, settings.inbound_keys) == (
        "sk-ant-api03-secret1",
        "sk-ant-oat01-secret2",
        ("inbound-secret3-of-the-test",),
    )
    shown = f"{settings!r} {settings!s}"
    assert "secret" not in shown and "port=8080" in shown
    with pytest.raises(ValidationError):
        settings.port = 9000  # type: ignore[misc]


def test_derived_settings_follow_their_variables() -> None:
    settings = Settings.from_env({"PROXY_THINKING_BUDGET_LOW": "4096", "PROXY_THINKING_BUDGET_HIGH": "30000"})
    assert settings.thinking_budgets == ThinkingBudgets(minimal=1024, low=4096, medium=8192, high=30000)
    assert settings.conversion_options().budgets == settings.thinking_budgets
    assert Settings(responses_store_mb=3).responses_store_bytes == 3 * 1024 * 1024
    assert Settings.from_env({"CLAUDE_CONFIG_DIR": "/cfg"}).credentials_path == Path("/cfg/.credentials.json")
    assert Settings.from_env({"HOME": "/home/u"}).credentials_path == Path("/home/u/.claude/.credentials.json")


SETTINGS_TABLE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# Rows of the table that are no field's variable: `from_env` finds the credentials file with them.
NOT_FIELDS = {"CLAUDE_CREDENTIALS_PATH", "CLAUDE_CONFIG_DIR"}


def _documented_defaults() -> dict[str, str]:
    """Variable -> the Default cell of its row in the settings table, backticks and escaped pipes undone."""
    rows: dict[str, str] = {}
    for line in SETTINGS_TABLE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and (name := re.fullmatch(r"`([A-Z_]+)`", cells[0])):
            rows[name.group(1)] = cells[1][1:-1] if cells[1][:1] == cells[1][-1:] == "`" else cells[1]
    return rows


def _as_documented(default: object) -> str:
    if default is None or default == () or default == {}:
        return "—"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, tuple):
        return ", ".join(default)
    return str(default)


def _read_by_settings() -> dict[str, str]:
    """Every variable a field of Settings reads -> the field's default as the table shows it. A field's later names
    (read only when the first is unset) have no default of their own."""
    read: dict[str, str] = {}
    for field in Settings.model_fields.values():
        for index, variable in enumerate(variables_of(field)):
            read[variable] = _as_documented(field.default) if index == 0 else "—"
    return read


def test_the_settings_table_has_every_variable_with_the_default_the_class_has() -> None:
    documented, read = _documented_defaults(), _read_by_settings()
    assert len(read) > 30  # the class's variables were found
    assert {variable: documented.get(variable) for variable in read} == read
    assert set(documented) - set(read) == NOT_FIELDS


def test_the_documented_variables_that_are_no_field_are_read_by_from_env() -> None:
    home = Settings.from_env({"HOME": "/home/u"}).credentials_path
    for variable in NOT_FIELDS:
        assert Settings.from_env({"HOME": "/home/u", variable: "/elsewhere"}).credentials_path != home, variable


@pytest.mark.slow
def test_serve_port_flag_out_of_range_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_serve_command(), "serve", "--port", "99999"],
        env=proxy_env(tmp_path, {}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--port: must be a port number from 1 to 65535" in done.stderr


@pytest.mark.parametrize("value", ["", " ", " , ,", ","])
def test_inbound_keys_set_but_naming_no_key_are_refused(value: str) -> None:
    """`PROXY_API_KEYS=' , ,'` (or blank) is a misconfiguration, not a request for an open proxy."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PROXY_API_KEYS": value})
    assert str(info.value).startswith("PROXY_API_KEYS is set but holds no key")


def test_a_short_inbound_key_is_refused_by_its_position_never_shown() -> None:
    long_key = "k" * 16  # the documented minimum
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PROXY_API_KEYS": f"{long_key}, tiny-secret-9"})
    message = str(info.value)
    assert message.startswith("PROXY_API_KEYS key 2 of 2 is 13 characters long: each key must have at least 16")
    assert "tiny-secret-9" not in message and long_key not in message
    assert Settings.from_env({"PROXY_API_KEYS": f"{long_key}, {long_key}x"}).inbound_keys == (long_key, f"{long_key}x")


def test_no_inbound_keys_is_the_default_and_the_loopback_the_listen_address() -> None:
    settings = Settings.from_env({})
    assert (settings.inbound_keys, settings.host) == ((), "127.0.0.1")
    assert Settings.from_env({"HOST": "0.0.0.0"}).host == "0.0.0.0"
