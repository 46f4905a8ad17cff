"""Pin each Dockerfile's base image by digest: `ARG PYTHON_IMAGE=python:TAG` becomes `python:TAG@sha256:...`.

The digest is the one the registry serves for the tag now (the multi-platform index), asked with
`docker buildx imagetools inspect` or, without Docker, `crane digest`; the tag stays beside it, so a later run
re-resolves the same tag. Nothing is written unless every Dockerfile's digest was found.

Usage: python scripts/pin_images.py DOCKERFILE...   (`make pin-images`)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ARG = re.compile(r"^ARG PYTHON_IMAGE=(?P<tag>[^@\s]+)(?:@sha256:[0-9a-f]{64})?$", re.MULTILINE)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def registry_digest(tag: str) -> str:
    """The digest the registry serves for `tag`."""
    if shutil.which("docker"):
        command = ["docker", "buildx", "imagetools", "inspect", tag, "--format", "{{.Manifest.Digest}}"]
    elif shutil.which("crane"):
        command = ["crane", "digest", tag]
    else:
        raise SystemExit("pin-images: neither docker (with buildx) nor crane is on PATH; nothing was changed")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    digest = result.stdout.strip()
    if result.returncode != 0 or not DIGEST.fullmatch(digest):
        raise SystemExit(f"pin-images: {' '.join(command)} gave no digest: {(result.stderr or digest).strip()[:300]}")
    return digest


def pin(text: str, resolve: Callable[[str], str]) -> str:
    """`text` (a Dockerfile) with its base image argument pinned to the digest `resolve` gives for its tag."""
    if not ARG.search(text):
        raise SystemExit("pin-images: no `ARG PYTHON_IMAGE=python:TAG` line")
    return ARG.sub(lambda match: f"ARG PYTHON_IMAGE={match['tag']}@{resolve(match['tag'])}", text)


def main(paths: list[str]) -> int:
    digests: dict[str, str] = {}

    def resolve(tag: str) -> str:
        if tag not in digests:
            digests[tag] = registry_digest(tag)
        return digests[tag]

    pinned = {Path(path): pin(Path(path).read_text(), resolve) for path in paths}
    for path, text in pinned.items():
        path.write_text(text)
    for tag, digest in digests.items():
        print(f"{tag}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
