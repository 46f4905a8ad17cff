"""The images' supply chain, checked without a Docker engine: the lock files (`make lock`) pin every runtime
dependency and the build backend with hashes, they resolve on PyPI with pip's hash checking, the Dockerfiles install
nothing else and nothing without them, and every base image is pinned by digest or by the one argument
`make pin-images` pins."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.test_images import IMAGES, ROOT, Stage, parse, resolve
from tests.proxy.serve_support import serve_process

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = ROOT / "requirements"
FAKE_DOCKERFILE = ROOT / "e2e" / "fake" / "Dockerfile"
DOCKERFILES = [IMAGES["proxy"]["dockerfile"], IMAGES["operator"]["dockerfile"], FAKE_DOCKERFILE]
BASE = r"python:3\.11\.\d+-slim-[a-z]+"


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of each entry of a lock file (`name==version \\` then `--hash` lines)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        first = block.split("\\", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        [spec] = requirement.specifier
        assert spec.operator == "==", f"{path.name}: not an exact pin: {first}"
        entries[canonicalize_name(requirement.name)] = (
            spec.version,
            re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
        )
    return entries


def closure(extras: frozenset[str]) -> dict[str, list[Requirement]]:
    """Every distribution the project needs at run time (pyproject.toml's dependencies and `extras`; below them, the
    installed distributions' own requirements), with the requirements that ask for it."""
    import importlib.metadata

    top = [Requirement(raw) for raw in PYPROJECT["project"]["dependencies"]]
    for extra in sorted(extras):
        top += [Requirement(raw) for raw in PYPROJECT["project"]["optional-dependencies"][extra]]
    needed: dict[str, list[Requirement]] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [(req, frozenset({""})) for req in top]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, contexts = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in contexts):
            continue
        name = canonicalize_name(req.name)
        needed.setdefault(name, []).append(req)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        for raw in importlib.metadata.requires(name) or []:
            todo.append((Requirement(raw), frozenset(req.extras) | {""}))
    return needed


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


# --- the lock files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proxy.lock", "operator.lock", "build.lock"])
def test_every_lock_entry_is_an_exact_pin_with_hashes(name: str) -> None:
    entries = read_lock(LOCKS / name)
    assert entries, name
    assert [n for n, (_, hashes) in entries.items() if not hashes] == [], "entries without a hash: run `make lock`"
    assert not re.search(
        r"^\s*(-e|--editable|--index-url|--extra-index-url|--find-links|\S+ @ )", (LOCKS / name).read_text(), re.M
    )


# The proxy image installs the `otel` extra (traces and metrics when the OTEL_ environment asks); the operator's does
# not need it.
@pytest.mark.parametrize(
    ("name", "extras"), [("proxy.lock", frozenset({"otel"})), ("operator.lock", frozenset({"operator"}))]
)
def test_a_lock_holds_every_runtime_dependency_and_nothing_else(name: str, extras: frozenset[str]) -> None:
    locked, needed = read_lock(LOCKS / name), closure(extras)
    assert {"fastapi", "starlette", "uvicorn", "aiohttp", "pydantic", "orjson", "uvloop"} <= needed.keys()
    assert ("kopf" in needed) is ("operator" in extras)
    assert ("opentelemetry-sdk" in needed) is ("otel" in extras)
    assert sorted(needed.keys() - locked.keys()) == [], "missing from the lock: run `make lock`"
    assert sorted(locked.keys() - needed.keys()) == [], "locked but not needed: run `make lock`"
    for dist, requirements in needed.items():
        for req in requirements:
            assert req.specifier.contains(locked[dist][0], prereleases=True), f"{dist}=={locked[dist][0]} breaks {req}"
    pins = constraints()
    assert {dist: version for dist, (version, _) in locked.items()} == {dist: pins[dist] for dist in locked}, (
        "the lock is not at the versions of constraints.txt: run `make lock`"
    )


def test_the_two_locks_agree_on_what_they_share() -> None:
    """The proxy's dependencies are in both images: at the same versions, with the same hashes."""
    proxy, operator = read_lock(LOCKS / "proxy.lock"), read_lock(LOCKS / "operator.lock")
    shared = proxy.keys() & operator.keys()
    assert {"fastapi", "aiohttp", "uvicorn"} <= shared
    assert {dist: operator[dist] for dist in shared} == {dist: proxy[dist] for dist in shared}


def test_the_build_lock_holds_the_build_backend_pyproject_asks_for() -> None:
    locked = read_lock(LOCKS / "build.lock")
    required = [Requirement(raw) for raw in PYPROJECT["build-system"]["requires"]]
    assert locked.keys() == {canonicalize_name(req.name) for req in required}
    for req in required:
        assert req.specifier.contains(locked[canonicalize_name(req.name)][0])


def test_pyproject_ranges_are_bounded_above() -> None:
    """Compatible ranges: a new major release of a dependency is taken on purpose (`make constraints lock`)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    runtime = [*PYPROJECT["project"]["dependencies"], *extras["operator"], *extras["otel"]]
    unbounded = [
        raw for raw in runtime if not any(s.operator in ("<", "<=", "==", "~=") for s in Requirement(raw).specifier)
    ]
    assert unbounded == []


@pytest.mark.slow
def test_the_locks_resolve_on_pypi_with_every_hash_checked(tmp_path: Path) -> None:
    """What the image build does with the locks, short of installing: pip downloads each locked file for the image's
    platform (Linux, CPython 3.11) from PyPI and checks it against the lock's hashes (`--require-hashes`), the three
    locks at once (they agree on what they share: the test above)."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
    except OSError as exc:
        pytest.fail(f"PyPI is not reachable, so the locks cannot be checked: {exc}")
    platforms = [
        f"--platform={tag}_x86_64"
        for tag in ("manylinux_2_36", "manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux1", "linux")
    ]
    command = [
        sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--require-hashes", "--no-deps",
        "--index-url", "https://pypi.org/simple", "--only-binary=:all:", *platforms, "--python-version=3.11",
        "--implementation=cp", "--abi=cp311", "--abi=abi3", "--abi=none", "--dest", str(tmp_path),
        "--requirement", str(LOCKS / "proxy.lock"), "--requirement", str(LOCKS / "operator.lock"),
        "--requirement", str(LOCKS / "build.lock"),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "PIP_CONFIG_FILE": os.devnull}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    downloaded = {canonicalize_name(p.name.split("-")[0]) for p in tmp_path.iterdir()}
    assert downloaded == read_lock(LOCKS / "proxy.lock").keys() | read_lock(LOCKS / "operator.lock").keys() | {
        "setuptools"
    }


def test_a_tampered_lock_is_refused_by_pip(tmp_path: Path) -> None:
    """`--require-hashes` is what makes a lock binding: a hash that does not match stops pip (a local wheel, no
    network: the project's own wheel is checked against a made-up hash)."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    [wheel] = wheels.glob("*.whl")
    lock = tmp_path / "bad.lock"
    lock.write_text(f"claude-code-proxy @ {wheel.as_uri()} \\\n    --hash=sha256:{'0' * 64}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--require-hashes", "--no-deps",
         "--no-index", "--ignore-installed", "--requirement", str(lock)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr


# --- the Dockerfiles -------------------------------------------------------------------------------------------------


def _runs(stage: Stage) -> list[str]:
    return [command.strip() for run in stage.all("RUN") for command in run.split("&&")]


@pytest.mark.parametrize("image", ["proxy", "operator"])
def test_the_build_stage_installs_only_locked_hashed_packages_dependencies_first(image: str) -> None:
    build = parse(Path(IMAGES[image]["dockerfile"])).stages[0]
    lock = f"/src/requirements/{image}.lock"
    installs = [c for c in _runs(build) if re.search(r"\bpip install\b", c)]
    assert installs == [
        "python -m pip install --require-hashes --no-deps --requirement /src/requirements/build.lock",
        f"/opt/venv/bin/pip install --require-hashes --no-deps --requirement {lock}",
        "/opt/venv/bin/pip install --no-deps /wheels/*.whl",  # the project's own wheel, built just before
    ]
    [wheel] = [c for c in _runs(build) if "pip wheel" in c]
    assert "--no-build-isolation" in wheel and "--no-deps" in wheel, "the build backend is the locked one"
    # Layer order: the locks are copied and installed before any source is copied.
    order = [(kw, arg) for kw, arg in build.instructions if kw in ("COPY", "RUN")]
    first_source = next(i for i, (kw, arg) in enumerate(order) if kw == "COPY" and "requirements/" not in arg)
    lock_copy = next(i for i, (kw, arg) in enumerate(order) if kw == "COPY" and f"requirements/{image}.lock" in arg)
    lock_install = next(i for i, (kw, arg) in enumerate(order) if kw == "RUN" and lock in arg)
    assert lock_copy < lock_install < first_source
    assert "constraints.txt" not in " ".join(arg for _, arg in build.instructions)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_base_image_is_pinned_by_digest_or_by_the_argument_pin_images_pins(path: Path) -> None:
    dockerfile = parse(path)
    names = {stage.name for stage in dockerfile.stages if stage.name}
    assert re.fullmatch(rf"{BASE}(@sha256:[0-9a-f]{{64}})?", dockerfile.args["PYTHON_IMAGE"])
    for stage in dockerfile.stages:
        if stage.base in names:
            continue
        assert stage.base == "${PYTHON_IMAGE}" or re.fullmatch(rf"{BASE}@sha256:[0-9a-f]{{64}}", stage.base), stage.base


def test_pin_images_writes_the_registry_digest_beside_the_tag(tmp_path: Path) -> None:
    """`make pin-images` with a stand-in for the registry client (`crane digest`, on a PATH without docker): every
    Dockerfile's argument gets the digest, the tag stays, and a second run replaces the digest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    crane = bin_dir / "crane"
    crane.write_text(
        f"#!{sys.executable}\nimport hashlib, sys\n"
        f"open({str(asked)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "print('sha256:' + hashlib.sha256((sys.argv[2] + open(__file__ + '.round').read()).encode()).hexdigest())\n"
    )
    crane.chmod(crane.stat().st_mode | stat.S_IXUSR)
    copies_ = []
    for path in DOCKERFILES:
        copy = tmp_path / path.relative_to(ROOT).as_posix().replace("/", "_")
        copy.write_text(path.read_text())
        copies_.append(copy)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    digests = []
    for round_ in ("1", "2"):
        Path(f"{crane}.round").write_text(round_)
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "pin_images.py"), *map(str, copies_)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        bases = {parse(copy).args["PYTHON_IMAGE"] for copy in copies_}
        [base] = bases
        tag, _, digest = base.partition("@")
        assert tag == parse(DOCKERFILES[0]).args["PYTHON_IMAGE"].partition("@")[0] and re.fullmatch(
            r"sha256:[0-9a-f]{64}", digest
        )
        assert all(
            resolve(stage.base, parse(copy).args) == base for copy in copies_ for stage in parse(copy).stages[-1:]
        )
        digests.append(digest)
    assert digests[0] != digests[1]
    assert asked.read_text().splitlines() == [f"digest {tag}", f"digest {tag}"]  # once per tag and run


def test_pin_images_without_a_registry_client_changes_nothing(tmp_path: Path) -> None:
    copy = tmp_path / "Dockerfile"
    copy.write_text(IMAGES["proxy"]["dockerfile"].read_text())
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pin_images.py"), str(copy)],
        capture_output=True, text=True, env={"PATH": str(tmp_path)}, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "neither docker (with buildx) nor crane" in result.stderr
    assert copy.read_text() == IMAGES["proxy"]["dockerfile"].read_text()


# --- the proxy image's health check ----------------------------------------------------------------------------------


def healthcheck() -> tuple[str, list[str]]:
    """The proxy image's HEALTHCHECK: its options and its exec-form command."""
    [check] = parse(IMAGES["proxy"]["dockerfile"]).stages[-1].all("HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    return options, json.loads(command)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with serve_process({"ANTHROPIC_API_KEY": "sk-ant-api03-health"}, tmp_path) as proxy:
        yield proxy.url


@pytest.mark.slow
def test_the_healthcheck_asks_health_with_python_and_fails_when_nothing_answers(served: str) -> None:
    """The command the image runs, run here against a real `claude-proxy serve` on the port the image's PORT names,
    then against a port with nothing listening."""
    options, command = healthcheck()
    assert command[0] == "python" and "curl" not in " ".join(command)  # the slim base has no curl
    assert re.search(r"--timeout=\d+s", options) and re.search(r"--interval=\d+s", options)
    port = served.rsplit(":", 1)[1]
    assert httpx.get(f"{served}/health").status_code == 200
    ok = subprocess.run(command, env={**os.environ, "PORT": port}, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = str(sock.getsockname()[1])
    down = subprocess.run(command, env={**os.environ, "PORT": closed}, capture_output=True, timeout=30)
    assert down.returncode != 0
