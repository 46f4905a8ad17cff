"""The operator's own settings, read once from its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_IMAGE = "claude-code-proxy:0.1.0"


@dataclass(frozen=True)
class Config:
    default_image: str = DEFAULT_IMAGE  # CLAUDE_PROXY_IMAGE: the proxy image released with this operator
    cluster_domain: str = "cluster.local"  # CLUSTER_DOMAIN: for the endpoint in status
    resync_seconds: float = 60.0  # CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS: how soon a changed Secret is noticed
    # CLAUDE_PROXY_OPERATOR_LOGIN_URL: where each pass reads the proxy's /readyz (LoginValid); {name}, {namespace},
    # {domain} and {port} are filled in
    login_url: str = "http://{name}.{namespace}.svc.{domain}:{port}/readyz"
    login_timeout: float = 3.0
    # CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS: how often the login watch reads each available proxy's /readyz between
    # passes, running a pass only when the verdict differs from LoginValid (0: no watch, only the passes read it)
    login_seconds: float = 20.0
    # CLAUDE_PROXY_OPERATOR_METRICS_PORT: where the operator serves its Prometheus /metrics (0: not served)
    metrics_port: int = 8082
    # POD_NAMESPACE (the downward API): the operator's namespace, admitted by each proxy's NetworkPolicy
    namespace: str = ""
    # After a refresh the operator ran for a refused login failed, how long it waits before the next attempt (the
    # last wait repeats), as cert-manager backs off failed issuances.
    heal_backoff: tuple[float, ...] = (300.0, 900.0, 3600.0, 10800.0, 21600.0)
    # CLAUDE_PROXY_ALLOWED_IMAGES: the images a ClaudeProxy may run (`spec.image`), the cluster admin's choice:
    # comma-separated repositories (`registry.example/team/claude-code-proxy`, any tag or digest of it) or prefixes
    # ending in `*`. Empty: only the repository of `default_image`.
    allowed_images: tuple[str, ...] = ()

    def image_allowed(self, image: str) -> bool:
        repository = image_repository(image)
        allowed = self.allowed_images or (image_repository(self.default_image),)
        return any(
            repository.startswith(entry[:-1]) if entry.endswith("*") else repository == entry for entry in allowed
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        resync = float(env.get("CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS") or cls.resync_seconds)
        if resync <= 0:
            raise ValueError("CLAUDE_PROXY_OPERATOR_RESYNC_SECONDS must be > 0")
        login = float(env.get("CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS") or cls.login_seconds)
        if login < 0:
            raise ValueError("CLAUDE_PROXY_OPERATOR_LOGIN_SECONDS must be >= 0 (0: no login watch)")
        port = int(env.get("CLAUDE_PROXY_OPERATOR_METRICS_PORT") or cls.metrics_port)
        if not 0 <= port <= 65535:
            raise ValueError("CLAUDE_PROXY_OPERATOR_METRICS_PORT must be a port number (0: not served)")
        return cls(
            metrics_port=port,
            default_image=env.get("CLAUDE_PROXY_IMAGE") or DEFAULT_IMAGE,
            cluster_domain=env.get("CLUSTER_DOMAIN") or "cluster.local",
            resync_seconds=resync,
            login_seconds=login,
            login_url=env.get("CLAUDE_PROXY_OPERATOR_LOGIN_URL") or cls.login_url,
            namespace=env.get("POD_NAMESPACE") or "",
            allowed_images=tuple(
                entry.strip() for entry in (env.get("CLAUDE_PROXY_ALLOWED_IMAGES") or "").split(",") if entry.strip()
            ),
        )


def image_repository(image: str) -> str:
    """`registry:5000/team/proxy:1.2@sha256:…` -> `registry:5000/team/proxy`: the image without tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
