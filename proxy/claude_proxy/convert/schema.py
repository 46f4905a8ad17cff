"""Client JSON schemas -> the subset of JSON Schema that Anthropic's structured outputs and strict tools accept.

Pure: no I/O, and the input is never mutated. The rules follow Anthropic's documented JSON Schema limitations and
the schema transform of the official anthropic SDKs (Python `transform_schema`, TypeScript `transformJSONSchema`):

- kept: `type` (also as a list), `enum` and `const` of plain values, `default`, `title`, `description`,
  `properties`, `required`, `items`, `anyOf`, `allOf`, `$ref` to `$defs`/`definitions`, string `format` of
  the supported list, `pattern` without the regex features the API refuses, array `minItems` of 0 or 1;
- changed: every object gets `additionalProperties: false` (the API demands it), `oneOf` becomes `anyOf`,
  OpenAPI's `nullable: true` becomes a union with `null`, an `allOf` of one entry is merged into its node, and a
  `$ref` with sibling keywords, inside `allOf`, or pointing elsewhere than a definition is replaced by what it names;
- removed and kept as words in the node's `description` (`{minimum: 1, maxLength: 10}`), so the model still sees
  them: numeric bounds, `multipleOf`, string lengths, unsupported formats and patterns, `maxItems`, `uniqueItems`,
  other `minItems`, `minProperties`/`maxProperties`, `patternProperties`, `examples`, conditionals and the rest;
- dropped silently: pure annotations with no meaning for the model (`$schema`, `$id`, `$comment`, `$anchor`), and
  integer bounds of exactly JavaScript's safe range (+-9007199254740991, what zod emits for every `int()`).

Recursive schemas are not supported by the API: `strict_schema` raises `UnsupportedSchema` for them (and for
references outside the schema), so the caller can fall back to a way that needs no grammar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
# Annotations that say nothing the model could use; they are dropped without a word.
_SILENT = frozenset({"$schema", "$id", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary"})
# Handled by the node walk itself.
_STRUCTURE = frozenset(
    {
        "type",
        "description",
        "title",
        "default",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "nullable",
        "format",
        "pattern",
        "minItems",
    }
)
# Regex features the API's grammar compiler refuses: backreferences, lookaround, word boundaries.
_COMPLEX_PATTERN = re.compile(r"\\[1-9]|\\k<|\(\?<?[=!]|\\[bB]")
_DEFINITION = re.compile(r"^#/(\$defs|definitions)/[^/]+$")
_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")
SAFE_INTEGER = 2**53 - 1
LARGE_QUANTIFIER = 1000  # a `{n,m}` bound from here on counts as a large range


class UnsupportedSchema(ValueError):
    """A schema no transform can make acceptable: recursive, or referring outside itself."""


@dataclass(frozen=True)
class Complexity:
    """What the API's per-request budgets for strict schemas count: optional properties and union-typed nodes."""

    optional: int = 0
    unions: int = 0

    def __add__(self, other: Complexity) -> Complexity:
        return Complexity(self.optional + other.optional, self.unions + other.unions)


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema rewritten to the subset Anthropic accepts for `output_config.format` and strict tools."""
    _check_acyclic(schema)
    return _Walk(schema).node(schema)


def simple_pattern(pattern: str) -> bool:
    """True when a `pattern` uses only regex features the API's grammar accepts."""
    if _COMPLEX_PATTERN.search(pattern):
        return False
    for low, high in _QUANTIFIER.findall(pattern):
        if int(low) >= LARGE_QUANTIFIER or (high and int(high) >= LARGE_QUANTIFIER):
            return False
    return True


def complexity(schema: Any) -> Complexity:
    """Optional properties and union-typed nodes (`anyOf`, a list of types) anywhere in `schema`."""
    if isinstance(schema, list):
        total = Complexity()
        for item in schema:
            total += complexity(item)
        return total
    if not isinstance(schema, Mapping):
        return Complexity()
    own = Complexity(
        optional=(
            len([k for k in schema["properties"] if k not in (schema.get("required") or ())])
            if isinstance(schema.get("properties"), Mapping)
            else 0
        ),
        unions=int(isinstance(schema.get("anyOf"), list) or isinstance(schema.get("type"), list)),
    )
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            own += complexity(list(value.values()))
        elif key in ("items", "anyOf", "allOf", "additionalProperties"):
            own += complexity(value)
    return own


# ---- references ----------------------------------------------------------------------------------------------------


def _resolve(root: Mapping[str, Any], ref: Any) -> Any:
    """The node a reference (`#`, `#/$defs/Name`, any JSON pointer into the schema) points at."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        raise UnsupportedSchema(f"only JSON pointers into the schema are supported as references, not {ref!r}")
    node: Any = root
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise UnsupportedSchema(f"reference {ref!r} names nothing in the schema")
    return node


def _refs(node: Any) -> list[str]:
    """Every `$ref` inside `node` (not following them)."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("$ref")
            if ref is not None:
                found.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_acyclic(root: Mapping[str, Any]) -> None:
    """Raise UnsupportedSchema when a reference reachable from the root leads back to itself."""
    done: set[str] = set()
    path: list[str] = []

    def visit(ref: str) -> None:
        if ref in done:
            return
        if ref in path:
            raise UnsupportedSchema(f"recursive schemas are not supported (through {ref!r})")
        path.append(ref)
        target = _resolve(root, ref)
        inner = _refs(target) if ref != "#" else ["#"]
        for child in inner:
            visit(child)
        path.pop()
        done.add(ref)

    for ref in _refs(root):
        visit(ref)


# ---- the walk ------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _words(leftover: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{key}: {orjson.dumps(value).decode()}" for key, value in leftover.items()) + "}"


class _Walk:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def inline(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """`node` with its `$ref` replaced by the definition (its own keywords win), and a one-entry `allOf` merged."""
        merged = dict(node)
        while "$ref" in merged:
            target = _resolve(self.root, merged.pop("$ref"))
            if not isinstance(target, Mapping):
                raise UnsupportedSchema("a reference must name a schema object")
            merged = {**{k: v for k, v in target.items() if k not in ("$defs", "definitions")}, **merged}
        return merged

    def node(self, schema: Any) -> Any:
        if not isinstance(schema, Mapping):
            return schema  # boolean schemas and the like pass as they are
        schema = dict(schema)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
            del schema["allOf"]
            return self.node({**self.inline(all_of[0]), **schema})
        if "$ref" in schema:
            bare = all(k == "$ref" or k in _SILENT or (k == "nullable" and not schema[k]) for k in schema)
            if bare and _DEFINITION.match(str(schema["$ref"])):
                return {"$ref": schema["$ref"]}
            # The API takes a bare `$ref` only; and a pointer elsewhere than a definition may not survive the walk.
            return self.node(self.inline(schema))
        if schema.get("nullable") is True:
            del schema["nullable"]
            return _with_null(self.node(schema))
        schema.pop("nullable", None)
        return self.keywords(schema)

    def keywords(self, schema: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        leftover: dict[str, Any] = {}
        kind = schema.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind} if isinstance(kind, str) else set()
        is_object = "object" in kinds or (not kinds and isinstance(schema.get("properties"), Mapping))
        is_array = "array" in kinds or (not kinds and "items" in schema)
        is_string = "string" in kinds or not kinds

        for defs in ("$defs", "definitions"):
            if isinstance(schema.get(defs), Mapping):
                out[defs] = {name: self.node(sub) for name, sub in schema[defs].items()}
        if kind is not None:
            out["type"] = kind
        for key in ("title", "description", "default"):
            if key in schema:
                out[key] = schema[key]
        for key in ("enum", "const"):
            if key not in schema:
                continue
            value = schema[key]
            ok = all(_plain(v) for v in value) if key == "enum" and isinstance(value, list) else _plain(value)
            (out if ok else leftover)[key] = value

        if isinstance(schema.get("anyOf"), list):
            out["anyOf"] = [self.node(v) for v in schema["anyOf"]]
            if "oneOf" in schema:
                leftover["oneOf"] = schema["oneOf"]
        elif isinstance(schema.get("oneOf"), list):
            out["anyOf"] = [self.node(v) for v in schema["oneOf"]]
        if isinstance(schema.get("allOf"), list):
            out["allOf"] = [self.node(self.inline(v) if isinstance(v, Mapping) else v) for v in schema["allOf"]]

        if is_object:
            props = schema.get("properties")
            out["properties"] = {k: self.node(v) for k, v in props.items()} if isinstance(props, Mapping) else {}
            if "required" in schema:
                out["required"] = schema["required"]
            out["additionalProperties"] = False
        elif "required" in schema:
            leftover["required"] = schema["required"]
        if is_array and "items" in schema:
            items = schema["items"]
            if isinstance(items, list):
                leftover["items"] = items  # the old tuple form
            else:
                out["items"] = self.node(items)
        if "minItems" in schema:
            (out if is_array and schema["minItems"] in (0, 1) else leftover)["minItems"] = schema["minItems"]
        fmt = schema.get("format")
        if fmt is not None:
            (out if is_string and fmt in STRING_FORMATS else leftover)["format"] = fmt
        pattern = schema.get("pattern")
        if pattern is not None:
            ok = is_string and isinstance(pattern, str) and simple_pattern(pattern)
            (out if ok else leftover)["pattern"] = pattern

        for key, value in schema.items():
            if key in ("minimum", "maximum") and value in (-SAFE_INTEGER, SAFE_INTEGER) and "integer" in kinds:
                continue  # JavaScript's safe-integer range (zod's `int()`): no constraint worth a word
            if key not in _STRUCTURE and key not in _SILENT:
                leftover[key] = value
        if leftover:
            described = out.get("description")
            prefix = f"{described}\n\n" if isinstance(described, str) and described else ""
            out["description"] = prefix + _words(leftover)
        return out


def _with_null(schema: Any) -> Any:
    """`schema` that also accepts null (what OpenAPI's `nullable: true` means)."""
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if isinstance(kind, str | list) and "anyOf" not in schema:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        out = {**schema, "type": kinds if "null" in kinds else [*kinds, "null"]}
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(schema.get("anyOf"), list):
        if any(isinstance(v, Mapping) and v.get("type") == "null" for v in schema["anyOf"]):
            return schema
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return {"anyOf": [schema, {"type": "null"}]}
