"""End to end: the official openai SDK -> the app under uvicorn -> the strict fake Anthropic server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY, OAUTH_TOKEN, ProxyFactory
from tests.fakes.anthropic import ErrorReply, FakeAnthropic, message, text, thinking, tool_use
from tests.proxy.http_support import client, socket_closed_port

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_plain_text_roundtrip(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        message(
            text("Hi there!"),
            usage={
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_read_input_tokens": 5,
                "cache_creation_input_tokens": 2,
            },
        )
    )
    out = client(proxy()).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Say hi"}]
    )
    assert out.object == "chat.completion"
    assert out.choices[0].message.content == "Hi there!"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "claude-sonnet-4-6"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (17, 3, 20)
    assert out.usage.prompt_tokens_details is not None and out.usage.prompt_tokens_details.cached_tokens == 5
    sent = fake.messages_requests[-1]
    assert sent.headers["x-api-key"] == API_KEY
    assert "authorization" not in sent.headers
    assert sent.body["messages"][0]["content"][0]["text"] == "Say hi"
    assert sent.body["max_tokens"] == 8192


def test_rockbot_conversation_with_many_system_messages_and_tool_loop(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(
        message(text("Checking."), tool_use("toolu_1", "get_weather", {"city": "Paris"}), stop_reason="tool_use")
    )
    c = client(proxy())
    history = [
        {"role": "system", "content": "You are RockBot."},
        {"role": "system", "content": "Current time: 2026-11-24T10:00Z"},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    first = c.chat.completions.create(model="claude-sonnet-4-6", messages=history, tools=TOOLS, tool_choice="auto")
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.id == "toolu_1" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    fake.script(message(text("It is sunny in Paris.")))
    history += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
        {"role": "system", "content": "Be brief."},
    ]
    second = c.chat.completions.create(model="claude-sonnet-4-6", messages=history, tools=TOOLS, tool_choice="auto")
    assert second.choices[0].message.content == "It is sunny in Paris."
    body = fake.messages_requests[-1].body
    assert [b["text"] for b in body["system"]] == ["You are RockBot.", "Current time: 2026-11-24T10:00Z", "Be brief."]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"

    # The summary call: same history, no tools definitions; the strict fake would refuse raw tool history.
    fake.script(message(text("Summary: sunny.")))
    summary = c.chat.completions.create(
        model="claude-sonnet-4-6", messages=[*history, {"role": "user", "content": "Summarize"}]
    )
    assert summary.choices[0].message.content == "Summary: sunny."
    body = fake.messages_requests[-1].body
    assert body["tool_choice"] == {"type": "none"}
    assert [t["name"] for t in body["tools"]] == ["get_weather"]


def test_history_cut_after_tool_calls_and_empty_results(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
    ]
    out = client(proxy()).chat.completions.create(
        model="claude-sonnet-4-6",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_a", "content": ""},
            {"role": "user", "content": "go on"},
            {"role": "assistant", "content": None, "tool_calls": [dict(calls[0], id="call_c")]},
        ],
    )
    assert out.choices[0].message.content == "Hello from the fake."
    msgs = fake.messages_requests[-1].body["messages"]
    assert msgs[2]["content"][0] == {"type": "tool_result", "tool_use_id": "call_a"}
    assert msgs[2]["content"][1]["tool_use_id"] == "call_b" and msgs[2]["content"][1]["is_error"] is True
    assert msgs[-1]["role"] == "user" and msgs[-1]["content"][0]["tool_use_id"] == "call_c"


def test_model_names_are_normalised_and_aliased(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy(PROXY_MODEL_ALIASES="gpt-4o=claude-sonnet-4-6"))
    c.chat.completions.create(model="anthropic/claude-haiku-4.5", messages=[{"role": "user", "content": "x"}])
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert [r.body["model"] for r in fake.messages_requests] == ["claude-haiku-4-5", "claude-sonnet-4-6"]


def test_images_reasoning_and_json_modes(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy())
    fake.script(message(thinking("Let me think."), text("A cat.")))
    out = c.chat.completions.create(
        model="claude-sonnet-4-5",
        reasoning_effort="low",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert out.choices[0].message.content == "A cat."
    assert out.choices[0].message.model_extra["reasoning_content"] == "Let me think."  # type: ignore[index]
    body = fake.messages_requests[-1].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert [b["type"] for b in body["messages"][0]["content"]] == ["text", "image", "image"]

    fake.script(message(tool_use("toolu_j", "json_response", {"answer": 42}), stop_reason="tool_use"))
    out = c.chat.completions.create(
        model="claude-sonnet-4-6",
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "JSON"}],
    )
    assert json.loads(out.choices[0].message.content or "") == {"answer": 42}
    assert out.choices[0].finish_reason == "stop" and not out.choices[0].message.tool_calls

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    fake.script(message(text('{"n": 3}')))
    out = c.chat.completions.create(
        model="claude-sonnet-4-6",
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        messages=[{"role": "user", "content": "n?"}],
    )
    assert json.loads(out.choices[0].message.content or "") == {"n": 3}
    assert fake.messages_requests[-1].body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}],
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ],
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ],
)
def test_bad_requests_get_openai_400_envelopes(
    fake: FakeAnthropic, proxy: ProxyFactory, payload: dict, param: str
) -> None:
    response = httpx.post(f"{proxy()}/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert "detail" not in response.json()
    assert fake.messages_requests == []


def test_malformed_json_body(proxy: ProxyFactory) -> None:
    response = httpx.post(
        f"{proxy()}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_context_overflow_is_rewritten_in_openai_wording(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(ErrorReply(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"))
    with pytest.raises(openai.BadRequestError) as info:
        client(proxy()).chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
    err = info.value
    assert err.code == "context_length_exceeded"
    assert "maximum context length is 200000 tokens" in err.message
    assert "resulted in 250000 tokens" in err.message


CLAUDE_CODE_ONLY = (
    "This credential is only authorized for use with Claude Code and cannot be used for other API requests."
)


# Anthropic's status and type -> the status, exception and error type an OpenAI client gets (docs/translation.md#errors
# has the table, with which OpenAI SDKs retry each).
@pytest.mark.parametrize(
    ("status", "etype", "message", "seen", "exc", "seen_type"),
    [
        (400, "invalid_request_error", "bad", 400, openai.BadRequestError, "invalid_request_error"),
        (
            400,
            "invalid_request_error",
            CLAUDE_CODE_ONLY,
            403,
            openai.PermissionDeniedError,
            "upstream_credential_refused",
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            403,
            openai.PermissionDeniedError,
            "upstream_credential_refused",
        ),
        (402, "billing_error", "credit balance too low", 402, openai.APIStatusError, "insufficient_quota"),
        (403, "permission_error", "not allowed", 403, openai.PermissionDeniedError, "upstream_credential_refused"),
        (404, "not_found_error", "no such thing", 404, openai.NotFoundError, "not_found_error"),
        (408, "timeout_error", "gateway timeout", 408, openai.APIStatusError, "timeout_error"),
        (409, "conflict", "conflict", 409, openai.ConflictError, "invalid_request_error"),
        (413, "request_too_large", "too large", 413, openai.APIStatusError, "invalid_request_error"),
        (429, "rate_limit_error", "slow down", 429, openai.RateLimitError, "rate_limit_error"),
        (500, "api_error", "oops", 500, openai.InternalServerError, "server_error"),
        (502, "api_error", "bad gateway", 502, openai.InternalServerError, "server_error"),
        (503, "api_error", "unavailable", 503, openai.InternalServerError, "server_error"),
        (504, "timeout_error", "timed out", 504, openai.InternalServerError, "timeout_error"),
        (520, "api_error", "unknown", 502, openai.InternalServerError, "server_error"),
        (529, "overloaded_error", "Overloaded", 503, openai.InternalServerError, "overloaded_error"),
    ],
)
def test_each_upstream_status_becomes_one_an_openai_client_can_act_on(
    fake: FakeAnthropic,
    proxy: ProxyFactory,
    status: int,
    etype: str,
    message: str,
    seen: int,
    exc: type[Exception],
    seen_type: str,
) -> None:
    fake.script(ErrorReply(status, etype, message, headers={"retry-after": "7"}))
    with pytest.raises(exc) as info:
        client(proxy(PROXY_MAX_RETRIES="0")).chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
        )
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == seen
    assert err.type == seen_type
    assert message in err.message
    assert "req_fake" in err.message
    assert err.response.headers["retry-after"] == "7"  # kept, whatever the status
    if seen_type == "upstream_credential_refused":
        assert err.code == "upstream_credential_refused"
        assert "proxy's own upstream credential" in err.message and "not a fault of this request" in err.message
        assert err.response.headers["x-should-retry"] == "false"
    elif status == 529:
        assert err.code == "overloaded_error"


def test_unreachable_upstream_is_502_and_missing_credentials_503(proxy: ProxyFactory, tmp_path: Path) -> None:
    with socket_closed_port() as port:
        c = client(proxy(ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}"))
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 502
    c = client(proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(tmp_path / "none.json")))
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    for way in ("ANTHROPIC_API_KEY", "CLAUDE_ACCESS_TOKEN", "credentials file"):
        assert way in info.value.message


def test_oauth_file_bearer_beta_header_and_reread_after_rotation(
    fake: FakeAnthropic, proxy: ProxyFactory, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.json"
    doc = {
        "claudeAiOauth": {"accessToken": "sk-ant-oat01-old", "refreshToken": "r", "expiresAt": 4102444800000},
        "other": {"kept": True},
    }
    creds.write_text(json.dumps(doc))
    fake.oauth_tokens = {"sk-ant-oat01-old"}
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))
    c = client(url)
    beta = "context-1m-2025-08-07"

    def sent_with(betas: str | None) -> dict[str, str]:
        c.chat.completions.create(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"anthropic-beta": betas} if betas else None,
        )
        return fake.messages_requests[-1].headers

    sent = sent_with(beta)
    assert sent["authorization"] == "Bearer sk-ant-oat01-old"
    assert sent["anthropic-beta"] == f"oauth-2025-04-20,{beta}"
    assert "x-api-key" not in sent

    # A refresh rewrites the file: the next request uses the new token with no restart.
    doc["claudeAiOauth"]["accessToken"] = "sk-ant-oat01-new"
    tmp = tmp_path / "tmp.json"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, creds)
    fake.oauth_tokens = {"sk-ant-oat01-new"}
    sent = sent_with(None)
    assert sent["authorization"] == "Bearer sk-ant-oat01-new"
    assert sent["anthropic-beta"] == "oauth-2025-04-20"
    # Headers are built once per credential and beta set: the beta set seen before the rotation gets the new token.
    sent = sent_with(beta)
    assert sent["authorization"] == "Bearer sk-ant-oat01-new"
    assert sent["anthropic-beta"] == f"oauth-2025-04-20,{beta}"
    assert httpx.get(f"{url}/readyz").json()["credential"] == "oauth_file"


def test_explicit_access_token_env(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy(ANTHROPIC_API_KEY="-", CLAUDE_CODE_OAUTH_TOKEN=OAUTH_TOKEN))
    c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
    assert fake.messages_requests[-1].headers["authorization"] == f"Bearer {OAUTH_TOKEN}"


def test_inbound_keys(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS="inbound-key-number-one, inbound-key-number-two")
    with pytest.raises(openai.AuthenticationError) as info:
        client(url, "wrong").chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
        )
    assert "inbound-key-number-one" not in info.value.message and "wrong" not in info.value.message
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    out = client(url, "inbound-key-number-two").chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
    )
    assert out.choices[0].message.content
    # the client's own key never goes upstream
    assert all("inbound-key-number-two" not in json.dumps(r.headers) for r in fake.requests)
    assert httpx.get(f"{url}/health").status_code == 200


def test_models_live_then_fallback(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    ids = [m.id for m in client(proxy(PROXY_MODEL_ALIASES="fast=claude-haiku-4-5")).models.list()]
    assert ids == ["claude-sonnet-4-6", "claude-haiku-4-5-20251001", "fast"]
    fake.models_refuse_oauth = True
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_ACCESS_TOKEN=OAUTH_TOKEN, PROXY_MODELS="claude-x-1,claude-y-2")
    assert [m.id for m in client(url).models.list()] == ["claude-x-1", "claude-y-2"]


def test_readyz_reports_missing_and_expired_credentials(proxy: ProxyFactory, tmp_path: Path) -> None:
    creds = tmp_path / "c.json"
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(creds))
    response = httpx.get(f"{url}/readyz")
    assert response.status_code == 503 and "does not exist" in response.json()["reason"]
    creds.write_text(json.dumps({"claudeAiOauth": {"accessToken": "sk-ant-oat01-x", "expiresAt": 1000}}))
    response = httpx.get(f"{url}/readyz")  # past its expiry: still ready, and says so
    assert response.status_code == 200 and response.json()["expired"] is True
    assert "sk-ant" not in response.text
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_without_a_credential_the_openai_sdk_does_not_retry(proxy: ProxyFactory, tmp_path: Path) -> None:
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_CREDENTIALS_PATH=str(tmp_path / "none.json"))
    attempts: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda request: attempts.append(request.url.path)]})
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=3, http_client=http)
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    assert info.value.response.headers["x-should-retry"] == "false"
    assert attempts == ["/v1/chat/completions"]  # one attempt: only the operator's fix helps
