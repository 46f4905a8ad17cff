"""What the API server does with a ClaudeProxy before the operator sees it: structural defaulting, OpenAPI
validation and the CEL rules, done here offline (jsonschema + cel-python) against the CRD file itself."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "manifests" / "crds" / "claudeproxies.claudeproxy.dev.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("claudeproxy-*.yaml"))


@cache
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def example_proxies() -> list[dict[str, Any]]:
    return [doc for path in EXAMPLES for doc in load_all(path) if doc["kind"] == "ClaudeProxy"]


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: an absent field with a `default` gets it, then defaults apply inside it too."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and node.get("type") == "object":
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [apply_defaults(node["items"], item) for item in value]
    return value


def _rules(node: dict[str, Any], value: Any, old: Any, path: str) -> Iterator[tuple[str, str, Any, Any]]:
    for rule in node.get("x-kubernetes-validations") or ():
        yield path, rule["rule"], value, old
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                old_item = old.get(key) if isinstance(old, dict) else None
                yield from _rules(sub, item, old_item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from _rules(node["items"], item, None, f"{path}[{index}]")


_env = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _env.program(_env.compile(rule))


def all_rules() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(rule["rule"] for rule in node.get("x-kubernetes-validations") or ())
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    walk(schema())
    return found


def validate(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Errors the API server would answer a create (or, with `old`, an update) of `obj` with; [] when accepted."""
    errors: list[str] = []
    defaulted = apply_defaults(schema(), obj)
    old_defaulted = apply_defaults(schema(), old) if old is not None else None
    validator = jsonschema.Draft7Validator(schema())
    errors.extend(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(defaulted))
    for path, rule, value, old_value in _rules(schema(), defaulted, old_defaulted, "self"):
        if "oldSelf" in rule and old_value is None:
            continue  # transition rules only run on updates of an existing value
        activation = {"self": celpy.json_to_cel(value)}
        if old_value is not None:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        try:
            result = _program(rule).evaluate(activation)
        except celpy.CELEvalError as exc:  # pragma: no cover - a rule that cannot evaluate is a CRD bug
            errors.append(f"{path}: rule {rule!r} failed to evaluate: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError) or not bool(result):
            errors.append(f"{path}: {rule}")
    return errors
