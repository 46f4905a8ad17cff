"""The layout keeps its layers: the conversion layer imports nothing that does I/O or reads the environment, and the
hot path never imports the CLI's credential file tools."""

from __future__ import annotations

import ast
from pathlib import Path

import claude_proxy

PACKAGE = Path(claude_proxy.__file__).parent
# What `convert/` may import at run time: the standard library's pure parts, orjson and pydantic, itself, and the
# error types it raises.
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
}


def runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (imports under `if TYPE_CHECKING:` left out)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def allowed(module: str, roots: set[str]) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in roots)


def test_the_conversion_layer_is_pure() -> None:
    files = sorted((PACKAGE / "convert").glob("*.py"))
    assert {f.stem for f in files} >= {"request", "response", "chat_stream", "responses", "responses_stream", "tables"}
    for path in files:
        impure = {m for m in runtime_imports(path) if not allowed(m, PURE)}
        assert not impure, f"{path.name} imports {sorted(impure)}"


def test_the_hot_path_does_not_import_the_credential_file_tools() -> None:
    tools = {"claude_proxy.credentials.store", "claude_proxy.credentials.lifecycle", "claude_proxy.credentials.oauth"}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "cli":
            continue  # the CLI is their user
        assert not runtime_imports(path) & tools, path.name
