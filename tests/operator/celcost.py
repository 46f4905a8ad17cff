"""The API server's static cost estimate of a CRD's CEL rules, offline, so a test can refuse a CRD a real
kube-apiserver would refuse ("estimated rule cost exceeds budget").

It follows the rules of apiextensions-apiserver (pkg/apiserver/schema/cel and pkg/apis/apiextensions/validation) and
cel-go's checker cost estimator, for the part of CEL the CRD's rules use:

- Each schema node gets a declared type with a maximum size: a string its `maxLength` x 4 (bytes per code point),
  else its longest `enum` value, else the longest a `date-time` / `date` / `duration` can be, else the whole request
  (3 MiB - 2); a list its `maxItems`, else (3 MiB - 2) / (smallest item + 1); a map its `maxProperties`, else
  (3 MiB - 2) / (smallest value + 6). The smallest serialized size is 2 for a string, list, map or object (plus, for
  an object, each required property without a default), 1 for a number, 4 for a boolean. Map keys, as the API server
  declares them, carry no size (0).
- cel-go's cost of an expression (the estimate's maximum): a constant 0; an identifier 1; a field select 1 plus its
  operand; `has()` 1 plus its operand; `&&`, `||` and `?:` only their operands' costs (the larger branch); equality
  and string comparison ceil(0.1 x the smaller size); `contains` ceil(0.1 x size) x ceil(0.1 x substring size);
  `matches` ceil(0.1 x (size + 1)) x ceil(0.25 x regex size); `startsWith`/`endsWith` ceil(0.1 x argument size);
  string `+` ceil(0.1 x both sizes); `in` a list's size; any other call 1; each call plus its arguments' costs; a
  comprehension (`all`, `exists`, ...) its range plus range size x (loop step + loop condition).
- A rule's cost is that times the rule's cardinality: the product of the `maxItems` / `maxProperties` of the lists
  and maps it sits under, or, when one of them is unbounded, 3 MiB / (the rule node's smallest size + 1).
- The API server refuses a rule over StaticEstimatedCostLimit (10,000,000) and a CRD whose rules sum to more than
  StaticEstimatedCRDCostLimit (100,000,000).

Not modelled (no rule here uses them): lists and maps built in the expression, the Kubernetes extension libraries
(`url`, `quantity`, `isSorted`, ...), `messageExpression`. An expression using anything else is refused with an
error, so a new rule cannot be estimated wrongly in silence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_BYTES = 3 * 1024 * 1024
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
STRING_TRAVERSAL = 0.1
REGEX_LENGTH = 0.25
MAX_UINT64 = 2**64 - 1
FORMAT_SIZES = {"date-time": 32, "date": 12, "duration": 32}  # apiserver/pkg/cel: MaxDatetimeSizeJSON, ...


@dataclass
class Decl:
    """The declared type of a schema node, as the API server builds it for CEL: kind, largest size, smallest JSON."""

    kind: str  # string, int, bool, list, map, object, dyn
    max_elements: int
    min_size: int
    elem: Decl | None = None
    fields: dict[str, Decl] = field(default_factory=dict)


def _clamp(value: int) -> int:
    return min(max(value, 0), MAX_UINT64)


def decl(node: dict[str, Any]) -> Decl:
    """The declared type of a structural schema node."""
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string") or kind == "string":
        if "maxLength" in node:
            longest = int(node["maxLength"]) * 4
        elif node.get("enum"):
            longest = max(len(str(v)) for v in node["enum"])
        elif node.get("format") in FORMAT_SIZES and not node.get("x-kubernetes-int-or-string"):
            longest = FORMAT_SIZES[node["format"]]
        else:
            longest = MAX_REQUEST_BYTES - 2
        return Decl("string", longest, 2)
    if kind in ("integer", "number"):
        return Decl("int", 1, 1)
    if kind == "boolean":
        return Decl("bool", 1, 4)
    if kind == "array":
        item = decl(node.get("items") or {})
        count = node.get("maxItems", (MAX_REQUEST_BYTES - 2) // (item.min_size + 1))
        return Decl("list", int(count), 2, elem=item)
    if kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            value = decl(extra)
            count = node.get("maxProperties", (MAX_REQUEST_BYTES - 2) // (value.min_size + 6))
            return Decl("map", int(count), 2, elem=value)
        if "properties" in node:
            required = set(node.get("required") or ())
            fields = {name: decl(sub) for name, sub in node["properties"].items()}
            smallest = 2 + sum(
                len(name) + fields[name].min_size + 4
                for name, sub in node["properties"].items()
                if name in required and "default" not in sub
            )
            return Decl("object", 1, smallest, fields=fields)
    return Decl("dyn", MAX_UINT64, 2)  # free-form (x-kubernetes-preserve-unknown-fields): size unknown


MAP_KEY = Decl("string", 0, 2)  # apiservercel.StringType: declared without a maximum size

# --- a parser for the CEL the rules use -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:().,\[\]]))"
)
MACROS = {"all", "exists", "exists_one", "map", "filter"}


def tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read CEL at {text[pos:]!r}")
        kind = str(match.lastgroup)
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]

    def __init__(self, text: str) -> None:
        self.toks = tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.toks[self.pos][1] if self.pos < len(self.toks) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.pos >= len(self.toks):
            raise ValueError("unexpected end of CEL expression")
        tok = self.toks[self.pos]
        if expected is not None and tok[1] != expected:
            raise ValueError(f"expected {expected!r}, found {tok[1]!r}")
        self.pos += 1
        return tok

    def parse(self) -> tuple[Any, ...]:
        expr = self.ternary()
        if self.pos != len(self.toks):
            raise ValueError(f"unexpected {self.peek()!r}")
        return expr

    def ternary(self) -> tuple[Any, ...]:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            yes = self.ternary()
            self.take(":")
            return ("cond", cond, yes, self.ternary())
        return cond

    def binary(self, level: int) -> tuple[Any, ...]:
        if level == len(self.BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.BINARY[level]:
            op = self.take()[1]
            left = ("op", op, left, self.binary(level + 1))
        return left

    def unary(self) -> tuple[Any, ...]:
        if self.peek() in ("!", "-"):
            return ("op1", self.take()[1], self.unary())
        return self.member()

    def member(self) -> tuple[Any, ...]:
        expr = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == "[":
                expr = ("index", expr, self.ternary())
                self.take("]")
                continue
            name = self.take()[1]
            if self.peek() != "(":
                expr = ("select", expr, name)
                continue
            args = self.args()
            if name in MACROS:
                if len(args) != 2 or args[0][0] != "ident":
                    raise ValueError(f"macro {name} needs a variable and an expression")
                expr = ("macro", name, expr, args[0][1], args[1])
            else:
                expr = ("call", name, expr, args)
        return expr

    def args(self) -> list[tuple[Any, ...]]:
        self.take("(")
        found: list[tuple[Any, ...]] = []
        while self.peek() != ")":
            found.append(self.ternary())
            if self.peek() == ",":
                self.take()
        self.take(")")
        return found

    def primary(self) -> tuple[Any, ...]:
        kind, text = self.take()
        if kind == "num":
            return ("int", int(text))
        if kind == "str":
            return ("string", text[1:-1].encode().decode("unicode_escape"))
        if text == "(":
            inner = self.ternary()
            self.take(")")
            return inner
        if kind == "id":
            if text in ("true", "false"):
                return ("bool", text == "true")
            if self.peek() == "(":
                args = self.args()
                if text == "has":
                    if len(args) != 1 or args[0][0] != "select":
                        raise ValueError("has() takes one field selection")
                    return ("has", args[0][1], args[0][2])
                return ("call", text, None, args)
            return ("ident", text)
        raise ValueError(f"unexpected {text!r}")


def parse(rule: str) -> tuple[Any, ...]:
    return _Parser(rule).parse()


# --- the cost ---------------------------------------------------------------------------------------------------


def _factor(size: int, factor: float) -> int:
    return _clamp(math.ceil(size * factor))


def _size(typ: Decl | int) -> int:
    """A value's largest size: a literal's own length, a declared string/list/map's maximum, 1 for a scalar."""
    if isinstance(typ, int):
        return typ
    return typ.max_elements if typ.kind in ("string", "list", "map", "dyn") else 1


def expression_cost(rule: str, self_type: Decl) -> int:
    """cel-go's estimated maximum cost of `rule` with `self` (and `oldSelf`) of `self_type`."""
    return _cost(parse(rule), {"self": self_type, "oldSelf": self_type})[0]


def _cost(e: tuple[Any, ...], scope: dict[str, Decl]) -> tuple[int, Decl | int]:
    """(cost, type): the type is a Decl, or an int size for a literal string."""
    kind = e[0]
    if kind == "int" or kind == "bool":
        return 0, Decl(kind, 1, 1)
    if kind == "string":
        return 0, len(e[1])
    if kind == "ident":
        if e[1] not in scope:
            raise ValueError(f"unknown identifier {e[1]!r}")
        return 1, scope[e[1]]
    if kind in ("select", "has"):
        cost, typ = _cost(e[1], scope)
        if not isinstance(typ, Decl) or typ.kind not in ("object", "map", "dyn"):
            raise ValueError(f"cannot select {e[2]!r} here")
        if typ.kind == "object":
            sub = typ.fields.get(e[2])
            if sub is None:
                raise ValueError(f"no field {e[2]!r} in the schema")
        else:
            sub = typ.elem or Decl("dyn", MAX_UINT64, 2)
        return _clamp(cost + 1), (Decl("bool", 1, 4) if kind == "has" else sub)
    if kind == "cond":
        c0, _ = _cost(e[1], scope)
        c1, t1 = _cost(e[2], scope)
        c2, t2 = _cost(e[3], scope)
        return _clamp(c0 + max(c1, c2)), (t1 if _size(t1) >= _size(t2) else t2)
    if kind == "op1":
        cost, typ = _cost(e[2], scope)
        return _clamp(cost + 1), typ
    if kind == "op":
        return _binary(e[1], _cost(e[2], scope), _cost(e[3], scope))
    if kind == "index":
        c0, t0 = _cost(e[1], scope)
        c1, _ = _cost(e[2], scope)
        if not isinstance(t0, Decl) or t0.kind not in ("list", "map") or t0.elem is None:
            raise ValueError("index of something that is not a list or map")
        return _clamp(c0 + c1 + 1), t0.elem
    if kind == "call":
        return _call(e[1], e[2], e[3], scope)
    if kind == "macro":
        _, name, target, var, body = e
        c0, range_type = _cost(target, scope)
        if not isinstance(range_type, Decl) or range_type.kind not in ("list", "map"):
            raise ValueError(f"{name}() over something that is not a list or map")
        item = range_type.elem if range_type.kind == "list" else MAP_KEY
        assert item is not None
        body_cost, _ = _cost(body, {**scope, var: item})
        # The expansion: accumulator init (a constant), loop condition `@not_strictly_false(acc)` (call + ident),
        # loop step `acc && body` (ident + body; the `&&` itself is free), result `acc` (ident).
        step = 1 + body_cost
        condition = {"all": 2, "exists": 3}.get(name, 0)
        if name in ("map", "filter"):
            raise ValueError(f"{name}() builds a list, which this estimator does not model")
        total = c0 + 1 + _clamp(range_type.max_elements * (step + condition))
        return _clamp(total), Decl("bool", 1, 4)
    raise ValueError(f"cannot estimate {kind}")


def _binary(op: str, left: tuple[int, Decl | int], right: tuple[int, Decl | int]) -> tuple[int, Decl | int]:
    (c0, t0), (c1, t1) = left, right
    args = _clamp(c0 + c1)
    if op in ("&&", "||"):
        return args, Decl("bool", 1, 4)
    if op in ("==", "!=", "<", "<=", ">", ">="):
        smallest = min(_size(t0), _size(t1))
        return _clamp(args + _factor(smallest, STRING_TRAVERSAL)), Decl("bool", 1, 4)
    if op == "in":
        return _clamp(args + _size(t1)), Decl("bool", 1, 4)
    if op == "+" and (isinstance(t0, int) or t0.kind == "string"):
        total = _clamp(_size(t0) + _size(t1))
        return _clamp(args + _factor(total, STRING_TRAVERSAL)), Decl("string", total, 2)
    return _clamp(args + 1), t0 if isinstance(t0, Decl) else Decl("int", 1, 1)


def _call(name: str, target: Any, args: list[Any], scope: dict[str, Decl]) -> tuple[int, Decl | int]:
    costs = [_cost(a, scope) for a in args]
    arg_sum = sum(c for c, _ in costs)
    target_cost, target_type = _cost(target, scope) if target is not None else (0, Decl("dyn", MAX_UINT64, 2))
    if name == "size":
        return _clamp(target_cost + arg_sum + 1), Decl("int", 1, 1)
    if name == "contains" and target is not None and len(args) == 1:
        own = _factor(_size(target_type), STRING_TRAVERSAL) * _factor(_size(costs[0][1]), STRING_TRAVERSAL)
        return _clamp(target_cost + arg_sum + own), Decl("bool", 1, 4)
    if name == "matches" and target is not None and len(args) == 1:
        own = _factor(_size(target_type) + 1, STRING_TRAVERSAL) * _factor(_size(costs[0][1]), REGEX_LENGTH)
        return _clamp(target_cost + arg_sum + own), Decl("bool", 1, 4)
    if name in ("startsWith", "endsWith") and target is not None and len(args) == 1:
        own = _factor(_size(costs[0][1]), STRING_TRAVERSAL)
        return _clamp(target_cost + arg_sum + own), Decl("bool", 1, 4)
    raise ValueError(f"function {name}() is not modelled by this estimator")


# --- over a whole schema ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleCost:
    path: str
    rule: str
    expression: int  # cel-go's estimate for one evaluation
    cardinality: int  # how many times it can run per object
    total: int  # expression x cardinality: what the API server compares with its limits


def _walk(node: dict[str, Any], path: str, bounds: list[int | None]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    yield path, node, bounds
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}", bounds)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]", [*bounds, node.get("maxItems")])
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}[*]", [*bounds, node.get("maxProperties")])


def rule_costs(schema: dict[str, Any]) -> list[RuleCost]:
    """The estimated cost of every x-kubernetes-validations rule of an openAPIV3Schema."""
    found: list[RuleCost] = []
    for path, node, bounds in _walk(schema, "self", []):
        rules = node.get("x-kubernetes-validations") or ()
        if not rules:
            continue
        typ = decl(node)
        if path == "self":  # the root's metadata: name and generateName, as the API server declares them
            typ.fields["metadata"] = Decl(
                "object", 1, 2, fields={"name": Decl("string", 253 * 4, 2), "generateName": Decl("string", 253 * 4, 2)}
            )
        if any(b is None for b in bounds):
            cardinality = MAX_REQUEST_BYTES // (typ.min_size + 1)
        else:
            cardinality = math.prod(int(b) for b in bounds if b is not None)
        for rule in rules:
            cost = expression_cost(rule["rule"], typ)
            found.append(RuleCost(path, rule["rule"], cost, cardinality, _clamp(cost * cardinality)))
    return found


def unbounded(schema: dict[str, Any]) -> list[str]:
    """Every string without maxLength (or enum), list without maxItems and map without maxProperties."""
    missing: list[str] = []
    for path, node, _ in _walk(schema, "self", []):
        if path == "self.metadata":
            continue  # the API server's own ObjectMeta
        if node.get("type") == "string" or node.get("x-kubernetes-int-or-string"):
            if "maxLength" not in node and not node.get("enum"):
                missing.append(f"{path}: string without maxLength")
        elif node.get("type") == "array" and "maxItems" not in node:
            missing.append(f"{path}: list without maxItems")
        elif isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            missing.append(f"{path}: map without maxProperties")
    return missing
