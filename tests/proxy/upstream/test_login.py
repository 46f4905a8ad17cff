"""The login's truth: a credential Anthropic refuses shows in /readyz and /metrics, and clears on the next success."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from tests.conftest import API_KEY, OAUTH_TOKEN, ProxyFactory, metric_samples
from tests.fakes.anthropic import ErrorReply, FakeAnthropic

GAUGE = "proxy_upstream_login_valid"


def ask(client: openai.OpenAI) -> str | None:
    reply = client.chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    return reply.choices[0].message.content


def readyz(url: str) -> dict[str, object]:
    response = httpx.get(f"{url}/readyz")
    assert response.status_code == 200  # a refused login never makes the pod unready
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize(
    ("env", "credential", "secret", "message"),
    [
        ({}, "api_key", API_KEY, "invalid x-api-key"),
        (
            {"ANTHROPIC_API_KEY": "-", "CLAUDE_ACCESS_TOKEN": OAUTH_TOKEN},
            "access_token",
            OAUTH_TOKEN,
            "OAuth token has expired or is invalid.",
        ),
    ],
)
def test_a_refused_credential_shows_and_clears_without_the_token(
    fake: FakeAnthropic,
    proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    env: dict[str, str],
    credential: str,
    secret: str,
    message: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="claude_proxy")
    url = proxy(**env)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    assert readyz(url)["login"] == {"state": "unknown"}
    assert metric_samples(url)[GAUGE] == -1

    assert ask(client)
    first = readyz(url)["login"]
    assert isinstance(first, dict) and first["state"] == "valid" and first["credential"] == credential
    assert metric_samples(url)[GAUGE] == 1

    # The login is revoked: Anthropic no longer knows the credential.
    fake.api_keys.clear()
    fake.oauth_tokens.clear()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client)
    assert message in str(refused.value) and "proxy's own upstream credential" in str(refused.value)
    login = readyz(url)["login"]
    assert isinstance(login, dict)
    assert login["state"] == "refused" and login["credential"] == credential and login["status"] == 401
    assert str(login["message"]).startswith(message)
    assert metric_samples(url)[GAUGE] == 0

    # Logged in again: the next success clears it.
    fake.api_keys.add(API_KEY)
    fake.oauth_tokens.add(OAUTH_TOKEN)
    assert ask(client)
    again = readyz(url)["login"]
    assert isinstance(again, dict) and again["state"] == "valid" and "message" not in again
    assert metric_samples(url)[GAUGE] == 1

    seen = httpx.get(f"{url}/readyz").text + httpx.get(f"{url}/metrics").text
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (seen, out, err, logged):
        assert secret not in text


def test_a_refused_model_list_marks_the_login_and_the_next_list_clears_it(
    fake: FakeAnthropic, proxy: ProxyFactory
) -> None:
    url = proxy(PROXY_MODELS_CACHE_SECONDS="0")
    fake.api_keys.clear()
    httpx.get(f"{url}/v1/models")  # answered from the built-in list; the refusal is still noted
    login = readyz(url)["login"]
    assert isinstance(login, dict) and login["state"] == "refused"
    fake.api_keys.add(API_KEY)
    assert httpx.get(f"{url}/v1/models").status_code == 200
    assert readyz(url)["login"]["state"] == "valid"  # type: ignore[index]


def test_a_refusal_message_shaped_like_a_token_is_masked(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    url = proxy()
    leaked = "sk-ant-api03-" + "x" * 40
    fake.script(ErrorReply(401, "authentication_error", f"key {leaked} was revoked"))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client)
    assert leaked not in str(refused.value)
    login = readyz(url)["login"]
    assert isinstance(login, dict) and login["state"] == "refused"
    assert leaked not in str(login["message"]) and "[redacted]" in str(login["message"])


CLAUDE_CODE_ONLY = (
    "This credential is only authorized for use with Claude Code and cannot be used for other API requests."
)


def test_a_subscription_token_refused_outside_claude_code_is_a_refused_login_said_once(
    fake: FakeAnthropic, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="claude_proxy")
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_ACCESS_TOKEN=OAUTH_TOKEN)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert ask(client)
    # Anthropic's answer even invites a retry: a refused credential is not retried all the same.
    refusal = ErrorReply(400, "invalid_request_error", CLAUDE_CODE_ONLY, headers={"x-should-retry": "true"})
    fake.script(refusal, refusal, refusal, refusal)
    before = len(fake.messages_requests)

    with pytest.raises(openai.PermissionDeniedError) as chat:
        ask(client)
    with pytest.raises(openai.PermissionDeniedError) as streamed:
        list(client.responses.create(model="claude-sonnet-4-6", input="hi", stream=True))
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    messages = [
        httpx.post(f"{url}/v1/messages", json=body),
        httpx.post(f"{url}/v1/messages", json=body | {"stream": True}),
    ]
    assert len(fake.messages_requests) == before + 4  # one attempt each, no retry
    for error in (chat.value, streamed.value):
        assert error.code == "upstream_credential_refused"
        assert "proxy's own upstream credential" in error.message and CLAUDE_CODE_ONLY in error.message
        assert error.response.headers["x-should-retry"] == "false"
    for answer in messages:  # Anthropic's clients are told the same, in Anthropic's shape
        assert answer.status_code == 403
        assert answer.json()["error"]["type"] == "permission_error"
        assert "proxy's own upstream credential" in answer.json()["error"]["message"]

    login = readyz(url)["login"]
    assert isinstance(login, dict)
    assert (login["state"], login["credential"], login["status"]) == ("refused", "access_token", 400)
    assert str(login["message"]).startswith("This credential is only authorized")
    assert metric_samples(url)[GAUGE] == 0

    assert ask(client)  # the login works again
    assert readyz(url)["login"]["state"] == "valid"  # type: ignore[index]
    assert metric_samples(url)[GAUGE] == 1

    changes = [r for r in caplog.records if r.name == "claude_proxy.login"]
    assert [r.levelno for r in changes] == [logging.WARNING, logging.INFO]  # once per change, not per request
    assert "refused the proxy's credential (access_token)" in changes[0].getMessage()
    assert CLAUDE_CODE_ONLY in changes[0].getMessage()
    out, err = capfd.readouterr()
    for text in (out, err, "\n".join(r.getMessage() for r in caplog.records)):
        assert OAUTH_TOKEN not in text
