"""The operator's entry point and settings."""

from __future__ import annotations

import pytest

from claude_proxy_operator import main as entry
from claude_proxy_operator.config import DEFAULT_IMAGE, Config


def test_config_from_env() -> None:
    assert Config.from_env({}) == Config(default_image=DEFAULT_IMAGE, cluster_domain="cluster.local", resync_seconds=60)
    env = {"CLAUDE_PROXY_IMAGE": "reg/img:1", "CLUSTER_DOMAIN": "corp", "CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS": "5"}
    assert Config.from_env(env) == Config(default_image="reg/img:1", cluster_domain="corp", resync_seconds=5)
    with pytest.raises(ValueError):
        Config.from_env({"CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS": "0"})


def test_parser_scopes_and_liveness() -> None:
    parser = entry.build_parser()
    args = parser.parse_args([])
    assert args.namespace == [] and args.liveness == "http://0.0.0.0:8081/healthz"
    args = parser.parse_args(["-n", "a", "--namespace", "b", "--liveness", ""])
    assert args.namespace == ["a", "b"] and args.liveness == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["-A", "-n", "a"])


def test_bad_settings_exit_before_starting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS", "-1")
    assert entry.main([]) == 2
    assert "CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS" in capsys.readouterr().err
