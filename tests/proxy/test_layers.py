"""The package keeps its layers: each folder imports only from the layers below it, no module imports itself back
round a circle, the conversion layer does no I/O and reads no settings, and the hot path never imports the CLI's
credential file tools. Imports are read from the source, those under `if TYPE_CHECKING:` and inside functions
included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import claude_proxy

PACKAGE = Path(claude_proxy.__file__).parent

# Bottom to top. A module may import from its own layer and the layers below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("claude_proxy", "claude_proxy.errors", "claude_proxy.retry", "claude_proxy.redact"),
    ("claude_proxy.convert",),
    ("claude_proxy.credentials",),
    ("claude_proxy.upstream",),
    ("claude_proxy.config",),
    ("claude_proxy.server",),
    ("claude_proxy.cli", "claude_proxy.__main__"),
)

# What `convert/` may import: the standard library's pure parts, orjson and pydantic, itself, the error types it
# raises and the retry hint it reads off an error answer's headers.
PURE = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "enum",
    "math",
    "re",
    "typing",
    "typing_extensions",
    "orjson",
    "pydantic",
    "claude_proxy.convert",
    "claude_proxy.errors",
    "claude_proxy.retry",
}
# The HTTP server's framework is the server layer's alone: below it, nothing knows how requests arrive.
SERVER_FRAMEWORKS = ("starlette", "fastapi", "uvicorn")
FILE_TOOLS = {"claude_proxy.credentials.store", "claude_proxy.credentials.lifecycle", "claude_proxy.credentials.oauth"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every module `path` imports, wherever the import stands; `from pkg import mod` names the module `pkg.mod`
    when there is one."""
    tree = ast.parse(path.read_text())
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            for alias in node.names:
                candidate = root.parent.joinpath(*f"{base}.{alias.name}".split("."))
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    found.add(f"{base}.{alias.name}")
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    name = root.name
    out: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        out[module_name(path, root)] = {m for m in imports(path, root) if m == name or m.startswith(f"{name}.")}
    return out


def layer_of(module: str, layers: tuple[tuple[str, ...], ...]) -> int:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer)
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            if module == prefix or module.startswith(f"{prefix}."):
                if prefix == module.split(".")[0] and module != prefix:
                    continue  # the package itself names only its __init__
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best[1]


def upward(edges: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    return sorted(
        f"{source} -> {target}"
        for source, targets in edges.items()
        for target in targets
        if layer_of(target, layers) > layer_of(source, layers)
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


EDGES = graph(PACKAGE)


def test_the_folders_are_the_layers() -> None:
    assert {"convert", "credentials", "upstream", "server"} <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    for module in EDGES:
        layer_of(module, LAYERS)  # every module has its place


def test_no_import_points_up_a_layer() -> None:
    assert upward(EDGES, LAYERS) == []


def test_no_import_circles() -> None:
    assert cycles(EDGES) == []


def test_the_conversion_layer_is_pure() -> None:
    files = sorted((PACKAGE / "convert").glob("*.py"))
    assert {f.stem for f in files} >= {"request", "response", "chat_stream", "responses", "responses_stream", "tables"}
    for path in files:
        impure = {m for m in imports(path, PACKAGE) if not any(m == r or m.startswith(f"{r}.") for r in PURE)}
        assert not impure, f"{path.name} imports {sorted(impure)}"


def test_the_hot_path_does_not_import_the_credential_file_tools() -> None:
    for module, targets in EDGES.items():
        if module.startswith(("claude_proxy.server", "claude_proxy.upstream", "claude_proxy.convert")):
            assert not targets & FILE_TOOLS, module


def test_only_the_server_layer_knows_the_http_framework() -> None:
    for folder in ("convert", "credentials", "upstream"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            framework = {m for m in imports(path, PACKAGE) if m.split(".")[0] in SERVER_FRAMEWORKS}
            assert not framework, f"{folder}/{path.name} imports {sorted(framework)}"


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A small package with one upward import (low -> high) and one circle (high.a <-> high.b)."""
    root = tmp_path / "toy"
    (root / "high").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy import high\n")
    (root / "high" / "__init__.py").write_text("")
    (root / "high" / "a.py").write_text("from toy import low\nfrom . import b\n")
    (root / "high" / "b.py").write_text("def f():\n    from toy.high.a import x\n")
    return root


def test_the_checks_see_what_they_are_for(toy: Path) -> None:
    """The checkers above find a type-checking import that points up and a circle made by a function's import."""
    edges = graph(toy)
    layers = (("toy", "toy.low"), ("toy.high",))
    assert upward(edges, layers) == ["toy.low -> toy.high"]
    assert cycles(edges) == [["toy.high.a", "toy.high.b"]]
