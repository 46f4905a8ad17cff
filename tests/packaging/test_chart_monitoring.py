"""The Helm chart's ServiceMonitor of the proxies (the operator's own is in test_chart_alerts.py): off by default,
scraping every proxy Service the operator builds, following the watched namespaces and the timing values."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

from claude_proxy_operator import builders
from claude_proxy_operator.spec import parse_spec
from tests.packaging.chart_support import K8S, instance
from tests.packaging.helm import NAMESPACE, of_kind, template

# The fields of monitoring.coreos.com/v1 ServiceMonitor this chart sets (a subset of what its CRD defines).
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "targetLabels"}
SERVICE_MONITOR_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels"}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _service_monitor(values: dict[str, str]) -> dict[str, Any]:
    [monitor] = [m for m in of_kind(template(values), "ServiceMonitor") if m["metadata"]["name"].endswith("-proxies")]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    # Its metadata, and its selector's labels, as the API server would check them (on a kind it knows).
    for labels in (monitor["metadata"].get("labels") or {}, monitor["spec"]["selector"]["matchLabels"]):
        holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {**monitor["metadata"], "labels": labels}}
        kubernetes_validate.validate(holder, K8S, strict=True)
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT
        assert DURATION.match(endpoint["interval"]), endpoint
        assert DURATION.match(endpoint.get("scrapeTimeout", "10s")), endpoint
    return monitor


def test_service_monitor_is_off_by_default() -> None:
    for values in ({}, instance("apiKey")):
        assert of_kind(template(values), "ServiceMonitor") == []


def test_service_monitor_scrapes_every_proxy_service_the_operator_builds() -> None:
    monitor = _service_monitor({"serviceMonitor.enabled": "true", "serviceMonitor.labels.release": "kps"})
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # It picks the Service of any ClaudeProxy, on the port that serves /metrics.
    spec = parse_spec({"auth": {"apiKey": {"secretRef": {"name": "k"}}}}, default_image="img")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    for name in ("p", "another"):
        svc = builders.service(name, "rockbot", spec)
        assert wanted.items() <= svc["metadata"]["labels"].items()
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {port["name"] for port in svc["spec"]["ports"]}
    deployment = builders.deployment("p", "rockbot", spec, "0")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert endpoint["path"] == builders.METRICS_PATH
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [builders.PROXY_PORT]
    assert endpoint["interval"] == "30s" and "scrapeTimeout" not in endpoint
    assert monitor["spec"]["targetLabels"] == [builders.INSTANCE_LABEL]


def test_service_monitor_follows_watched_namespaces_and_timing_values() -> None:
    monitor = _service_monitor(
        {
            "serviceMonitor.enabled": "true",
            "operator.watchNamespaces": "{rockbot,team}",
            "serviceMonitor.interval": "1m",
            "serviceMonitor.scrapeTimeout": "15s",
        }
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["rockbot", "team"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "15s")
