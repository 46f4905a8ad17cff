"""The schema transform on schemas real clients send: what pydantic emits (also through the openai SDK's strict
form), what zod 4's `z.toJSONSchema` emits (fixtures in tests/fixtures/schemas, made with zod 4.6.7), and the corners
(`$ref` with siblings, `allOf`, `nullable`, `oneOf`, recursion). Each result is checked against the fake Anthropic's
model of what the real API refuses, and each input, untransformed, is refused by it."""

from __future__ import annotations

import copy
import datetime
import json
from enum import StrEnum
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, HttpUrl, RootModel

from claude_proxy.convert.schema import Complexity, UnsupportedSchema, complexity, simple_pattern, strict_schema
from tests import paths
from tests.fakes.anthropic import Reject, check_strict_schema

FIXTURES = paths.FIXTURES / "schemas"


class Address(BaseModel):
    street: str = Field(min_length=1, max_length=80)
    zip: str = Field(pattern=r"^\d{5}$")


class Color(StrEnum):
    red = "red"
    green = "green"


class Person(BaseModel):
    name: str = Field(description="Full name", max_length=50)
    age: int = Field(ge=0, le=150)
    score: float = Field(gt=0, lt=1, multiple_of=0.01)
    home: Address
    work: Address | None = None
    office: Address = Field(description="Where they work")
    color: Color
    tags: list[str] = Field(min_length=1, max_length=5)
    ids: set[int]
    meta: dict[str, int]
    nick: str | None = Field(default=None, max_length=10)
    birthday: datetime.date
    website: HttpUrl
    kind: Literal["person"]
    point: tuple[int, int]


def accepted(schema: dict[str, Any]) -> bool:
    """Whether the fake (the model of the real API) takes `schema` as a structured-output schema."""
    try:
        check_strict_schema(schema, "output_config.format.schema", [0, 0])
    except Reject:
        return False
    return True


def refusal(schema: dict[str, Any]) -> str:
    with pytest.raises(Reject) as info:
        check_strict_schema(schema, "output_config.format.schema", [0, 0])
    return info.value.message


def nodes(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, dict):
        return [schema] + [n for v in schema.values() for n in nodes(v)]
    if isinstance(schema, list):
        return [n for v in schema for n in nodes(v)]
    return []


REAL_SCHEMAS = {
    "pydantic": Person.model_json_schema(),
    "openai-strict-pydantic": to_strict_json_schema(Person),
    "zod4-order": json.loads((FIXTURES / "zod4_order.json").read_text()),
}


@pytest.mark.parametrize("name", sorted(REAL_SCHEMAS))
def test_real_schemas_are_refused_as_sent_and_accepted_transformed(name: str) -> None:
    original = REAL_SCHEMAS[name]
    before = copy.deepcopy(original)
    assert not accepted(original)
    out = strict_schema(original)
    assert original == before  # the input is never mutated
    assert accepted(out), refusal(out)
    for node in nodes(out):
        if node.get("type") == "object" or "properties" in node:
            assert node["additionalProperties"] is False
    assert jsonschema.Draft202012Validator.check_schema(out) is None


def test_the_real_api_message_shape() -> None:
    message = refusal(
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "additionalProperties": False}
    )
    assert message == "output_config.format.schema: For 'integer' type, property 'minimum' is not supported"
    message = refusal({"type": "object", "properties": {}})
    assert message.endswith("For 'object' type, 'additionalProperties' must be explicitly set to false")


def test_pydantic_constraints_become_words_and_structure_stays() -> None:
    out = strict_schema(Person.model_json_schema())
    props = out["properties"]
    assert props["name"] == {"type": "string", "title": "Name", "description": "Full name\n\n{maxLength: 50}"}
    assert props["age"]["description"] == "{maximum: 150, minimum: 0}" and "minimum" not in props["age"]
    assert props["score"]["description"] == "{exclusiveMaximum: 1, exclusiveMinimum: 0, multipleOf: 0.01}"
    assert props["home"] == {"$ref": "#/$defs/Address"}
    assert props["work"]["anyOf"] == [{"$ref": "#/$defs/Address"}, {"type": "null"}]
    # a $ref with a sibling description: the definition is inlined, the description kept
    assert props["office"]["description"] == "Where they work"
    assert props["office"]["properties"]["zip"] == {"type": "string", "title": "Zip", "pattern": r"^\d{5}$"}
    assert props["color"] == {"$ref": "#/$defs/Color"}
    assert out["$defs"]["Color"]["enum"] == ["red", "green"]
    assert props["tags"]["minItems"] == 1 and props["tags"]["description"] == "{maxItems: 5}"
    assert props["ids"]["description"] == "{uniqueItems: true}"
    assert props["meta"]["additionalProperties"] is False
    assert props["nick"]["anyOf"][0] == {"type": "string", "description": "{maxLength: 10}"}
    assert props["nick"]["default"] is None
    assert props["birthday"]["format"] == "date"
    assert props["website"]["format"] == "uri" and "maxLength: 2083" in props["website"]["description"]
    assert props["kind"]["const"] == "person"
    assert out["required"] == Person.model_json_schema()["required"]
    assert out["$defs"]["Address"]["properties"]["street"]["description"] == "{maxLength: 80, minLength: 1}"


def test_zod4_schema() -> None:
    out = strict_schema(REAL_SCHEMAS["zod4-order"])
    props = out["properties"]
    assert "$schema" not in out
    # z.number().int(): the safe-integer bounds carry nothing and vanish without a word
    assert props["priority"] == {"type": "integer"}
    assert props["customer"]["properties"]["age"] == {"type": "integer"}
    item = props["items"]["items"]["properties"]
    assert item["quantity"] == {"type": "integer", "description": "{minimum: 1, maximum: 99}"}
    assert item["sku"]["pattern"] == "^[A-Z0-9-]+$" and item["sku"]["description"] == "{minLength: 3, maxLength: 12}"
    assert props["items"]["minItems"] == 1 and props["items"]["description"] == "{maxItems: 10}"
    # the email pattern zod adds uses lookahead-free groups and stays; the uuid one too
    assert props["id"]["format"] == "uuid" and "pattern" in props["id"]
    assert props["note"] == {"type": ["string", "null"]}
    assert props["kind"] == {"type": "string", "const": "order"}
    assert props["status"]["enum"] == ["pending", "shipped", "delivered"]


def test_recursive_schemas_are_unsupported() -> None:
    tree = json.loads((FIXTURES / "zod4_tree.json").read_text())  # zod 4: `$ref: "#"`
    with pytest.raises(UnsupportedSchema):
        strict_schema(tree)
    assert refusal(tree).endswith("Too many recursive definitions in schema")

    class Node(BaseModel):
        value: int
        children: list[Node]

    with pytest.raises(UnsupportedSchema):
        strict_schema(Node.model_json_schema())  # pydantic: through $defs
    with pytest.raises(UnsupportedSchema):
        strict_schema({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}})


def test_corners() -> None:
    # allOf of one entry (older pydantic's way to describe a $ref) merges into its node
    defs = {"A": {"type": "object", "properties": {"x": {"type": "integer", "maximum": 3}}}}
    out = strict_schema(
        {
            "$defs": defs,
            "type": "object",
            "properties": {"a": {"allOf": [{"$ref": "#/$defs/A"}], "description": "the a"}},
        }
    )
    assert out["properties"]["a"]["description"] == "the a"
    assert out["properties"]["a"]["properties"]["x"] == {"type": "integer", "description": "{maximum: 3}"}
    assert accepted(out)
    # allOf of several: the references inside are inlined (the API refuses allOf with $ref)
    out = strict_schema({"$defs": defs, "allOf": [{"$ref": "#/$defs/A"}, {"type": "object", "properties": {}}]})
    assert all("$ref" not in entry for entry in out["allOf"]) and accepted(out)
    # oneOf -> anyOf; nullable -> a union with null (enum too)
    out = strict_schema({"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]})
    assert out == {"anyOf": [{"type": "string"}, {"type": "integer", "description": "{minimum: 0}"}]}
    assert strict_schema({"type": "string", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert strict_schema({"$ref": "#/$defs/A", "nullable": True, "$defs": defs})["type"] == ["object", "null"]
    assert strict_schema({"anyOf": [{"$ref": "#/$defs/A"}], "nullable": True, "$defs": defs})["anyOf"] == [
        {"$ref": "#/$defs/A"},
        {"type": "null"},
    ]
    # type lists keep their per-type rules
    out = strict_schema({"type": ["object", "null"], "properties": {}, "minProperties": 1})
    assert out["additionalProperties"] is False and out["description"] == "{minProperties: 1}" and accepted(out)
    # enums of objects, unknown formats and complex patterns become words
    out = strict_schema({"type": "string", "format": "ipv4-cidr", "pattern": r"^(?!x)\w+$"})
    assert out == {"type": "string", "description": '{format: "ipv4-cidr", pattern: "^(?!x)\\\\w+$"}'}
    assert strict_schema({"enum": [{"a": 1}, 2]}) == {"description": '{enum: [{"a":1},2]}'}
    assert strict_schema({"type": "array", "items": {"type": "string"}, "minItems": 0}) == {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 0,
    }


def test_a_root_reference_is_inlined() -> None:
    class Inner(BaseModel):
        x: int = Field(ge=0)

    class Root(RootModel[Inner]):
        pass

    out = strict_schema(Root.model_json_schema())  # {"$defs": …, "$ref": "#/$defs/Inner", "title": "Root"}
    assert out["type"] == "object" and out["title"] == "Root" and out["additionalProperties"] is False
    assert out["properties"]["x"] == {"type": "integer", "title": "X", "description": "{minimum: 0}"}
    assert accepted(out)


def test_simple_patterns() -> None:
    assert simple_pattern(r"^[A-Z]{2,3}-\d+$")
    assert not simple_pattern(r"(a)\1")
    assert not simple_pattern(r"(?<=x)y")
    assert not simple_pattern(r"\bword\b")
    assert not simple_pattern(r"a{1,5000}")


def test_complexity_counts_optional_properties_and_unions() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{}, {}]},
            "c": {"type": "object", "properties": {"d": {}}},
        },
        "required": ["a"],
    }
    assert complexity(schema) == Complexity(optional=3, unions=2)
    counts = [0, 0]
    check_strict_schema(strict_schema(schema), "x", counts)
    assert counts == [3, 2]  # the fake counts what the proxy counts


# ---- any schema a client could write -------------------------------------------------------------------------------

TYPES = st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
NAMES = st.sampled_from(["a", "b", "c"])
CONSTRAINTS = st.dictionaries(
    st.sampled_from(
        [
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "multipleOf",
            "minLength",
            "maxLength",
            "maxItems",
            "uniqueItems",
            "minProperties",
            "examples",
            "deprecated",
            "$comment",
            "x-extra",
            "readOnly",
        ]
    ),
    st.integers(0, 3),
    max_size=3,
)
FORMATS = st.sampled_from(["date", "email", "uuid", "int32", "binary", "uri-reference"])
PATTERNS = st.sampled_from([r"^\d+$", r"(a)\1", r"^(?!x).*", r"\bw", "[a-z]{2,3}"])


def schemas(refs: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.builds(
        lambda kind, extra, fmt, pattern, enum, nullable: {
            **({"type": kind} if kind else {}),
            **extra,
            **({"format": fmt} if fmt else {}),
            **({"pattern": pattern} if pattern else {}),
            **({"enum": enum} if enum else {}),
            **({"nullable": True} if nullable else {}),
        },
        st.one_of(st.none(), TYPES, st.lists(TYPES, min_size=1, max_size=2, unique=True)),
        CONSTRAINTS,
        st.one_of(st.none(), FORMATS),
        st.one_of(st.none(), PATTERNS),
        st.one_of(st.none(), st.lists(st.one_of(SCALARS, st.just({"k": 1})), min_size=1, max_size=3)),
        st.booleans(),
    )
    if refs:
        leaf = st.one_of(
            leaf,
            st.builds(
                lambda n, d: {"$ref": f"#/$defs/{n}", **({"description": d} if d else {})},
                st.sampled_from(["D1", "D2"]),
                st.one_of(st.none(), st.just("see D")),
            ),
        )

    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.builds(
                lambda props, req, extra, ap: {
                    "type": "object",
                    "properties": props,
                    "required": req,
                    **extra,
                    **({"additionalProperties": ap} if ap is not None else {}),
                },
                st.dictionaries(NAMES, inner, max_size=3),
                st.lists(NAMES, max_size=2, unique=True),
                CONSTRAINTS,
                st.one_of(st.none(), st.booleans(), st.just({"type": "integer"})),
            ),
            st.builds(
                lambda items, extra, n: {"type": "array", "items": items, "minItems": n, **extra},
                inner,
                CONSTRAINTS,
                st.integers(0, 3),
            ),
            st.builds(
                lambda k, vs: {k: vs},
                st.sampled_from(["anyOf", "oneOf", "allOf"]),
                st.lists(inner, min_size=1, max_size=3),
            ),
        )

    return st.recursive(leaf, extend, max_leaves=12)


@given(
    root=schemas(),
    defs=st.fixed_dictionaries({"D1": schemas(refs=False), "D2": schemas(refs=False)}),
)
@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
def test_any_schema_comes_out_accepted_or_is_declared_unsupported(root: dict[str, Any], defs: dict[str, Any]) -> None:
    schema = {"type": "object", "properties": {"value": root}, "required": ["value"], "$defs": defs}
    before = copy.deepcopy(schema)
    try:
        out = strict_schema(schema)
    except UnsupportedSchema:
        return
    assert schema == before
    assert accepted(out), (refusal(out), out)
    counts = [0, 0]
    check_strict_schema(out, "x", counts)
    assert complexity(out) == Complexity(*counts)
