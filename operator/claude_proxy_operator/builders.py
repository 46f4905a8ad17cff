"""Pure builders: a ClaudeProxy's spec in, the plain dict of each child object out.

No I/O, no clock, no globals: the same input always gives the same dict, which is what makes reconciling idempotent
(an unchanged dict is never written) and what the tests validate against the Kubernetes schemas.
"""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

from claude_proxy_operator.spec import Manifest, ProxySpec, SecretRef

APP = "claude-proxy"
MANAGER = "claude-proxy-operator"
PROXY_PORT = 8080
UID = 10001
CREDENTIALS_DIR = "/var/lib/claude-proxy"
CREDENTIALS_PATH = f"{CREDENTIALS_DIR}/.credentials.json"
SEED_DIR = "/etc/claude-proxy/seed"
SEED_FILE = ".credentials.json"
TMP_DIR = "/tmp"

INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
VOLUME_LABEL = "claudeproxy.dev/credentials-volume"
CHECKSUM_ANNOTATION = "claudeproxy.dev/config-checksum"
SEED_DIGEST_ANNOTATION = "claudeproxy.dev/seed-digest"
# Set on a ClaudeProxy to any new value: the operator runs one forced refresh for that value.
REFRESH_NOW_ANNOTATION = "claudeproxy.dev/refresh-now"
METRICS_PATH = "/metrics"
# The conventional pod annotations Prometheus' kubernetes-pods scrape job (and many agents) discover targets by.
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PROXY_PORT),
    "prometheus.io/path": METRICS_PATH,
}

SEED_BACKOFF_LIMIT = 3
SEED_DEADLINE_SECONDS = 300
REFRESH_BACKOFF_LIMIT = 2
REFRESH_DEADLINE_SECONDS = 240
REFRESH_STARTING_DEADLINE_SECONDS = 600
JOB_TTL_SECONDS = 86400
JOB_HISTORY = 3


# --- names -----------------------------------------------------------------------------------------------------------


def pvc_name(name: str) -> str:
    return f"{name}-credentials"


def seed_job_name(name: str, digest: str) -> str:
    return f"{name}-seed-{digest[:10]}"


def cronjob_name(name: str) -> str:
    return f"{name}-refresh"


def refresh_now_job_name(name: str, digest: str) -> str:
    return f"{name}-refresh-now-{digest[:10]}"


def endpoint(name: str, namespace: str, port: int, cluster_domain: str = "cluster.local") -> str:
    """The base URL an OpenAI client puts in its configuration (RockBot's `endpoint`)."""
    host = f"{name}.{namespace}.svc.{cluster_domain}"
    return f"http://{host}/v1" if port == 80 else f"http://{host}:{port}/v1"


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        INSTANCE_LABEL: name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGER,
    }


def instance_selector(name: str) -> dict[str, str]:
    """The labels every pod of one instance carries: proxy, seed and refresh."""
    return {"app.kubernetes.io/name": APP, INSTANCE_LABEL: name}


def selector(name: str, component: str) -> dict[str, str]:
    """The labels that pick a component's pods; stable forever, since a Deployment's selector is immutable."""
    return {"app.kubernetes.io/name": APP, INSTANCE_LABEL: name, COMPONENT_LABEL: component}


def _meta(
    name: str, namespace: str, instance: str, component: str, annotations: dict[str, str] | None = None
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": namespace, "labels": labels(instance, component)}
    if annotations:
        meta["annotations"] = annotations
    return meta


# --- pod parts -------------------------------------------------------------------------------------------------------


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _mounts_volume(spec: ProxySpec) -> bool:
    return spec.oauth is not None


def _affinity(name: str, spec: ProxySpec) -> Manifest | None:
    """The user's affinity, plus (ReadWriteOnce volume) a required term that puts every pod mounting it on one node."""
    affinity = copy.deepcopy(dict(spec.affinity))
    if spec.oauth is not None and spec.oauth.storage.single_node:
        pod_affinity = affinity.setdefault("podAffinity", {})
        terms = pod_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", [])
        terms.append(
            {
                "labelSelector": {"matchLabels": {VOLUME_LABEL: pvc_name(name)}},
                "topologyKey": "kubernetes.io/hostname",
            }
        )
    return affinity or None


def _pod_labels(name: str, spec: ProxySpec, component: str) -> dict[str, str]:
    pod_labels = labels(name, component)
    if _mounts_volume(spec):
        pod_labels[VOLUME_LABEL] = pvc_name(name)
    return pod_labels


def _pod_spec(
    name: str, spec: ProxySpec, containers: list[Manifest], volumes: list[Manifest], restart: str
) -> Manifest:
    pod: Manifest = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": restart,
        "securityContext": _pod_security(),
        "containers": containers,
        "volumes": volumes,
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in spec.image_pull_secrets]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    affinity = _affinity(name, spec)
    if affinity:
        pod["affinity"] = affinity
    return pod


def _tmp_volume() -> Manifest:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}


def _credentials_volume(name: str) -> Manifest:
    return {"name": "credentials", "persistentVolumeClaim": {"claimName": pvc_name(name)}}


def _secret_env(var: str, ref: SecretRef) -> Manifest:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _job_container(spec: ProxySpec, args: list[str], mounts: list[Manifest], env: list[Manifest]) -> Manifest:
    return {
        "name": "claude-proxy",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["claude-proxy"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": _container_security(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


# --- children --------------------------------------------------------------------------------------------------------


def service_account(name: str, namespace: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(name, namespace, name, "proxy"),
        "automountServiceAccountToken": False,
    }


def credentials_pvc(name: str, namespace: str, spec: ProxySpec) -> Manifest:
    """The writable volume that holds the login; the seed Job writes it once, the refresh CronJob keeps it fresh."""
    assert spec.oauth is not None
    storage = spec.oauth.storage
    claim: Manifest = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
        "volumeMode": "Filesystem",
    }
    if storage.storage_class is not None:
        claim["storageClassName"] = storage.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(pvc_name(name), namespace, name, "credentials"),
        "spec": claim,
    }


def seed_job(name: str, namespace: str, spec: ProxySpec, digest: str) -> Manifest:
    """`claude-proxy seed`: copy the Secret's credentials into the volume unless the volume holds newer ones."""
    assert spec.oauth is not None
    seed = spec.oauth.seed
    container = _job_container(
        spec,
        ["seed", "--from", f"{SEED_DIR}/{SEED_FILE}", "--to", CREDENTIALS_PATH],
        [
            {"name": "credentials", "mountPath": CREDENTIALS_DIR},
            {"name": "seed", "mountPath": SEED_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_DIR},
        ],
        [{"name": "LOG_LEVEL", "value": spec.log_level}],
    )
    volumes = [
        _credentials_volume(name),
        {
            "name": "seed",
            "secret": {"secretName": seed.name, "items": [{"key": seed.key, "path": SEED_FILE}], "defaultMode": 0o440},
        },
        _tmp_volume(),
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(seed_job_name(name, digest), namespace, name, "seed", {SEED_DIGEST_ANNOTATION: digest}),
        "spec": {
            "backoffLimit": SEED_BACKOFF_LIMIT,
            "activeDeadlineSeconds": SEED_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": _pod_labels(name, spec, "seed")},
                "spec": _pod_spec(name, spec, [container], volumes, "Never"),
            },
        },
    }


def refresh_cronjob(name: str, namespace: str, spec: ProxySpec) -> Manifest:
    """`claude-proxy refresh` on a schedule: the only refresher, never two at once (refresh tokens rotate)."""
    assert spec.oauth is not None
    oauth = spec.oauth
    args = ["refresh", "--credentials", CREDENTIALS_PATH, "--before", str(oauth.refresh.before_minutes)]
    if oauth.token_url:
        args += ["--token-url", oauth.token_url]
    container = _job_container(
        spec,
        args,
        [{"name": "credentials", "mountPath": CREDENTIALS_DIR}, {"name": "tmp", "mountPath": TMP_DIR}],
        [{"name": "LOG_LEVEL", "value": spec.log_level}],
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(cronjob_name(name), namespace, name, "refresh"),
        "spec": {
            "schedule": oauth.refresh.schedule,
            "timeZone": "Etc/UTC",
            "suspend": oauth.refresh.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": REFRESH_STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": JOB_HISTORY,
            "failedJobsHistoryLimit": JOB_HISTORY,
            "jobTemplate": {
                "metadata": {"labels": labels(name, "refresh")},
                "spec": {
                    "backoffLimit": REFRESH_BACKOFF_LIMIT,
                    "activeDeadlineSeconds": REFRESH_DEADLINE_SECONDS,
                    "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
                    "template": {
                        "metadata": {"labels": _pod_labels(name, spec, "refresh")},
                        "spec": _pod_spec(name, spec, [container], [_credentials_volume(name), _tmp_volume()], "Never"),
                    },
                },
            },
        },
    }


def refresh_now_job(name: str, namespace: str, spec: ProxySpec, digest: str) -> Manifest:
    """One run of the refresh CronJob's template with `--force`: a refresh now, whether or not the token is due.
    `digest` names the `refresh-now` request it answers; the pods carry the refresh labels, so the outcome is read
    into status like a scheduled run's."""
    template = copy.deepcopy(refresh_cronjob(name, namespace, spec)["spec"]["jobTemplate"])
    container = template["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"], "--force"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(
            refresh_now_job_name(name, digest), namespace, name, "refresh", {REFRESH_NOW_ANNOTATION: digest}
        ),
        "spec": template["spec"],
    }


def proxy_env(spec: ProxySpec) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(PROXY_PORT)},
        {"name": "LOG_LEVEL", "value": spec.log_level},
    ]
    if spec.api_key is not None:
        env.append(_secret_env("ANTHROPIC_API_KEY", spec.api_key))
    if spec.access_token is not None:
        env.append(_secret_env("CLAUDE_ACCESS_TOKEN", spec.access_token))
    if spec.oauth is not None:
        env.append({"name": "CLAUDE_CREDENTIALS_PATH", "value": CREDENTIALS_PATH})
    if spec.client_keys is not None:
        env.append(_secret_env("PROXY_API_KEYS", spec.client_keys))
    if spec.base_url:
        env.append({"name": "ANTHROPIC_BASE_URL", "value": spec.base_url})
    if spec.default_model:
        env.append({"name": "PROXY_DEFAULT_MODEL", "value": spec.default_model})
    if spec.model_aliases:
        pairs = ",".join(f"{alias}={target}" for alias, target in sorted(spec.model_aliases.items()))
        env.append({"name": "PROXY_MODEL_ALIASES", "value": pairs})
    if spec.default_max_tokens:
        env.append({"name": "PROXY_DEFAULT_MAX_TOKENS", "value": str(spec.default_max_tokens)})
    return env


def deployment(name: str, namespace: str, spec: ProxySpec, checksum: str, seed_digest: str | None = None) -> Manifest:
    """The proxy pods. `checksum` digests the content of the Secrets they read and `seed_digest` names the seed the
    volume holds (oauth), so a change of either rolls them out."""
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": TMP_DIR}]
    volumes: list[Manifest] = [_tmp_volume()]
    if spec.oauth is not None:
        mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR})
        volumes.append(_credentials_volume(name))
    container: Manifest = {
        "name": "proxy",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["claude-proxy"],
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
        "env": proxy_env(spec),
        "volumeMounts": mounts,
        "resources": copy.deepcopy(dict(spec.resources)),
        "securityContext": _container_security(),
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }
    pod = _pod_spec(name, spec, [container], volumes, "Always")
    pod["terminationGracePeriodSeconds"] = 30
    annotations = {**SCRAPE_ANNOTATIONS, CHECKSUM_ANNOTATION: checksum}
    if seed_digest is not None:
        annotations[SEED_DIGEST_ANNOTATION] = seed_digest
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, name, "proxy"),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(name, "proxy")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _pod_labels(name, spec, "proxy"),
                    "annotations": annotations,
                },
                "spec": pod,
            },
        },
    }


def service(name: str, namespace: str, spec: ProxySpec) -> Manifest:
    """The proxies' Service. With more than one replica, a client's connections stay on one pod (ClientIP
    affinity, for the hour the proxy keeps Responses output items): each pod keeps only the items it answered, so
    the `item_reference` inputs of a client with `store` on resolve only on the pod that answered it."""
    service_spec: Manifest = {
        "type": spec.service_type,
        "selector": selector(name, "proxy"),
        "ports": [{"name": "http", "port": spec.service_port, "targetPort": "http", "protocol": "TCP"}],
    }
    if spec.replicas > 1:
        service_spec["sessionAffinity"] = "ClientIP"
        service_spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": AFFINITY_SECONDS}}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, name, "proxy"),
        "spec": service_spec,
    }


AFFINITY_SECONDS = 3600  # PROXY_RESPONSES_STORE_TTL's default: how long a pod keeps the items it answered


OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "claude-proxy-operator"}


DNS_PORT = 53
HTTPS_PORT = 443


def _url_port(url: str | None) -> int | None:
    if not url:
        return None
    parsed = urlsplit(url)
    try:
        explicit = parsed.port
    except ValueError:
        return None
    return explicit or (HTTPS_PORT if parsed.scheme == "https" else 80)


def egress_ports(spec: ProxySpec) -> list[int]:
    """The TCP ports the instance's pods call out to: HTTPS (Anthropic and its OAuth endpoint), and the ports of an
    `upstream.baseURL` or `tokenURL` override (a gateway, a test double)."""
    ports = {HTTPS_PORT}
    for url in (spec.base_url, spec.oauth.token_url if spec.oauth else None):
        port = _url_port(url)
        if port is not None:
            ports.add(port)
    return sorted(ports)


def network_policy(name: str, namespace: str, spec: ProxySpec, operator_namespace: str = "") -> Manifest:
    """Every pod of the instance (proxy, seed, refresh: the seed and refresh pods hold the refresh token): ingress to
    the proxy port only from the listed peers (by default: pods of the same namespace) and from the operator's pods
    (in `operator_namespace`, when known), which read each proxy's /readyz for `LoginValid`; egress only to DNS and
    HTTPS (and the ports of an upstream or token URL override)."""
    peers = [copy.deepcopy(dict(peer)) for peer in spec.allow_from] or [{"podSelector": {}}]
    if operator_namespace:
        peers.append(
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
                "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, namespace, name, "proxy"),
        "spec": {
            "podSelector": {"matchLabels": instance_selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers, "ports": [{"port": PROXY_PORT, "protocol": "TCP"}]}],
            "egress": [
                {"ports": [{"port": DNS_PORT, "protocol": "UDP"}, {"port": DNS_PORT, "protocol": "TCP"}]},
                {"ports": [{"port": port, "protocol": "TCP"} for port in egress_ports(spec)]},
            ],
        },
    }


def pod_disruption_budget(name: str, namespace: str) -> Manifest:
    """With more than one replica, a voluntary disruption (a node drain) takes at most one proxy pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, name, "proxy"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name, "proxy")}},
    }
