"""The CRD within the API server's CEL cost budget, every string, list and map in it bounded, and the estimate
(tests/operator/celcost.py) refusing the CRD a real kube-apiserver refused: the same schema without those bounds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator import celcost, crdtools

UNBOUNDED_CRD = Path(__file__).parent / "fixtures" / "claudeproxies-unbounded.yaml"


def _schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _total(schema: dict[str, Any]) -> int:
    return sum(cost.total for cost in celcost.rule_costs(schema))


def test_every_string_list_and_map_of_the_crd_is_bounded() -> None:
    assert celcost.unbounded(crdtools.schema()) == []


def test_every_rule_and_the_whole_crd_are_within_the_api_server_budget() -> None:
    costs = celcost.rule_costs(crdtools.schema())
    assert len(costs) == len(crdtools.all_rules())  # every rule estimated, none skipped
    over = [c for c in costs if c.total > celcost.STATIC_ESTIMATED_COST_LIMIT]
    assert over == []
    assert _total(crdtools.schema()) <= celcost.STATIC_ESTIMATED_CRD_COST_LIMIT
    # Far within it: room for new rules without loosening a bound.
    assert _total(crdtools.schema()) < celcost.STATIC_ESTIMATED_CRD_COST_LIMIT // 1000


def test_the_unbounded_crd_is_refused_as_the_api_server_refused_it() -> None:
    """The CRD before its bounds: a real kube-apiserver answered "estimated rule cost total for entire OpenAPIv3
    schema exceeds budget by factor of more than 100x"; so does the estimate."""
    schema = _schema(UNBOUNDED_CRD)
    assert _total(schema) > 100 * celcost.STATIC_ESTIMATED_CRD_COST_LIMIT
    by_path = {c.path: c for c in celcost.rule_costs(schema)}
    assert by_path["self.spec.model.aliases"].total > 100 * celcost.STATIC_ESTIMATED_COST_LIMIT
    assert "self.spec.model.aliases[*]: string without maxLength" in celcost.unbounded(schema)
    assert "self.spec.model.aliases: map without maxProperties" in celcost.unbounded(schema)


@pytest.mark.parametrize(
    ("path", "bound"),
    [
        (("spec", "model", "aliases"), "maxProperties"),
        (("spec", "model", "aliases", "additionalProperties"), "maxLength"),
        (("spec", "upstream", "baseURL"), "maxLength"),
        (("spec", "networkPolicy", "allowFrom"), "maxItems"),
    ],
)
def test_dropping_one_bound_a_rule_depends_on_is_caught(path: tuple[str, ...], bound: str) -> None:
    schema = copy.deepcopy(crdtools.schema())
    node = schema
    for key in path:
        node = node[key] if key == "additionalProperties" else node["properties"][key]
    del node[bound]
    assert celcost.unbounded(schema) != []
    assert _total(schema) > _total(crdtools.schema())


def test_estimates_worked_by_hand() -> None:
    url = celcost.decl({"type": "string", "maxLength": 2048})  # 8192 bytes at most
    # self (1) + ceil(0.1 x 8193) x ceil(0.25 x 15 regex characters) = 1 + 820 x 4
    assert celcost.expression_cost("self.matches('^https?://[^/]+')", url) == 3281
    names = celcost.decl({"type": "object", "maxProperties": 10, "additionalProperties": {"type": "string"}})
    # self (1) + result (1) + 10 x (loop condition 2 + step 1 + body): the body `self[k].contains(',')` is
    # index (1 + self 1 + k 1) + ceil(0.1 x (3 MiB - 2)) x ceil(0.1 x 1)
    body = 3 + 314573
    assert celcost.expression_cost("self.all(k, self[k].contains(','))", names) == 2 + 10 * (3 + body)
    one_of = celcost.decl({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}})
    # has() is 1 plus its operand (1); `? :`, `+` on ints 1 each, `==` on ints ceil(0.1 x 1) = 1
    assert celcost.expression_cost("(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) == 1", one_of) == 2 + 2 + 1 + 1
    item: dict[str, Any] = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "x-kubernetes-validations": [{"rule": "has(self.a)"}],
    }
    cost = celcost.rule_costs({"type": "object", "properties": {"l": {"type": "array", "items": item}}})
    # under an unbounded list, the rule runs up to 3 MiB / (smallest item `{}` + 1) times
    assert [(c.expression, c.cardinality) for c in cost] == [(2, 3 * 1024 * 1024 // 3)]


def test_what_the_estimator_does_not_model_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError):
        celcost.expression_cost("self.url().getHost() == 'x'", celcost.decl({"type": "string", "maxLength": 9}))
    with pytest.raises(ValueError):
        celcost.expression_cost("self.nope == 1", celcost.decl({"type": "object", "properties": {}}))
