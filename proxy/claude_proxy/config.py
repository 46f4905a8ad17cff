"""Settings, read once from the environment, checked, and kept as an immutable value.

`Settings` (pydantic-settings) declares every variable of the settings table in docs/configuration.md, each with its
default and its range, once. `Settings.from_env` reads them; a bad value is a `ConfigError` whose one line names the
variable and says why, so `serve` can stop before it listens. `Settings(port=9000, ...)` takes fields by name and
reads no environment at all, so tests build settings from plain values or plain dicts. Nothing below the app and the
CLI reads the environment itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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

MB = 1024 * 1024

# The shortest inbound key `PROXY_API_KEYS` takes: a short key is one a client on the network can guess.
MIN_KEY_LENGTH = 16
INBOUND_KEYS_VARIABLE = "PROXY_API_KEYS"

# The upstream credential variables, in priority order: one set to an empty value is ignored, and said so.
CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_ACCESS_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


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


def _keys(value: Any) -> tuple[str, ...]:
    """The inbound keys. Set as a variable, it must name at least one (a blank or comma-only value would otherwise
    leave the proxy open while its owner believes it closed); each key has at least `MIN_KEY_LENGTH` characters. The
    message says which key by its position, never the key."""
    keys = _items(value)
    if isinstance(value, str) and not keys:
        raise ValueError("is set but holds no key: give one or more comma-separated keys, or unset it")
    for position, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"key {position} of {len(keys)} is {len(key)} characters long: each key must have at least "
                f"{MIN_KEY_LENGTH} (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return keys


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


def _models(value: tuple[str, ...]) -> tuple[str, ...]:
    return value or DEFAULT_MODELS  # `PROXY_MODELS=,` names no model: the fallback list still answers


Items = Annotated[tuple[str, ...], BeforeValidator(_items)]
Models = Annotated[tuple[str, ...], BeforeValidator(_items), AfterValidator(_models)]
InboundKeys = Annotated[tuple[str, ...], BeforeValidator(_keys)]
Aliases = Annotated[dict[str, str], BeforeValidator(_aliases)]
Regex = Annotated[str, AfterValidator(_regex)]
BaseURL = Annotated[str, AfterValidator(_base_url)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(ge=0)]  # zero allowed: "no wait", "no cache"
Timeout = Annotated[float, Field(ge=0.1)]
Budget = Annotated[int, Field(ge=1024)]  # Anthropic's smallest thinking budget
LogLevel = Annotated[Literal["critical", "error", "warning", "info", "debug", "trace"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["json", "plain"], BeforeValidator(_lower)]

# The variables `Settings.from_env` is reading; None (plain construction): no environment is read at all.
_READING: ContextVar[Mapping[str, str] | None] = ContextVar("settings_variables", default=None)


def variables_of(field: FieldInfo) -> tuple[str, ...]:
    """The variables a field is read from, in priority order (none for a field derived from others)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    return (alias,) if isinstance(alias, str) else ()


class _Variables(PydanticBaseSettingsSource):
    """The fields' variables in one mapping, each value under the name it was set as, so that an error names the
    variable the user set (`ANTHROPIC_API_BASE`, not the first name of the field). A variable set to blanks counts as
    unset (`PORT=` means the default port), but for `PROXY_API_KEYS`: set to blanks, it is refused rather than taken
    to ask for no key."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # abstract in the base class; `__call__` reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.settings_cls.model_fields.values():
            for name in variables_of(field):
                value = self.variables.get(name, "").strip()
                if value or (name == INBOUND_KEYS_VARIABLE and name in self.variables):
                    values[name] = value
                    break
        return values


def _env(variables: str | tuple[str, ...], default: Any = None, secret: bool = False) -> Any:
    """A field read from `variables` (the first one set wins); a secret stays out of repr()."""
    alias = variables if isinstance(variables, str) else AliasChoices(*variables)
    return Field(default=default, validation_alias=alias, repr=not secret)


class Settings(BaseSettings):
    """Every setting of the proxy, its variable, default and range; built by `from_env` in the app and the CLI."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="forbid",
        allow_inf_nan=False,
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    # The loopback only unless told otherwise: the images and the operator's pods set HOST=0.0.0.0 themselves.
    host: str = _env("HOST", "127.0.0.1")
    port: Port = _env("PORT", 8080)
    # ANTHROPIC_API_BASE is the older name, read when ANTHROPIC_BASE_URL is unset.
    base_url: BaseURL = _env(("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"), DEFAULT_BASE_URL)
    # Credentials, in priority order.
    api_key: str | None = _env("ANTHROPIC_API_KEY", secret=True)
    access_token: str | None = _env(("CLAUDE_ACCESS_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"), secret=True)
    access_token_variable: str = "CLAUDE_ACCESS_TOKEN"  # the variable `access_token` came from
    empty_credentials: tuple[str, ...] = ()  # credential variables set to an empty value (so ignored)
    # `from_env` finds the file from CLAUDE_CREDENTIALS_PATH, CLAUDE_CONFIG_DIR or HOME; None: no file at all.
    credentials_path: Path | None = None
    # How long the last good credential stands in for a credentials file that became unreadable or malformed.
    credentials_grace: Seconds = _env("PROXY_CREDENTIALS_GRACE", 300.0)
    # Unset: no key asked for. Set: at least one key, each at least MIN_KEY_LENGTH characters (`_keys`).
    inbound_keys: InboundKeys = _env(INBOUND_KEYS_VARIABLE, (), secret=True)
    default_max_tokens: Annotated[int, Field(ge=1)] = _env("PROXY_DEFAULT_MAX_TOKENS", 8192)
    default_model: str | None = _env("PROXY_DEFAULT_MODEL")
    prompt_cache: bool = _env("PROXY_PROMPT_CACHE", True)
    model_aliases: Aliases = _env("PROXY_MODEL_ALIASES", {})
    models: Models = _env("PROXY_MODELS", DEFAULT_MODELS)
    models_cache_seconds: Seconds = _env("PROXY_MODELS_CACHE_SECONDS", 300.0)
    # After this long with no answer from Anthropic, one GET /v1/models checks the credential (0: never).
    login_check_seconds: Seconds = _env("PROXY_LOGIN_CHECK_SECONDS", 30.0)
    adaptive_thinking_models: Regex = _env("PROXY_ADAPTIVE_THINKING_MODELS", DEFAULT_ADAPTIVE_THINKING)
    fixed_sampling_models: Regex = _env("PROXY_FIXED_SAMPLING_MODELS", DEFAULT_FIXED_SAMPLING)
    budget_minimal: Budget = _env("PROXY_THINKING_BUDGET_MINIMAL", 1024)
    budget_low: Budget = _env("PROXY_THINKING_BUDGET_LOW", 2048)
    budget_medium: Budget = _env("PROXY_THINKING_BUDGET_MEDIUM", 8192)
    budget_high: Budget = _env("PROXY_THINKING_BUDGET_HIGH", 24576)
    connect_timeout: Timeout = _env("PROXY_CONNECT_TIMEOUT", 10.0)
    read_timeout: Timeout = _env("PROXY_READ_TIMEOUT", 600.0)
    stream_idle_timeout: Timeout = _env("PROXY_STREAM_IDLE_TIMEOUT", 120.0)
    max_retries: Annotated[int, Field(ge=0)] = _env("PROXY_MAX_RETRIES", 2)
    retry_max_wait: Seconds = _env("PROXY_RETRY_MAX_WAIT", 30.0)
    log_level: LogLevel = _env("LOG_LEVEL", "info")
    log_format: LogFormat = _env("LOG_FORMAT", "json")
    # Limits and timeouts towards clients (docs/operations.md). Anthropic refuses request bodies over 32 MB: a body
    # the proxy accepts must be one it can still forward.
    max_body_bytes: Annotated[int, Field(ge=1024)] = _env("PROXY_MAX_BODY_BYTES", 32_000_000)
    max_concurrency: Annotated[int, Field(ge=1)] = _env("PROXY_MAX_CONCURRENCY", 64)
    max_queue: Annotated[int, Field(ge=0)] = _env("PROXY_MAX_QUEUE", 256)
    queue_timeout: Seconds = _env("PROXY_QUEUE_TIMEOUT", 30.0)
    header_timeout: Timeout = _env("PROXY_HEADER_TIMEOUT", 10.0)
    # A request head is read piece by piece and refused (431) once past either bound, before it is all received.
    max_header_bytes: Annotated[int, Field(ge=1024, le=1048576)] = _env("PROXY_MAX_HEADER_BYTES", 32768)
    max_headers: Annotated[int, Field(ge=8, le=10000)] = _env("PROXY_MAX_HEADERS", 100)
    max_connections: Annotated[int, Field(ge=1)] = _env("PROXY_MAX_CONNECTIONS", 1000)
    # The whole body must have arrived this many seconds after its head: a deadline, not a silence timeout.
    body_timeout: Timeout = _env("PROXY_BODY_TIMEOUT", 60.0)
    # Request body bytes held at once, over all requests (whole MiB); a body that does not fit is refused (429).
    body_budget_mb: Annotated[int, Field(ge=1, le=65536)] = _env("PROXY_BODY_BUDGET_MB", 64)
    max_json_depth: Annotated[int, Field(ge=8, le=200)] = _env("PROXY_MAX_JSON_DEPTH", 64)
    # A stream whose client reads nothing for this long is cut, its slot and upstream request freed.
    send_timeout: Timeout = _env("PROXY_SEND_TIMEOUT", 30.0)
    log_field_chars: Annotated[int, Field(ge=16, le=65536)] = _env("PROXY_LOG_FIELD_CHARS", 200)
    keepalive_timeout: Timeout = _env("PROXY_KEEPALIVE_TIMEOUT", 5.0)
    shutdown_grace: Seconds = _env("PROXY_SHUTDOWN_GRACE", 25.0)
    # The Responses output items kept so item references resolve (0: none kept, references refused).
    responses_store_mb: Annotated[int, Field(ge=0, le=65536)] = _env("PROXY_RESPONSES_STORE_MB", 16)
    responses_store_ttl: Annotated[float, Field(ge=1)] = _env("PROXY_RESPONSES_STORE_TTL", 3600.0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        variables = _READING.get()
        return (init_settings,) if variables is None else (init_settings, _Variables(settings_cls, variables))

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        """What the variables say beyond each field's own value: which variable the access token came from, the
        credential variables set empty, and where the credentials file is."""
        if not isinstance(data, dict):
            return data
        derived: dict[str, Any] = {}
        if "CLAUDE_CODE_OAUTH_TOKEN" in data:  # the older token variable is read only when the first is unset
            derived["access_token_variable"] = "CLAUDE_CODE_OAUTH_TOKEN"
        variables = _READING.get()
        if variables is not None:
            empty = (name for name in CREDENTIAL_VARIABLES if name in variables and not variables[name].strip())
            derived["empty_credentials"] = tuple(empty)
            derived["credentials_path"] = default_credentials_path(variables)
        return {**data, **derived}

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> Settings:
        """A body of the largest allowed size must fit in the budget, else it could never be accepted."""
        if self.body_budget_bytes < self.max_body_bytes:
            raise ValueError(
                f"PROXY_BODY_BUDGET_MB ({self.body_budget_mb} MiB) must hold at least one body of "
                f"PROXY_MAX_BODY_BYTES ({self.max_body_bytes} bytes)"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in `env` (default: the process environment), each checked once here; raises ConfigError
        with one line naming every variable that is wrong and why."""
        token = _READING.set(os.environ if env is None else env)
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None
        finally:
            _READING.reset(token)

    @property
    def thinking_budgets(self) -> ThinkingBudgets:
        return ThinkingBudgets(self.budget_minimal, self.budget_low, self.budget_medium, self.budget_high)

    @property
    def responses_store_bytes(self) -> int:
        return self.responses_store_mb * MB

    @property
    def body_budget_bytes(self) -> int:
        return self.body_budget_mb * MB

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
            grace=self.credentials_grace,
        )


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
    if not error["loc"] and kind == "value_error":  # a rule across variables, which its message names itself
        return reason
    if name == "PORT" and kind in ("greater_than_equal", "less_than_equal"):
        reason = "must be a port number from 1 to 65535"
    shown = error.get("input")
    if not isinstance(shown, str) or name in _SECRET_VARIABLES:  # a secret's value is never shown, even a wrong one
        return f"{name} {reason}"
    if name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"):
        shown = display_url(shown)
    return f"{name} {reason} (got {shown!r})"


# The variables whose values are secrets (the fields kept out of repr()): an error about one never shows its value.
_SECRET_VARIABLES = frozenset(
    variable for field in Settings.model_fields.values() if not field.repr for variable in variables_of(field)
)
