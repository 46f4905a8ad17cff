"""A typed, defaulted view of a ClaudeProxy's spec.

The API server applies the CRD's defaults and CEL rules before the operator sees an object; this module applies the
same defaults and re-checks the same rules, so the builders work on a complete value whatever fed them (an API server,
a test, an emulator). `tests/operator/test_crd.py` proves these defaults equal the CRD's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

GROUP = "claudeproxy.dev"
VERSION = "v1alpha1"
PLURAL = "claudeproxies"
KIND = "ClaudeProxy"

Manifest = dict[str, Any]  # a Kubernetes object as the API server reads and writes it

AuthMode = Literal["apiKey", "accessToken", "oauth"]

DEFAULT_RESOURCES: dict[str, Any] = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
MAX_NAME_LENGTH = 40
_URL = re.compile(r"^https?://[^/]+")


class SpecError(ValueError):
    """The spec breaks a rule of the CRD (the API server would have refused it)."""


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Storage:
    size: str = "64Mi"
    storage_class: str | None = None
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)
    retain_on_delete: bool = True

    @property
    def single_node(self) -> bool:
        """ReadWriteOnce: every pod that mounts the volume must run on the node it is attached to."""
        return "ReadWriteMany" not in self.access_modes


@dataclass(frozen=True)
class Refresh:
    schedule: str = "*/30 * * * *"
    before_minutes: int = 60
    suspend: bool = False


@dataclass(frozen=True)
class OAuth:
    seed: SecretRef
    storage: Storage = field(default_factory=Storage)
    refresh: Refresh = field(default_factory=Refresh)
    token_url: str | None = None


@dataclass(frozen=True)
class ProxySpec:
    image: str
    auth_mode: AuthMode
    api_key: SecretRef | None = None
    access_token: SecretRef | None = None
    oauth: OAuth | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    replicas: int = 1
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    default_model: str | None = None
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    default_max_tokens: int | None = None
    base_url: str | None = None
    client_keys: SecretRef | None = None
    service_type: str = "ClusterIP"
    service_port: int = 80
    network_policy: bool = True
    allow_from: tuple[Mapping[str, Any], ...] = ()

    def secret_refs(self) -> tuple[SecretRef, ...]:
        """Every Secret the proxy pods read, in a stable order (their content feeds the rollout checksum)."""
        refs = [self.api_key, self.access_token, self.client_keys]
        return tuple(ref for ref in refs if ref is not None)


def _secret_ref(raw: Any, where: str, default_key: str) -> SecretRef:
    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise SpecError(f"{where}.name is required")
    return SecretRef(name=str(raw["name"]), key=str(raw.get("key") or default_key))


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be an object")
    return raw


def _oauth(raw: Mapping[str, Any]) -> OAuth:
    storage_raw = _mapping(raw.get("storage"), "auth.oauth.storage")
    refresh_raw = _mapping(raw.get("refresh"), "auth.oauth.refresh")
    modes = tuple(storage_raw.get("accessModes") or Storage.access_modes)
    if len(modes) != 1 or modes[0] not in ("ReadWriteOnce", "ReadWriteMany"):
        raise SpecError("auth.oauth.storage.accessModes takes one of ReadWriteOnce, ReadWriteMany")
    token_url = raw.get("tokenURL")
    if token_url is not None and not _URL.match(str(token_url)):
        raise SpecError("auth.oauth.tokenURL must be an http(s) URL")
    before = int(refresh_raw.get("before", Refresh.before_minutes))
    if not 1 <= before <= 1440:
        raise SpecError("auth.oauth.refresh.before must be between 1 and 1440 minutes")
    return OAuth(
        seed=_secret_ref(raw.get("seedSecretRef"), "auth.oauth.seedSecretRef", ".credentials.json"),
        storage=Storage(
            size=str(storage_raw.get("size", Storage.size)),
            storage_class=storage_raw.get("storageClassName"),
            access_modes=modes,
            retain_on_delete=bool(storage_raw.get("retainOnDelete", Storage.retain_on_delete)),
        ),
        refresh=Refresh(
            schedule=str(refresh_raw.get("schedule", Refresh.schedule)),
            before_minutes=before,
            suspend=bool(refresh_raw.get("suspend", Refresh.suspend)),
        ),
        token_url=str(token_url) if token_url is not None else None,
    )


def check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"metadata.name must be at most {MAX_NAME_LENGTH} characters")


def parse_spec(raw: Mapping[str, Any], *, default_image: str) -> ProxySpec:
    """The spec as the builders need it: defaults applied, the CRD's CEL rules re-checked."""
    auth = _mapping(raw.get("auth"), "auth")
    modes = [mode for mode in ("apiKey", "accessToken", "oauth") if auth.get(mode) is not None]
    if len(modes) != 1:
        raise SpecError("auth takes exactly one of apiKey, accessToken, oauth")
    mode: AuthMode = modes[0]  # type: ignore[assignment]

    model = _mapping(raw.get("model"), "model")
    aliases = {str(k): str(v) for k, v in _mapping(model.get("aliases"), "model.aliases").items()}
    for alias, target in aliases.items():
        if not alias or not target or any(c in alias + target for c in ",="):
            raise SpecError("model aliases and their targets may not contain ',' or '=' or be empty")
    upstream = _mapping(raw.get("upstream"), "upstream")
    base_url = upstream.get("baseURL")
    if base_url is not None and not _URL.match(str(base_url)):
        raise SpecError("upstream.baseURL must be an http(s) URL")
    client_auth = _mapping(raw.get("clientAuth"), "clientAuth")
    service = _mapping(raw.get("service"), "service")
    netpol = _mapping(raw.get("networkPolicy"), "networkPolicy")
    allow_from = tuple(netpol.get("allowFrom") or ())
    if allow_from and not netpol.get("enabled", True):
        raise SpecError("networkPolicy.allowFrom needs networkPolicy.enabled: true")
    replicas = int(raw.get("replicas", 1))
    if not 0 <= replicas <= 20:
        raise SpecError("replicas must be between 0 and 20")
    pull_secrets = raw.get("imagePullSecrets") or ()
    if not isinstance(pull_secrets, (list, tuple)) or not all(
        isinstance(ref, Mapping) and ref.get("name") for ref in pull_secrets
    ):
        raise SpecError("imagePullSecrets is a list of {name: <Secret>}")
    image = raw.get("image") or default_image
    if not image:
        raise SpecError("spec.image is empty and the operator has no default image")

    return ProxySpec(
        image=str(image),
        auth_mode=mode,
        api_key=_secret_ref(auth["apiKey"].get("secretRef"), "auth.apiKey.secretRef", "api-key")
        if mode == "apiKey"
        else None,
        access_token=_secret_ref(auth["accessToken"].get("secretRef"), "auth.accessToken.secretRef", "token")
        if mode == "accessToken"
        else None,
        oauth=_oauth(auth["oauth"]) if mode == "oauth" else None,
        image_pull_policy=str(raw.get("imagePullPolicy", "IfNotPresent")),
        image_pull_secrets=tuple(str(ref["name"]) for ref in pull_secrets),
        replicas=replicas,
        resources=DEFAULT_RESOURCES if raw.get("resources") is None else _mapping(raw["resources"], "resources"),
        node_selector=dict(_mapping(raw.get("nodeSelector"), "nodeSelector")),
        tolerations=tuple(raw.get("tolerations") or ()),
        affinity=dict(_mapping(raw.get("affinity"), "affinity")),
        log_level=str(raw.get("logLevel", "info")),
        default_model=model.get("default"),
        model_aliases=aliases,
        default_max_tokens=model.get("defaultMaxTokens"),
        base_url=str(base_url) if base_url is not None else None,
        client_keys=_secret_ref(client_auth["apiKeysSecretRef"], "clientAuth.apiKeysSecretRef", "keys")
        if client_auth.get("apiKeysSecretRef") is not None
        else None,
        service_type=str(service.get("type", "ClusterIP")),
        service_port=int(service.get("port", 80)),
        network_policy=bool(netpol.get("enabled", True)),
        allow_from=allow_from,
    )
