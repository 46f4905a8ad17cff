"""The facts both APIs are mapped by, each in one table: finish reasons, error types and usage fields (and the two
usage shapes made from them: chat completions' and the Responses API's).

Streaming and non-streamed translation, the metrics, the access log and the `/v1/messages` passthrough all read these,
so a new Anthropic stop reason, error type or usage field is added here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from claude_proxy.convert.wire import UsageOut

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

# Anthropic stop_reason -> OpenAI finish_reason (an unknown or missing reason is `stop`).
FINISH_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> FinishReason:
    """Anthropic stop_reason -> OpenAI finish_reason; unknown or missing reasons are `stop` (never outside the enum)."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


class ErrorKind(NamedTuple):
    openai_type: str  # the `type` of OpenAI's error envelope
    status: int  # the HTTP status Anthropic sends it with (in a stream, the status it stands for)


# Anthropic error type -> OpenAI error type and HTTP status (reference: Anthropic API errors).
ERROR_TYPES: Mapping[str, ErrorKind] = {
    "invalid_request_error": ErrorKind("invalid_request_error", 400),
    "authentication_error": ErrorKind("authentication_error", 401),
    "billing_error": ErrorKind("insufficient_quota", 402),
    "permission_error": ErrorKind("permission_error", 403),
    "not_found_error": ErrorKind("not_found_error", 404),
    "request_too_large": ErrorKind("invalid_request_error", 413),
    "rate_limit_error": ErrorKind("rate_limit_error", 429),
    "api_error": ErrorKind("server_error", 500),
    "timeout_error": ErrorKind("timeout_error", 504),
    "overloaded_error": ErrorKind("overloaded_error", 529),
}

# HTTP status -> Anthropic error type, for errors the proxy answers itself in Anthropic's shape: the table above
# read backwards (its first type for a status), plus the statuses only the proxy answers with.
ANTHROPIC_TYPES: Mapping[int, str] = {
    **{kind.status: name for name, kind in reversed(list(ERROR_TYPES.items()))},
    408: "timeout_error",
    499: "client_closed_request",
}


# Anthropic's HTTP status -> the status the OpenAI routes answer with, so that the OpenAI SDKs' retry rules fit what
# happened (docs/translation.md#errors has the table with each SDK's retry set). 529 `overloaded_error` is Anthropic's
# own status, which no OpenAI SDK knows and the .NET one (System.ClientModel: 408, 429, 500, 502, 503, 504) never
# retries: 503, the status for a server that is busy for a while. Any other 5xx outside those the SDKs share is a
# 502, the answer of a gateway whose upstream failed. Every other status is kept.
CLIENT_STATUS: Mapping[int, int] = {529: 503}
SHARED_5XX = frozenset({500, 502, 503, 504})


def client_status(status: int) -> int:
    """The status an OpenAI client sees for an Anthropic error status (`/v1/messages` keeps Anthropic's own)."""
    mapped = CLIENT_STATUS.get(status)
    if mapped is not None:
        return mapped
    return 502 if status >= 500 and status not in SHARED_5XX else status


def error_status(event: Mapping[str, Any]) -> int:
    """The HTTP status an Anthropic error object (`{"error": {"type": …}}`) stands for; 500 when it names none."""
    error = event.get("error")
    etype = error.get("type") if isinstance(error, Mapping) else None
    kind = ERROR_TYPES.get(etype) if isinstance(etype, str) else None
    return kind.status if kind is not None else 500


def openai_error_type(anthropic_type: str | None, status: int) -> str:
    """The OpenAI envelope `type` for an Anthropic error type; by status when the type is missing or unknown."""
    kind = ERROR_TYPES.get(anthropic_type or "")
    if kind is not None:
        return kind.openai_type
    return "server_error" if status >= 500 else "invalid_request_error"


class UsageField(NamedTuple):
    anthropic: str  # the field of Anthropic's `usage`
    kind: str  # its name in the proxy's metrics (`kind` label of proxy_tokens_total)
    log: str  # its name on the access log line


# Anthropic's usage fields, as the metrics and the access log name them.
USAGE_FIELDS: tuple[UsageField, ...] = (
    UsageField("input_tokens", "input", "input_tokens"),
    UsageField("output_tokens", "output", "output_tokens"),
    UsageField("cache_read_input_tokens", "cache_read", "cache_read_tokens"),
    UsageField("cache_creation_input_tokens", "cache_write", "cache_write_tokens"),
)
USAGE_KEYS: tuple[str, ...] = tuple(field.anthropic for field in USAGE_FIELDS)


def count(value: Any) -> int:
    """A token count as Anthropic sends it: a positive int, else 0 (missing, null, a bool or garbage)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Tokens(NamedTuple):
    """Anthropic's usage counts: `input` excludes the cache reads and writes, which are counted apart."""

    input: int
    output: int
    cache_read: int
    cache_write: int

    @property
    def prompt(self) -> int:
        """Everything the prompt cost: uncached input, cache writes and cache reads (OpenAI's prompt_tokens)."""
        return self.input + self.cache_write + self.cache_read


def tokens(usage: Mapping[str, Any] | None) -> Tokens:
    """Anthropic's `usage` object read into counts (missing or malformed fields count 0)."""
    if not usage:
        return Tokens(0, 0, 0, 0)
    return Tokens(*(count(usage.get(key)) for key in USAGE_KEYS))


def merge_usage(into: dict[str, Any], usage: Any) -> None:
    """Fold one event's `usage` into the counts seen so far (message_start brings input, message_delta output)."""
    if isinstance(usage, Mapping):
        for key in USAGE_KEYS:
            value = usage.get(key)
            if value is not None:
                into[key] = value


def chat_usage(usage: Mapping[str, Any] | None) -> UsageOut:
    """Anthropic usage -> chat completions usage; prompt_tokens counts cache reads and writes, cached_tokens the
    reads."""
    counts = tokens(usage)
    cached, prompt, completion = counts.cache_read, counts.prompt, counts.output
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def responses_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage -> Responses usage; input_tokens counts cache reads and writes, cached_tokens the reads and
    cache_write_tokens the writes.
    Anthropic does not count thinking tokens apart, so reasoning_tokens is 0 (they are within output_tokens)."""
    counts = tokens(usage)
    cached, written, prompt, output = counts.cache_read, counts.cache_write, counts.prompt, counts.output
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }
