"""The operator's settings: which images a ClaudeProxy may run is the cluster admin's choice."""

from __future__ import annotations

import pytest

from claude_proxy_operator.config import Config, image_repository


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("claude-code-proxy", "claude-code-proxy"),
        ("claude-code-proxy:0.1.0", "claude-code-proxy"),
        ("registry:5000/team/proxy:1.2", "registry:5000/team/proxy"),
        ("registry:5000/team/proxy", "registry:5000/team/proxy"),
        ("ghcr.io/x/proxy@sha256:" + "a" * 64, "ghcr.io/x/proxy"),
        ("ghcr.io/x/proxy:1@sha256:" + "a" * 64, "ghcr.io/x/proxy"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_by_default_only_the_operators_own_proxy_repository_is_allowed() -> None:
    config = Config.from_env({"CLAUDE_PROXY_IMAGE": "ghcr.io/acme/claude-code-proxy:0.3.0"})
    assert config.image_allowed("ghcr.io/acme/claude-code-proxy:0.2.0")
    assert config.image_allowed("ghcr.io/acme/claude-code-proxy@sha256:" + "b" * 64)
    assert not config.image_allowed("ghcr.io/acme/claude-code-proxy-evil:0.3.0")
    assert not config.image_allowed("docker.io/library/busybox")


def test_the_admin_lists_repositories_and_prefixes() -> None:
    config = Config.from_env({"CLAUDE_PROXY_ALLOWED_IMAGES": "mirror.local/ccp/claude-code-proxy, ghcr.io/acme/*"})
    assert config.allowed_images == ("mirror.local/ccp/claude-code-proxy", "ghcr.io/acme/*")
    assert config.image_allowed("mirror.local/ccp/claude-code-proxy:1")
    assert config.image_allowed("ghcr.io/acme/anything:2")
    assert not config.image_allowed("claude-code-proxy:0.1.0")  # the default is replaced, not extended


def test_the_login_watch_runs_every_20_seconds_unless_set_or_turned_off() -> None:
    assert Config.from_env({}).login_seconds == 20.0
    assert Config.from_env({"CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS": "5"}).login_seconds == 5.0
    assert Config.from_env({"CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS": "0"}).login_seconds == 0.0
    with pytest.raises(ValueError, match="CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS"):
        Config.from_env({"CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS": "-1"})


def test_at_the_defaults_a_login_refused_without_traffic_shows_within_a_minute() -> None:
    # Worst case with no client traffic: the proxy's idle check comes round (PROXY_LOGIN_CHECK_SECONDS), then the
    # operator's login watch (CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS) reads the verdict and runs a pass.
    from claude_proxy.config import Settings

    worst = Settings.from_env({}).login_check_seconds + Config.from_env({}).login_seconds
    assert worst < 60
