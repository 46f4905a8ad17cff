"""Anthropic's rate-limit response headers, read into numbers: what the metrics show and `claude-proxy check` prints.

Console (API key) traffic carries `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
reset}` (reset as RFC 3339); subscription (OAuth) traffic carries the unified windows,
`anthropic-ratelimit-unified-{status,reset,representative-claim,fallback-percentage}` and per window
`anthropic-ratelimit-unified-{5h,7d,overage}-{status,utilization,reset}` (reset as epoch seconds, utilization 0..1).

Only the header names in the tables below are read, and the status and claim words are mapped onto fixed sets, so
every label value the metrics derive from them is bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

PREFIX = "anthropic-ratelimit-"
# header word -> `kind` label
KINDS = (
    ("requests", "requests"),
    ("tokens", "tokens"),
    ("input-tokens", "input_tokens"),
    ("output-tokens", "output_tokens"),
)
# header word -> `window` label; "" is the overall unified state (`anthropic-ratelimit-unified-status`)
WINDOWS = (("", "overall"), ("5h", "5h"), ("7d", "7d"), ("overage", "overage"))
STATUSES = ("allowed", "allowed_warning", "rejected")
CLAIMS = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet", "overage")
OTHER = "other"
# Any one of these present means the response carried rate-limit state (checked per response, so keep it short).
MARKERS = (
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-unified-status",
    "anthropic-ratelimit-unified-5h-utilization",
)


@dataclass
class Window:
    status: str | None = None
    utilization: float | None = None  # 0..1
    reset: float | None = None  # epoch seconds


@dataclass
class Limit:
    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None  # epoch seconds


@dataclass
class RateLimits:
    limits: dict[str, Limit] = field(default_factory=dict)  # by kind
    windows: dict[str, Window] = field(default_factory=dict)  # by window
    representative_claim: str | None = None
    fallback_percentage: float | None = None

    def empty(self) -> bool:
        return not (self.limits or self.windows or self.representative_claim or self.fallback_percentage is not None)

    def to_dict(self, now: float) -> dict[str, object]:
        def left(reset: float | None) -> int | None:
            return None if reset is None else int(reset - now)

        return {
            "limits": {
                kind: {"limit": v.limit, "remaining": v.remaining, "resetsInSeconds": left(v.reset)}
                for kind, v in self.limits.items()
            },
            "windows": {
                name: {"status": w.status, "utilization": w.utilization, "resetsInSeconds": left(w.reset)}
                for name, w in self.windows.items()
            },
            "representativeClaim": self.representative_claim,
            "fallbackPercentage": self.fallback_percentage,
        }


def carries(headers: Mapping[str, str]) -> bool:
    """Whether a response's headers hold rate-limit state (cheap: a few lookups)."""
    return any(headers.get(name) is not None for name in MARKERS)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _rfc3339(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _word(raw: str | None, known: tuple[str, ...]) -> str | None:
    if raw is None:
        return None
    word = raw.strip().lower()
    return word if word in known else OTHER


def parse(headers: Mapping[str, str]) -> RateLimits:
    """The rate-limit state one response's headers describe (names looked up lower-case)."""
    out = RateLimits()
    for word, kind in KINDS:
        base = f"{PREFIX}{word}-"
        limit = Limit(_number(headers.get(base + "limit")), _number(headers.get(base + "remaining")))
        limit.reset = _rfc3339(headers.get(base + "reset"))
        if limit.limit is not None or limit.remaining is not None or limit.reset is not None:
            out.limits[kind] = limit
    for word, name in WINDOWS:
        base = f"{PREFIX}unified-{word}-" if word else f"{PREFIX}unified-"
        window = Window(
            _word(headers.get(base + "status"), STATUSES),
            _number(headers.get(base + "utilization")),
            _number(headers.get(base + "reset")),
        )
        if window.status is not None or window.utilization is not None or window.reset is not None:
            out.windows[name] = window
    out.representative_claim = _word(headers.get(f"{PREFIX}unified-representative-claim"), CLAIMS)
    out.fallback_percentage = _number(headers.get(f"{PREFIX}unified-fallback-percentage"))
    return out


def to_text(limits: RateLimits, now: float) -> list[str]:
    """Lines for `claude-proxy check`: one per window and per limit kind."""
    lines: list[str] = []
    for name, w in limits.windows.items():
        parts = [w.status or "?"]
        if w.utilization is not None:
            parts.append(f"{w.utilization * 100:.1f}% used")
        if w.reset is not None:
            parts.append(f"resets in {_duration(w.reset - now)}")
        lines.append(f"window {name + ':':9}{', '.join(parts)}")
    if limits.representative_claim is not None:
        lines.append(f"limiting window: {limits.representative_claim}")
    if limits.fallback_percentage is not None:
        lines.append(f"fallback:        {limits.fallback_percentage * 100:.0f}%")
    for kind, v in limits.limits.items():
        parts = []
        if v.remaining is not None or v.limit is not None:
            parts.append(f"{_fmt(v.remaining)} of {_fmt(v.limit)} left")
        if v.reset is not None:
            parts.append(f"resets in {_duration(v.reset - now)}")
        lines.append(f"limit {kind + ':':15}{', '.join(parts)}")
    return lines


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
