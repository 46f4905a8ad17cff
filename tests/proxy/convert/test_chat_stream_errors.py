"""The stream translator's errors: error events and their statuses, streams cut short or empty."""

from __future__ import annotations

from typing import Any

import pytest

from claude_proxy.convert.chat_stream import StreamTranslator
from claude_proxy.errors import UpstreamError
from tests.proxy.convert.chat_stream_support import (
    block_start,
    feed_all,
    start_event,
    stop,
    translate,
)

# ---- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("etype", "upstream", "status"),
    [
        ("overloaded_error", 529, 503),
        ("api_error", 500, 500),
        ("rate_limit_error", 429, 429),
        ("request_too_large", 413, 413),
        ("timeout_error", 504, 504),
        ("invalid_request_error", 400, 400),
        ("authentication_error", 401, 403),
        ("permission_error", 403, 403),
        ("not_found_error", 404, 404),
        ("billing_error", 402, 402),
        ("brand_new_error", 500, 500),
    ],
)
def test_error_event_status(etype: str, upstream: int, status: int) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event()])
    event = {"type": "error", "error": {"type": etype, "message": f"boom {etype}"}}
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert (info.value.status, info.value.upstream_status) == (status, upstream)
    assert info.value.upstream_type == etype
    assert f"boom {etype}" in info.value.message
    assert event == {"type": "error", "error": {"type": etype, "message": f"boom {etype}"}}


@pytest.mark.parametrize(
    "event", [{"type": "error"}, {"type": "error", "error": "text"}, {"type": "error", "error": {}}]
)
def test_malformed_error_event_is_still_an_error(event: dict[str, Any]) -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert info.value.status == 500 and info.value.message


def test_context_overflow_in_a_stream_uses_openai_wording() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=False)
    event = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"},
    }
    with pytest.raises(UpstreamError) as info:
        t.feed(event)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert "maximum context length is 200000 tokens" in info.value.message


def test_finish_before_message_stop_raises_every_time() -> None:
    t = StreamTranslator(model="m", created=1, include_usage=True)
    feed_all(t, [start_event(), block_start(0, {"type": "text", "text": ""}), *stop()[:1]])  # message_delta, no stop
    assert not t.done
    for _ in range(2):
        with pytest.raises(UpstreamError) as info:
            t.finish()
        assert info.value.status == 502 and info.value.type == "upstream_error"


def test_empty_stream_is_an_error() -> None:
    chunks, error = translate([b""])
    assert chunks == [] and error is not None and error.status == 502
