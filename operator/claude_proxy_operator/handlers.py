"""The kopf wiring: which events start a reconcile pass. Thin on purpose; the work is in `reconcile`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from claude_proxy_operator import builders
from claude_proxy_operator.config import Config
from claude_proxy_operator.kube import Kube
from claude_proxy_operator.reconcile import Reconciler
from claude_proxy_operator.spec import GROUP, PLURAL, VERSION

CHILD_LABELS: dict[str, Any] = {builders.MANAGED_BY_LABEL: builders.MANAGER, builders.INSTANCE_LABEL: kopf.PRESENT}


def configure(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping in annotations (status belongs to the resource) and ask only for RBAC it needs."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events carry outcomes and warnings, not every log line
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching: the resources are fixed
    settings.peering.standalone = True  # one replica (Recreate): no peering objects needed


def build_registry(config: Config, *, login: Callable[..., Any] | None = None) -> kopf.OperatorRegistry:
    """The operator's handlers; `login` replaces kopf's usual logins (service account, kubeconfig), e.g. in tests."""
    registry = kopf.OperatorRegistry()
    logins = [login] if login is not None else [kopf.login_with_service_account, kopf.login_with_kubeconfig]
    for fn in logins:
        kopf.on.login(registry=registry, errors=kopf.ErrorsMode.IGNORED)(fn)
    reconciler = Reconciler(Kube(), config)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        configure(settings)
        logger.info(f"Managing {PLURAL}.{GROUP}/{VERSION}; proxy image {config.default_image}")

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def converge(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        await reconciler.run(str(namespace), name, logger)

    # The resync loop: notices what no watched event announces (a Secret's new content, an expiry passing). A pass
    # is safe to interrupt (the next one converges), so stopping never waits long for one.
    @kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=1.0, registry=registry)
    async def resync(
        name: str, namespace: str | None, logger: kopf.Logger, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        while not stopped:
            await stopped.wait(config.resync_seconds)
            if stopped:
                break
            try:
                await reconciler.run(str(namespace), name, logger)
            except kopf.PermanentError as exc:
                logger.debug(f"Resync: {exc}")  # already in the status and an Event
            except Exception as exc:
                logger.warning(f"Resync failed, retrying in {config.resync_seconds:g}s: {exc}")

    @kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS, registry=registry)
    @kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, registry=registry)
    async def child_changed(labels: Mapping[str, str], namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        await reconciler.run(str(namespace), labels[builders.INSTANCE_LABEL], logger)

    return registry
