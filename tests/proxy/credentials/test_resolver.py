"""Credential resolution: priority, fresh reads on change, no re-parse when unchanged, no secrets in errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from claude_proxy.config import Settings, default_credentials_path
from claude_proxy.credentials.resolver import (
    CredentialKind,
    CredentialResolver,
    MalformedCredentials,
    MissingCredentials,
    parse_credentials,
)
from claude_proxy.credentials.store import AtomicWriter


def write(path: Path, token: str, expires: int | None = 4102444800000, **extra: object) -> None:
    oauth: dict[str, object] = {"accessToken": token, "refreshToken": "sk-ant-ort01-r"}
    if expires is not None:
        oauth["expiresAt"] = expires
    with AtomicWriter(path) as writer:  # as `refresh` and `seed` write it
        writer.commit(json.dumps({"claudeAiOauth": oauth, **extra}).encode())


def test_priority_api_key_then_access_token_then_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write(path, "sk-ant-oat01-file")
    assert CredentialResolver("k", "t", path).resolve().kind is CredentialKind.API_KEY
    assert CredentialResolver(None, "t", path).resolve().kind is CredentialKind.ACCESS_TOKEN
    cred = CredentialResolver(None, None, path).resolve()
    assert cred.kind is CredentialKind.OAUTH_FILE and cred.token == "sk-ant-oat01-file"
    assert cred.expires_at == 4102444800
    assert "sk-ant" not in repr(cred)
    assert cred.auth_headers() == {"authorization": "Bearer sk-ant-oat01-file"}


def test_credentials_path_resolution() -> None:
    assert default_credentials_path({"CLAUDE_CREDENTIALS_PATH": "/x/c.json", "CLAUDE_CONFIG_DIR": "/y"}) == Path(
        "/x/c.json"
    )
    assert default_credentials_path({"CLAUDE_CONFIG_DIR": "/y"}) == Path("/y/.credentials.json")
    assert default_credentials_path({"HOME": "/home/u"}) == Path("/home/u/.claude/.credentials.json")
    s = Settings.from_env({"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-zzz", "ANTHROPIC_API_BASE": "http://h/"})
    assert s.access_token == "sk-ant-oat01-zzz" and s.base_url == "http://h"
    assert "zzz" not in repr(s)


def test_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write(path, "sk-ant-oat01-one")
    resolver = CredentialResolver(None, None, path)
    first = resolver.resolve()
    assert resolver.resolve() is first  # unchanged file: the cached credential, no parse
    write(path, "sk-ant-oat01-two")
    assert resolver.resolve().token == "sk-ant-oat01-two"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_missing_and_malformed_files_name_the_file_not_the_content(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    with pytest.raises(MissingCredentials, match="does not exist"):
        CredentialResolver(None, None, path).resolve()
    path.write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat01-secret"')
    with pytest.raises(MalformedCredentials) as info:
        CredentialResolver(None, None, path).resolve()
    assert str(path) in str(info.value) and "secret" not in str(info.value)
    for doc, fragment in [
        ([], "JSON object"),
        ({}, "claudeAiOauth"),
        ({"claudeAiOauth": {"accessToken": ""}}, "accessToken"),
        ({"claudeAiOauth": {"accessToken": "a", "expiresAt": "soon"}}, "expiresAt"),
    ]:
        with pytest.raises(MalformedCredentials, match=fragment):
            parse_credentials(json.dumps(doc), "src")


def test_expiry(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write(path, "sk-ant-oat01-x", expires=1_000_000)
    cred = CredentialResolver(None, None, path).resolve()
    assert cred.expired(now=1001) and not cred.expired(now=999)
    write(path, "sk-ant-oat01-x", expires=None)
    assert not CredentialResolver(None, None, path).resolve().expired()


def test_environment_credential_is_one_object_and_no_file_is_looked_at(tmp_path: Path) -> None:
    resolver = CredentialResolver("sk-ant-api03-k", None, tmp_path / "none.json")
    assert resolver.resolve() is resolver.resolve()
    assert CredentialResolver(None, "sk-ant-oat01-t", tmp_path / "none.json").resolve().source == "CLAUDE_ACCESS_TOKEN"
    with pytest.raises(MissingCredentials, match="does not exist"):  # only without one is the file asked for
        CredentialResolver(None, None, tmp_path / "none.json").resolve()


def test_settings_built_by_field_name_have_no_credentials_file() -> None:
    resolver = Settings().credential_resolver()
    assert resolver.path is None
    with pytest.raises(MissingCredentials, match=r"^no credentials; configure one of"):
        resolver.resolve()
    assert Settings(api_key="sk-ant-api03-k").credential_resolver().resolve().kind is CredentialKind.API_KEY


def test_the_file_is_looked_at_at_most_once_per_recheck_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    write(path, "sk-ant-oat01-one")
    now = [100.0]
    resolver = CredentialResolver(None, None, path, recheck=1.0, clock=lambda: now[0])
    assert resolver.resolve().token == "sk-ant-oat01-one"
    write(path, "sk-ant-oat01-two")
    path.unlink()  # not even a missing file is noticed within the interval: no look at all
    now[0] += 0.9
    assert resolver.resolve().token == "sk-ant-oat01-one"
    now[0] += 0.2
    with pytest.raises(MissingCredentials):
        resolver.resolve()
    write(path, "sk-ant-oat01-two")
    assert resolver.resolve().token == "sk-ant-oat01-two"
    write(path, "sk-ant-oat01-three")
    resolver.invalidate()  # what a 401 does: the next resolve looks at once
    assert resolver.resolve().token == "sk-ant-oat01-three"


def test_the_proxy_rechecks_the_file_once_a_second(tmp_path: Path) -> None:
    settings = Settings.from_env({"CLAUDE_CREDENTIALS_PATH": str(tmp_path / "c.json"), "HOME": str(tmp_path)})
    assert settings.credential_resolver().recheck == 1.0
    assert CredentialResolver(None, None, tmp_path / "c.json").recheck == 0.0  # the CLI's own reads: always fresh
