"""GET /v1/models/{model} with the official openai SDK (`client.models.retrieve`) against the proxy under uvicorn."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import OAUTH_TOKEN, ProxyFactory
from tests.fakes.anthropic import FakeAnthropic


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def test_retrieve_from_the_live_list(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy(PROXY_MODEL_ALIASES="fast=claude-haiku-4-5"))
    model = c.models.retrieve("claude-haiku-4-5-20251001")
    assert (model.id, model.object, model.owned_by) == ("claude-haiku-4-5-20251001", "model", "anthropic")
    assert model.created == 1759276800  # the fake's created_at, 2025-10-01T00:00:00Z
    assert c.models.retrieve("fast").id == "fast"
    # names the proxy resolves (provider prefix, dots) find the model they resolve to
    assert c.models.retrieve("anthropic/claude-sonnet-4.6").id == "claude-sonnet-4-6"
    with pytest.raises(openai.NotFoundError) as info:
        c.models.retrieve("gpt-4o")
    assert info.value.body == {
        "message": "The model `gpt-4o` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    # the list is fetched once and cached, for the list and the lookups alike
    c.models.list()
    assert len([r for r in fake.requests if r.path == "/v1/models"]) == 1


def test_retrieve_from_the_configured_list_and_without_the_prefix(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.models_refuse_oauth = True
    url = proxy(ANTHROPIC_API_KEY="-", CLAUDE_ACCESS_TOKEN=OAUTH_TOKEN, PROXY_MODELS="claude-x-1,claude-y-2")
    assert client(url).models.retrieve("claude-y-2").id == "claude-y-2"
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("claude-sonnet-4-6")
    plain = httpx.get(f"{url}/models/claude-x-1")
    assert plain.status_code == 200 and plain.json() == {
        "id": "claude-x-1",
        "object": "model",
        "created": 0,
        "owned_by": "anthropic",
    }


def test_retrieve_needs_the_inbound_key(proxy: ProxyFactory) -> None:
    url = proxy(PROXY_API_KEYS="inbound-key-number-one")
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.retrieve("claude-sonnet-4-6")
    assert client(url, "inbound-key-number-one").models.retrieve("claude-sonnet-4-6").id == "claude-sonnet-4-6"
