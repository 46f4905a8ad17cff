"""Settings, read once from the environment into an immutable value.

Everything else receives a `Settings` (or the parts it needs); nothing below the app and the CLI reads the
environment itself, so tests build settings from plain dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BASE_URL = "https://api.anthropic.com"

# The fallback answer of GET /v1/models when the upstream list cannot be had (e.g. OAuth tokens). Not a whitelist:
# any model id is passed through to Anthropic.
DEFAULT_MODELS = (
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
)

# Models that take `thinking: {type: adaptive}` + `output_config.effort` instead of a token budget.
DEFAULT_ADAPTIVE_THINKING = r"^claude-(opus|sonnet)-4-([6-9]|\d\d)|^claude-[a-z]+-([5-9]|\d\d)"
# Models that refuse non-default temperature/top_p/top_k (adaptive-thinking-only families).
DEFAULT_FIXED_SAMPLING = r"^claude-opus-4-([7-9]|\d\d)|^claude-[a-z]+-([5-9]|\d\d)"


# Anthropic refuses request bodies over 32 MB; a body the proxy accepts must be one it can still forward.
DEFAULT_MAX_BODY_BYTES = 32_000_000


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _aliases(env: Mapping[str, str], name: str) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for item in _list(env, name):
        alias, sep, target = item.partition("=")
        if not sep or not alias.strip() or not target.strip():
            raise ConfigError(f"{name} takes comma-separated alias=model pairs, got {item!r}")
        aliases[alias.strip()] = target.strip()
    return aliases


def default_credentials_path(env: Mapping[str, str]) -> Path:
    """Where the Claude Code credentials file lives: explicit path, then $CLAUDE_CONFIG_DIR, then ~/.claude."""
    if env.get("CLAUDE_CREDENTIALS_PATH"):
        return Path(env["CLAUDE_CREDENTIALS_PATH"]).expanduser()
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]).expanduser() / ".credentials.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".claude" / ".credentials.json"


@dataclass(frozen=True)
class ThinkingBudgets:
    """Token budgets for `reasoning_effort` on models that take `thinking: {type: enabled}`."""

    minimal: int = 1024
    low: int = 2048
    medium: int = 8192
    high: int = 24576


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    base_url: str = DEFAULT_BASE_URL
    # Credentials, in priority order. Secrets are kept out of repr().
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    credentials_path: Path = field(default_factory=lambda: default_credentials_path(os.environ))
    inbound_keys: tuple[str, ...] = field(default=(), repr=False)
    default_max_tokens: int = 8192
    default_model: str | None = None
    prompt_cache: bool = True
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = DEFAULT_MODELS
    models_cache_seconds: float = 300.0
    adaptive_thinking_models: str = DEFAULT_ADAPTIVE_THINKING
    fixed_sampling_models: str = DEFAULT_FIXED_SAMPLING
    thinking_budgets: ThinkingBudgets = field(default_factory=ThinkingBudgets)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    stream_idle_timeout: float = 120.0
    max_retries: int = 2
    retry_max_wait: float = 30.0
    log_level: str = "info"
    log_format: str = "json"
    # Limits and timeouts towards clients (README, "Operations").
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrency: int = 64
    max_queue: int = 256
    queue_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    shutdown_grace: float = 25.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base_url = env.get("ANTHROPIC_BASE_URL") or env.get("ANTHROPIC_API_BASE") or DEFAULT_BASE_URL
        access_token = env.get("CLAUDE_ACCESS_TOKEN") or env.get("CLAUDE_CODE_OAUTH_TOKEN") or None
        budgets = ThinkingBudgets(
            minimal=_int(env, "PROXY_THINKING_BUDGET_MINIMAL", ThinkingBudgets.minimal, 1024),
            low=_int(env, "PROXY_THINKING_BUDGET_LOW", ThinkingBudgets.low, 1024),
            medium=_int(env, "PROXY_THINKING_BUDGET_MEDIUM", ThinkingBudgets.medium, 1024),
            high=_int(env, "PROXY_THINKING_BUDGET_HIGH", ThinkingBudgets.high, 1024),
        )
        return cls(
            host=env.get("HOST") or "0.0.0.0",
            port=_int(env, "PORT", 8080, 1),
            base_url=base_url.rstrip("/"),
            api_key=(env.get("ANTHROPIC_API_KEY") or "").strip() or None,
            access_token=(access_token or "").strip() or None,
            credentials_path=default_credentials_path(env),
            inbound_keys=_list(env, "PROXY_API_KEYS"),
            default_max_tokens=_int(env, "PROXY_DEFAULT_MAX_TOKENS", 8192, 1),
            default_model=(env.get("PROXY_DEFAULT_MODEL") or "").strip() or None,
            prompt_cache=_bool(env, "PROXY_PROMPT_CACHE", True),
            model_aliases=_aliases(env, "PROXY_MODEL_ALIASES"),
            models=_list(env, "PROXY_MODELS") or DEFAULT_MODELS,
            models_cache_seconds=_float(env, "PROXY_MODELS_CACHE_SECONDS", 300.0),
            adaptive_thinking_models=env.get("PROXY_ADAPTIVE_THINKING_MODELS", DEFAULT_ADAPTIVE_THINKING),
            fixed_sampling_models=env.get("PROXY_FIXED_SAMPLING_MODELS", DEFAULT_FIXED_SAMPLING),
            thinking_budgets=budgets,
            connect_timeout=_float(env, "PROXY_CONNECT_TIMEOUT", 10.0, 0.1),
            read_timeout=_float(env, "PROXY_READ_TIMEOUT", 600.0, 0.1),
            stream_idle_timeout=_float(env, "PROXY_STREAM_IDLE_TIMEOUT", 120.0, 0.1),
            max_retries=_int(env, "PROXY_MAX_RETRIES", 2, 0),
            retry_max_wait=_float(env, "PROXY_RETRY_MAX_WAIT", 30.0),
            log_level=(env.get("LOG_LEVEL") or "info").lower(),
            log_format=_choice(env, "LOG_FORMAT", ("json", "plain"), "json"),
            max_body_bytes=_int(env, "PROXY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024),
            max_concurrency=_int(env, "PROXY_MAX_CONCURRENCY", 64, 1),
            max_queue=_int(env, "PROXY_MAX_QUEUE", 256, 0),
            queue_timeout=_float(env, "PROXY_QUEUE_TIMEOUT", 30.0),
            header_timeout=_float(env, "PROXY_HEADER_TIMEOUT", 10.0, 0.1),
            body_timeout=_float(env, "PROXY_BODY_TIMEOUT", 30.0, 0.1),
            keepalive_timeout=_float(env, "PROXY_KEEPALIVE_TIMEOUT", 5.0, 0.1),
            shutdown_grace=_float(env, "PROXY_SHUTDOWN_GRACE", 25.0),
        )
