"""The tests mirror the package: each test file in tests/proxy/<layer>/ is named after a module of that layer
(test_<module>.py or test_<module>_<aspect>.py), and each in a subfolder (tests/proxy/server/routes/) after a module
of that subpackage, so a module renamed or removed cannot leave its tests behind."""

from __future__ import annotations

from pathlib import Path

import claude_proxy

PACKAGE = Path(claude_proxy.__file__).parent
TESTS = Path(__file__).parent
LAYERS = ("convert", "credentials", "upstream", "server")


def _modules(folder: Path) -> set[str]:
    return {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}


def _names_a_module(test: Path, modules: set[str]) -> bool:
    name = test.stem.removeprefix("test_")
    return any(name == module or name.startswith(f"{module}_") for module in modules)


def test_every_test_file_of_a_layer_names_a_module_of_that_layer() -> None:
    stray, checked, folders = [], 0, set()
    for layer in LAYERS:
        for test in sorted((TESTS / layer).rglob("test_*.py")):
            folder = test.parent.relative_to(TESTS)
            if not _names_a_module(test, _modules(PACKAGE / folder)):
                stray.append(f"{test.relative_to(TESTS)}: no module claude_proxy/{folder}/ of that name")
            checked += 1
            folders.add(folder)
    assert stray == []
    assert checked >= 2 * len(LAYERS)  # the walk found the tests rather than an empty folder
    assert any(len(folder.parts) > 1 for folder in folders)  # and went below the layers' own folders


def test_a_name_matches_a_module_only_whole_or_before_an_aspect() -> None:
    modules = {"responses", "responses_stream", "state"}
    assert _names_a_module(Path("test_responses_stream.py"), modules)
    assert _names_a_module(Path("test_state_turn.py"), modules)
    assert not _names_a_module(Path("test_statement.py"), modules)
    assert not _names_a_module(Path("test_turn.py"), modules)


def test_a_test_in_a_subfolder_names_a_module_of_that_subpackage() -> None:
    routes = _modules(PACKAGE / "server" / "routes")
    assert _names_a_module(Path("test_probes.py"), routes)
    assert not _names_a_module(Path("test_app.py"), routes)  # a module of server/, not of server/routes/
