"""Settings, read once from the environment, checked, and kept as an immutable value.

`Environment` (pydantic-settings) declares every variable of README's settings table with its range; a bad value is
a `ConfigError` whose one line names the variable and says why, so `serve` can stop before it listens. Everything
else receives a `Settings` (or the parts it needs); nothing below the app and the CLI reads the
environment itself, so tests build settings from plain dicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from claude_proxy.convert.request import Options, ThinkingBudgets
from claude_proxy.credentials.resolver import RECHECK_SECONDS, CredentialResolver
from claude_proxy.redact import display_url

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
MB = 1024 * 1024


def default_credentials_path(env: Mapping[str, str]) -> Path:
    """Where the Claude Code credentials file lives: explicit path, then $CLAUDE_CONFIG_DIR, then ~/.claude."""
    if env.get("CLAUDE_CREDENTIALS_PATH"):
        return Path(env["CLAUDE_CREDENTIALS_PATH"]).expanduser()
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"]).expanduser() / ".credentials.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".claude" / ".credentials.json"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable and says why, on one line."""


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# The upstream credential variables, in priority order: one set to an empty value is ignored, and said so.
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_ACCESS_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def _base_url(value: str) -> str:
    url = value.rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://, e.g. https://api.anthropic.com")
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or a fragment")
    if parts.path.endswith("/v1"):
        raise ValueError(f"must not end in /v1 (the proxy adds /v1/messages itself): use {display_url(url[:-3])}")
    return url


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc})") from None
    return value


def _items(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _aliases(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return dict(value)
    aliases: dict[str, str] = {}
    for item in _items(value):
        alias, sep, target = item.partition("=")
        if not sep or not alias.strip() or not target.strip():
            raise ValueError(f"takes comma-separated alias=model pairs, and {item!r} is not one")
        aliases[alias.strip()] = target.strip()
    return aliases


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Items = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_items)]
Aliases = Annotated[dict[str, str], NoDecode, BeforeValidator(_aliases)]
Regex = Annotated[str, AfterValidator(_regex)]
BaseURL = Annotated[str, AfterValidator(_base_url)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(ge=0)]  # zero allowed: "no wait", "no cache"
Timeout = Annotated[float, Field(ge=0.1)]
Budget = Annotated[int, Field(ge=1024)]
LogLevel = Annotated[Literal["critical", "error", "warning", "info", "debug", "trace"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["json", "plain"], BeforeValidator(_lower)]

_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("environment", default=None)


class _Variables(EnvSettingsSource):
    """The environment source over one mapping (os.environ unless `Environment.read` is given another). A variable
    set to blanks counts as unset, as it always has: `PORT=` means the default port."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self.variables = variables
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value.strip() for name, value in self.variables.items() if value.strip()}


def _env(name: str, default: Any = None) -> Any:
    return Field(default=default, validation_alias=name)


class Environment(BaseSettings):
    """Every variable of README's settings table, parsed and range-checked (pydantic-settings). `Settings.from_env`
    turns the result into the `Settings` the rest of the proxy receives."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", allow_inf_nan=False, frozen=True)

    host: str = _env("HOST", default="0.0.0.0")
    port: Port = _env("PORT", default=8080)
    base_url: BaseURL | None = _env("ANTHROPIC_BASE_URL")
    api_base: BaseURL | None = _env("ANTHROPIC_API_BASE")  # the older name, used when the first is unset
    api_key: str | None = _env("ANTHROPIC_API_KEY")
    access_token: str | None = _env("CLAUDE_ACCESS_TOKEN")
    oauth_token: str | None = _env("CLAUDE_CODE_OAUTH_TOKEN")
    inbound_keys: Items = _env("PROXY_API_KEYS", default=())
    default_max_tokens: Annotated[int, Field(ge=1)] = _env("PROXY_DEFAULT_MAX_TOKENS", default=8192)
    default_model: str | None = _env("PROXY_DEFAULT_MODEL")
    prompt_cache: bool = _env("PROXY_PROMPT_CACHE", default=True)
    model_aliases: Aliases = _env("PROXY_MODEL_ALIASES", default={})
    models: Items = _env("PROXY_MODELS", default=DEFAULT_MODELS)
    models_cache_seconds: Seconds = _env("PROXY_MODELS_CACHE_SECONDS", default=300.0)
    adaptive_thinking_models: Regex = _env("PROXY_ADAPTIVE_THINKING_MODELS", default=DEFAULT_ADAPTIVE_THINKING)
    fixed_sampling_models: Regex = _env("PROXY_FIXED_SAMPLING_MODELS", default=DEFAULT_FIXED_SAMPLING)
    budget_minimal: Budget = _env("PROXY_THINKING_BUDGET_MINIMAL", default=ThinkingBudgets.minimal)
    budget_low: Budget = _env("PROXY_THINKING_BUDGET_LOW", default=ThinkingBudgets.low)
    budget_medium: Budget = _env("PROXY_THINKING_BUDGET_MEDIUM", default=ThinkingBudgets.medium)
    budget_high: Budget = _env("PROXY_THINKING_BUDGET_HIGH", default=ThinkingBudgets.high)
    connect_timeout: Timeout = _env("PROXY_CONNECT_TIMEOUT", default=10.0)
    read_timeout: Timeout = _env("PROXY_READ_TIMEOUT", default=600.0)
    stream_idle_timeout: Timeout = _env("PROXY_STREAM_IDLE_TIMEOUT", default=120.0)
    max_retries: Annotated[int, Field(ge=0)] = _env("PROXY_MAX_RETRIES", default=2)
    retry_max_wait: Seconds = _env("PROXY_RETRY_MAX_WAIT", default=30.0)
    log_level: LogLevel = _env("LOG_LEVEL", default="info")
    log_format: LogFormat = _env("LOG_FORMAT", default="json")
    max_body_bytes: Annotated[int, Field(ge=1024)] = _env("PROXY_MAX_BODY_BYTES", default=DEFAULT_MAX_BODY_BYTES)
    max_concurrency: Annotated[int, Field(ge=1)] = _env("PROXY_MAX_CONCURRENCY", default=64)
    max_queue: Annotated[int, Field(ge=0)] = _env("PROXY_MAX_QUEUE", default=256)
    queue_timeout: Seconds = _env("PROXY_QUEUE_TIMEOUT", default=30.0)
    header_timeout: Timeout = _env("PROXY_HEADER_TIMEOUT", default=10.0)
    body_timeout: Timeout = _env("PROXY_BODY_TIMEOUT", default=30.0)
    keepalive_timeout: Timeout = _env("PROXY_KEEPALIVE_TIMEOUT", default=5.0)
    shutdown_grace: Seconds = _env("PROXY_SHUTDOWN_GRACE", default=25.0)
    responses_store_mb: Annotated[int, Field(ge=0, le=65536)] = _env("PROXY_RESPONSES_STORE_MB", default=16)
    responses_store_ttl: Annotated[float, Field(ge=1)] = _env("PROXY_RESPONSES_STORE_TTL", default=3600.0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_Variables(settings_cls, _ENVIRONMENT.get() or os.environ),)

    @classmethod
    def read(cls, variables: Mapping[str, str]) -> Environment:
        """The settings in `variables`; raises ConfigError naming every variable that is wrong, on one line."""
        token = _ENVIRONMENT.set(variables)
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None
        finally:
            _ENVIRONMENT.reset(token)


def _problem(error: ErrorDetails) -> str:
    """One validation error as `NAME reason (got 'value')`, in the words of the variable, not of pydantic."""
    name = ".".join(str(part) for part in error["loc"]) or "environment"
    ctx = error.get("ctx") or {}
    kind = error["type"]
    reasons = {
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number",
        "bool_parsing": "must be true or false",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "literal_error": f"must be one of {ctx.get('expected', '').replace(chr(39), '')}",
    }
    reason = str(ctx["error"]) if kind == "value_error" and "error" in ctx else reasons.get(kind, error["msg"])
    if name == "PORT" and kind in ("greater_than_equal", "less_than_equal"):
        reason = "must be a port number from 1 to 65535"
    shown = error.get("input")
    if not isinstance(shown, str):  # only checked variables get here, and none of them holds a secret
        return f"{name} {reason}"
    if name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"):
        shown = display_url(shown)
    return f"{name} {reason} (got {shown!r})"


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    base_url: str = DEFAULT_BASE_URL
    # Credentials, in priority order. Secrets are kept out of repr().
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_variable: str = "CLAUDE_ACCESS_TOKEN"  # the variable `access_token` came from
    empty_credentials: tuple[str, ...] = ()  # credential variables set to an empty value (so ignored)
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
    # The Responses output items kept so item references resolve (0 bytes: none kept, references refused).
    responses_store_bytes: int = 16 * MB
    responses_store_ttl: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in `env` (default: the process environment), each checked once here; raises ConfigError
        with one line naming every variable that is wrong and why."""
        env = os.environ if env is None else env
        read = Environment.read(env)
        access_token, token_variable = read.access_token, "CLAUDE_ACCESS_TOKEN"
        if not access_token and read.oauth_token:
            access_token, token_variable = read.oauth_token, "CLAUDE_CODE_OAUTH_TOKEN"
        return cls(
            host=read.host,
            port=read.port,
            base_url=read.base_url or read.api_base or DEFAULT_BASE_URL,
            api_key=read.api_key,
            access_token=access_token,
            access_token_variable=token_variable,
            empty_credentials=tuple(name for name in CREDENTIAL_VARIABLES if name in env and not env[name].strip()),
            credentials_path=default_credentials_path(env),
            inbound_keys=read.inbound_keys,
            default_max_tokens=read.default_max_tokens,
            default_model=read.default_model,
            prompt_cache=read.prompt_cache,
            model_aliases=read.model_aliases,
            models=read.models or DEFAULT_MODELS,
            models_cache_seconds=read.models_cache_seconds,
            adaptive_thinking_models=read.adaptive_thinking_models,
            fixed_sampling_models=read.fixed_sampling_models,
            thinking_budgets=ThinkingBudgets(
                read.budget_minimal, read.budget_low, read.budget_medium, read.budget_high
            ),
            connect_timeout=read.connect_timeout,
            read_timeout=read.read_timeout,
            stream_idle_timeout=read.stream_idle_timeout,
            max_retries=read.max_retries,
            retry_max_wait=read.retry_max_wait,
            log_level=read.log_level,
            log_format=read.log_format,
            max_body_bytes=read.max_body_bytes,
            max_concurrency=read.max_concurrency,
            max_queue=read.max_queue,
            queue_timeout=read.queue_timeout,
            header_timeout=read.header_timeout,
            body_timeout=read.body_timeout,
            keepalive_timeout=read.keepalive_timeout,
            shutdown_grace=read.shutdown_grace,
            responses_store_bytes=read.responses_store_mb * MB,
            responses_store_ttl=read.responses_store_ttl,
        )

    def conversion_options(self) -> Options:
        """What the conversion layer needs of these settings."""
        return Options(
            default_max_tokens=self.default_max_tokens,
            default_model=self.default_model,
            aliases=dict(self.model_aliases),
            adaptive_thinking=re.compile(self.adaptive_thinking_models),
            fixed_sampling=re.compile(self.fixed_sampling_models),
            budgets=self.thinking_budgets,
            prompt_cache=self.prompt_cache,
        )

    def credential_resolver(self, path: Path | None = None) -> CredentialResolver:
        """The resolver these settings describe (`path` instead of theirs, for `check --credentials`)."""
        return CredentialResolver(
            self.api_key,
            self.access_token,
            self.credentials_path if path is None else path,
            token_variable=self.access_token_variable,
            empty=self.empty_credentials,
            recheck=RECHECK_SECONDS,
        )
