"""A credentials path that is a symbolic link stays one: `refresh` and `seed` write its target, atomically in the
target's directory, under the lock beside the target, keeping the target's (owner-only) mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from claude_proxy.credentials.lifecycle import Result, refresh, seed
from claude_proxy.credentials.store import AtomicWriter, exclusive_lock, lock_path
from tests.fakes.oauth import FakeOAuthServer
from tests.proxy.credentials.refresh_support import due_login, no_temp_files, options
from tests.proxy.lifecycle_support import now_ms, read_oauth, write_credentials


def linked(tmp_path: Path) -> tuple[Path, Path]:
    """~/.claude/.credentials.json -> ../secrets/claude.json, as a dotfiles setup has it."""
    home, secrets = tmp_path / "claude", tmp_path / "secrets"
    home.mkdir()
    secrets.mkdir()
    link = home / ".credentials.json"
    link.symlink_to(Path("..") / "secrets" / "claude.json")
    return link, secrets / "claude.json"


def test_refresh_through_a_link_writes_the_target_and_keeps_the_link(fake: FakeOAuthServer, tmp_path: Path) -> None:
    link, target = linked(tmp_path)
    _, spent = due_login(fake, target)
    target.chmod(0o400)  # the owner's own choice of mode is kept
    assert refresh(link, options(fake)).result is Result.REFRESHED

    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "secrets", "claude.json")
    oauth = read_oauth(target)
    assert oauth["refreshToken"] == fake.current_refresh_token() != spent
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert no_temp_files(link.parent) and no_temp_files(target.parent)
    assert lock_path(link) == lock_path(target) == target.with_name("claude.json.lock")
    assert not (link.parent / ".credentials.json.lock").exists()

    # The next run through the link reads what the last one wrote: the login keeps going.
    assert refresh(link, options(fake, force=True)).result is Result.REFRESHED
    assert read_oauth(target)["refreshToken"] == fake.current_refresh_token()


def test_a_writer_through_the_link_and_one_through_the_target_share_the_lock(tmp_path: Path) -> None:
    link, target = linked(tmp_path)
    target.write_text("{}")
    with exclusive_lock(target, timeout=1):
        try:
            with exclusive_lock(link, timeout=0.2):
                raise AssertionError("the lock through the link was granted while the target's was held")
        except TimeoutError:
            pass


def test_a_group_readable_target_is_rewritten_owner_only(tmp_path: Path) -> None:
    link, target = linked(tmp_path)
    target.write_text("{}")
    target.chmod(0o644)
    with AtomicWriter(link) as writer:
        writer.commit(b'{"x": 1}')
    assert link.is_symlink() and json.loads(target.read_text()) == {"x": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_seed_onto_a_link_fills_its_target(tmp_path: Path) -> None:
    link, target = linked(tmp_path)
    source = tmp_path / "secret-mount" / "credentials.json"
    write_credentials(source, "sk-ant-oat01-seeded", "sk-ant-ort01-seeded", now_ms() + 3_600_000)
    outcome = seed(source, link)
    assert outcome.result is Result.COPIED, outcome.message
    assert link.is_symlink() and read_oauth(target)["accessToken"] == "sk-ant-oat01-seeded"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
