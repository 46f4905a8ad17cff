"""The operator's RBAC rules grant nothing it does not need. Each rule is used by an operator test marked `uses_rbac`
(the operator fixture checks the mark against the requests the test made), so a rule nothing needs any more fails a
test run alone, in any order; the marks sit in every test module of this folder."""

from __future__ import annotations

import importlib
from pathlib import Path

from claude_proxy_operator import rbac

HERE = Path(__file__).parent


def _marked_tests() -> dict[str, set[tuple[str, str, str]]]:
    """The rules each `uses_rbac` test of tests/operator is marked with, by module and test name."""
    marked: dict[str, set[tuple[str, str, str]]] = {}
    for path in sorted(HERE.glob("test_*.py")):
        module = importlib.import_module(f"tests.operator.{path.stem}")
        for name, test in vars(module).items():
            for mark in getattr(test, "pytestmark", ()) if name.startswith("test_") else ():
                if mark.name == "uses_rbac":
                    marked.setdefault(f"{path.stem}::{name}", set()).update(mark.args[0])
    return marked


def test_every_rbac_rule_is_used_by_a_test_marked_so() -> None:
    """The rules grant nothing the operator does not need: the `uses_rbac` marks cover them all."""
    tests = _marked_tests()
    # Every mark written in the folder was found, whichever module holds it.
    sources = [path.read_text() for path in HERE.glob("test_*.py") if path.name != Path(__file__).name]
    written = sum(source.count("@pytest.mark.uses_rbac(") for source in sources)
    assert len(tests) == written > 0
    marked = set().union(*tests.values())
    assert marked - rbac.permissions() == set()
    assert rbac.permissions() - marked == rbac.UNEXERCISED
