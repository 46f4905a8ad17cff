"""The chart's alerts, dashboard and operator metrics objects: off by default; the PrometheusRule checked and unit
tested with promtool (one case per alert, tests/fixtures/alerts/tests.yaml), each alert linking to its runbook
section; the Grafana dashboard's every query on metrics the proxy or the operator really export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from claude_proxy.credentials.resolver import Credential, CredentialKind
from claude_proxy.server.metrics import Metrics
from claude_proxy_operator.config import Config
from claude_proxy_operator.metrics import OperatorMetrics
from tests.fakes.anthropic import ratelimit_headers
from tests.packaging.chart_support import K8S, operator_container
from tests.packaging.helm import NAMESPACE, failure, of_kind, one, template
from tests.paths import FIXTURES, ROOT

RUNBOOKS = "https://runbooks.example/runbooks.md"
RULES = {"prometheusRule.enabled": "true", "prometheusRule.runbookBaseURL": RUNBOOKS}
ALERTS = {
    "ClaudeProxyLoginRefused",
    "ClaudeProxyRefreshFailing",
    "ClaudeProxyRefreshStale",
    "ClaudeProxyTokenExpiringSoon",
    "ClaudeProxySubscriptionWindowHigh",
    "ClaudeProxyHighErrorRate",
    "ClaudeProxyOperatorReconcileErrors",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "by", "on", "or", "and", "unless", "rate", "increase", "histogram_quantile", "time",
    "le", "without", "ignoring", "bool",
}  # fmt: skip


def promtool() -> str:
    """promtool from $PROMTOOL, PATH or .tools/bin (Debian: `apt-get install prometheus`); the tests that need it
    are skipped, saying so, without it."""
    for candidate in (os.environ.get("PROMTOOL"), shutil.which("promtool"), str(ROOT / ".tools" / "bin" / "promtool")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("promtool not found (set PROMTOOL, or install Debian's prometheus package): rules not checked")


@cache
def exported() -> frozenset[str]:
    """Every series name the proxy and the operator export, their state gauges included (a credential with an
    expiry, rate-limit headers of both kinds, an OAuth ClaudeProxy observed)."""
    metrics = Metrics()
    metrics.credential = lambda: Credential(CredentialKind.OAUTH_FILE, "t", "file", expires_at=2e9)
    metrics.ratelimits(ratelimit_headers(unified=True))
    text = metrics.render().decode()
    metrics.ratelimits(ratelimit_headers(unified=False))
    text += metrics.render().decode()
    operator = OperatorMetrics()
    status = {
        "authMode": "oauth",
        "tokenExpiresAt": "2030-01-01T00:00:00Z",
        "lastRefresh": {"time": "2029-12-31T23:00:00Z", "result": "refreshed"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    operator.observe({"metadata": {"namespace": "n", "name": "p"}, "spec": {}}, status)
    from prometheus_client import generate_latest

    text += generate_latest(operator.registry).decode()
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            names |= {name}
            if kind == "counter":
                names |= {f"{name}_total"}
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, strings and durations taken out)."""
    bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|by \([^)]*\)|on\([^)]*\)|by\([^)]*\)', " ", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w not in PROMQL_WORDS}


def rendered_rules() -> dict[str, Any]:
    return one(template(RULES), "PrometheusRule")


def write_rules(directory: Path, groups: list[dict[str, Any]]) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def test_alerts_dashboard_and_operator_metrics_objects_are_off_by_default() -> None:
    objects = template()
    assert of_kind(objects, "PrometheusRule") == [] and of_kind(objects, "ServiceMonitor") == []
    assert [o for o in of_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"].get("labels", {})] == []
    assert [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")] == []


def test_the_rules_need_where_the_runbooks_are() -> None:
    assert "runbookBaseURL" in failure({"prometheusRule.enabled": "true"})


def test_every_alert_has_a_severity_a_summary_and_its_runbook_section() -> None:
    rule = rendered_rules()
    assert rule["metadata"]["namespace"] == NAMESPACE
    [group] = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == ALERTS
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbooks, re.M)
    }
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"]
        url = alert["annotations"]["runbook_url"]
        assert url == f"{RUNBOOKS}#{name.lower()}"
        assert name.lower() in headings, f"docs/runbooks.md has no section {name}"
        assert metric_names(alert["expr"]) <= exported(), name


def test_the_rules_pass_promtool_check_and_a_unit_test_per_alert(tmp_path: Path) -> None:
    tool = promtool()
    write_rules(tmp_path, rendered_rules()["spec"]["groups"])
    checked = subprocess.run([tool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cases = yaml.safe_load((FIXTURES / "alerts" / "tests.yaml").read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == ALERTS  # each alert is seen firing by some case
    shutil.copy(FIXTURES / "alerts" / "tests.yaml", tmp_path / "tests.yaml")
    result = subprocess.run([tool, "test", "rules", str(tmp_path / "tests.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_thresholds_and_extra_labels_follow_the_values() -> None:
    rule = one(
        template(
            {
                **RULES,
                "prometheusRule.tokenExpiryMinutes": "60",
                "prometheusRule.additionalLabels.team": "platform",
                "prometheusRule.labels.release": "kps",
            },
            extra=(  # --set reads decimals as strings
                "--set-json",
                "prometheusRule.errorRatio=0.2",
                "--set-json",
                "prometheusRule.subscriptionUtilization=0.75",
            ),
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert all(a["labels"]["team"] == "platform" for a in alerts.values())
    assert alerts["ClaudeProxyHighErrorRate"]["expr"].endswith("> 0.2")
    assert "< 3600" in alerts["ClaudeProxyTokenExpiringSoon"]["expr"]
    assert alerts["ClaudeProxySubscriptionWindowHigh"]["expr"].endswith("> 0.75")


def _dashboard(values: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    [config_map] = [
        o
        for o in of_kind(template({"grafanaDashboard.enabled": "true", **(values or {})}), "ConfigMap")
        if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    kubernetes_validate.validate(config_map, K8S, strict=True)
    [document] = config_map["data"].values()
    return config_map, json.loads(document)


def _queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]


def test_the_dashboard_is_a_config_map_the_grafana_sidecar_loads() -> None:
    config_map, dashboard = _dashboard({"grafanaDashboard.folder": "AI", "grafanaDashboard.namespace": "monitoring"})
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "AI"}
    assert dashboard["uid"] == "claude-code-proxy"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in (
        "requests",
        "duration",
        "time to first token",
        "time per output token",
        "tokens",
        "cache hit",
        "errors",
        "login",
        "subscription windows",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_dashboard_query_reads_exported_metrics_and_parses(tmp_path: Path) -> None:
    _, dashboard = _dashboard()
    queries = _queries(dashboard)
    assert len(queries) >= 20
    for expr in queries:
        missing = metric_names(expr) - exported()
        assert not missing, f"{expr}: no such metric {missing}"
    tool = promtool()
    # The queries as recording rules, Grafana's variables filled in: promtool parses each.
    rules = [
        {"record": f"dashboard:query{i}", "expr": q.replace("$__rate_interval", "5m").replace("$namespace", ".*")}
        for i, q in enumerate(queries)
    ]
    path = write_rules(tmp_path, [{"name": "dashboard", "rules": rules}])
    checked = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_operator_serves_its_metrics_behind_a_service_and_a_service_monitor() -> None:
    objects = template({"serviceMonitor.enabled": "true", "operator.metricsPort": "9100"})
    container = operator_container(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Config.from_env({k: v for k, v in env.items() if v is not None}).metrics_port == 9100
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    [service] = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")]
    kubernetes_validate.validate(service, K8S, strict=True)
    deployment = one(objects, "Deployment")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    [monitor] = [m for m in of_kind(objects, "ServiceMonitor") if not m["metadata"]["name"].endswith("-proxies")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # the series' namespace is the ClaudeProxy's
