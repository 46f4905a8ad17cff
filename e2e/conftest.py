"""The e2e test needs Docker, kind, helm and kubectl; without them it stops at once and says which is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str | None:
    """$HELM / $KUBECTL (as the Makefile exports them), else PATH, else .tools/bin."""
    for candidate in (os.environ.get(name.upper()), shutil.which(name), str(ROOT / ".tools" / "bin" / name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("e2e") for item in items):
        return
    missing = [name for name in ("docker", "kind", "helm", "kubectl") if tool(name) is None]
    if missing:
        pytest.exit(f"e2e needs {', '.join(missing)} (and a running Docker engine); not found", returncode=1)
    docker = tool("docker")
    assert docker is not None
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.exit("e2e needs a running Docker engine ('docker info' failed)", returncode=1)
