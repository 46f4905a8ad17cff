"""The kopf wiring: which events start a reconcile pass. Thin on purpose; the work is in `reconcile`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from claude_proxy_operator import bookkeeping, builders
from claude_proxy_operator.config import Config
from claude_proxy_operator.kube import Kube
from claude_proxy_operator.metrics import OperatorMetrics
from claude_proxy_operator.reconcile import Reconciler, available_replicas
from claude_proxy_operator.spec import GROUP, PLURAL, VERSION

CHILD_LABELS: dict[str, Any] = {builders.MANAGED_BY_LABEL: builders.MANAGER, builders.INSTANCE_LABEL: kopf.PRESENT}
# The children the operator watches, filtered by the API server: only this operator's, not every Deployment and Job.
CHILD_SELECTOR = f"{builders.MANAGED_BY_LABEL}={builders.MANAGER}"
WATCHED_CHILDREN = (("apps", "v1", "deployments"), ("batch", "v1", "jobs"))
_resync_log = logging.getLogger("claude_proxy_operator.resync")
_login_log = logging.getLogger("claude_proxy_operator.login_watch")
WATCH_CONCURRENCY = 8  # /readyz reads at once, each at most `Config.login_timeout`


def configure(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping in annotations (status belongs to the resource) under a prefix of its own, so the
    user's `claudeproxy.dev/` annotations wake the handlers (`bookkeeping`), watch only this operator's children,
    and ask only for the RBAC it needs."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=bookkeeping.PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=bookkeeping.PREFIX, key=bookkeeping.DIFFBASE_KEY
    )
    # kopf's Events: handler failures and warnings logged inside a handler; the reconciler posts its own (`events`).
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace watching: the resources are fixed
    settings.peering.standalone = True  # one replica (Recreate): no peering objects needed
    for resource in WATCHED_CHILDREN:
        settings.watching.label_selectors[resource] = CHILD_SELECTOR


def build_registry(
    config: Config,
    *,
    login: Callable[..., Any] | None = None,
    kube: Kube | None = None,
    metrics: OperatorMetrics | None = None,
) -> kopf.OperatorRegistry:
    """The operator's handlers; `login` replaces kopf's usual logins (service account, kubeconfig) and `kube` the
    operator's own client (which logs in the same usual ways), e.g. in tests; `metrics` receives what the passes
    see (main serves it on `/metrics`).

    No handler here needs a finalizer (kopf adds one for per-resource daemons and timers, and for deletion handlers):
    the children go with their ClaudeProxy by ownerReferences, so deleting one never waits for the operator, even
    when the operator is gone first (`helm uninstall`, a removed operator)."""
    registry = kopf.OperatorRegistry()
    logins = [login] if login is not None else [kopf.login_with_service_account, kopf.login_with_kubeconfig]
    for fn in logins:
        kopf.on.login(registry=registry, errors=kopf.ErrorsMode.IGNORED)(fn)
    reconciler = Reconciler(kube or Kube(), config, metrics=metrics)
    background: set[asyncio.Task[None]] = set()

    # Every ClaudeProxy in the watched namespaces, kept current by kopf's watch: what the resync loop goes over.
    @kopf.index(GROUP, VERSION, PLURAL, id="claudeproxies", registry=registry)
    def claudeproxies(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        meta = body.metadata
        ref = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
        }
        return {(str(meta.namespace), str(meta.name)): ref}

    # What the login watch needs of each, as kopf's watches last saw it, so it asks the API server nothing: the
    # ClaudeProxy's spec and status, and its Deployment's available replicas.
    @kopf.index(GROUP, VERSION, PLURAL, id="proxy_logins", registry=registry)
    def proxy_logins(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        key = (str(body.metadata.namespace), str(body.metadata.name))
        conditions = copy.deepcopy(list(body.status.get("conditions") or ()))
        return {key: {"spec": copy.deepcopy(dict(body.spec)), "status": {"conditions": conditions}}}

    @kopf.index("apps", "v1", "deployments", labels=CHILD_LABELS, id="proxy_replicas", registry=registry)
    def proxy_replicas(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[tuple[str, str], int]:
        return {(str(body.metadata.namespace), labels[builders.INSTANCE_LABEL]): available_replicas(body)}

    @kopf.on.startup(registry=registry)
    async def startup(logger: kopf.Logger, **kwargs: Any) -> None:
        logger.info(f"Managing {PLURAL}.{GROUP}/{VERSION}; proxy image {config.default_image}")
        known = kwargs["claudeproxies"]  # the index above, filled as kopf watches
        loops = {"resync": resync(known)}
        if config.login_seconds > 0:
            loops["login watch"] = watch_logins(kwargs["proxy_logins"], kwargs["proxy_replicas"])
        for what, loop in loops.items():
            task = asyncio.get_running_loop().create_task(loop, name=f"claude-proxy {what}")
            background.add(task)
            task.add_done_callback(background.discard)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in list(background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await reconciler.kube.close()

    async def resync(known: kopf.Index[Any, Any]) -> None:
        """The resync loop: notices what no watched event announces (a Secret's new content, an expiry passing). One
        loop for the whole operator, not one per resource. A pass is safe to interrupt (the next one converges). It
        runs outside kopf's per-object handler context, so it logs through a plain logger; Events come from the
        reconciler itself."""
        while True:
            await asyncio.sleep(config.resync_seconds)
            for key in list(known):
                refs = list(known.get(key, ()))
                if not refs:  # deleted meanwhile
                    continue
                namespace, name = key
                logger = logging.LoggerAdapter(_resync_log, {"proxy": f"{namespace}/{name}"})
                try:
                    await reconciler.run(namespace, name, logger)
                except kopf.PermanentError as exc:
                    logger.debug(f"Resync of {namespace}/{name}: {exc}")  # already in the status and an Event
                except Exception as exc:
                    logger.warning(f"Resync of {namespace}/{name} failed, retry in {config.resync_seconds:g}s: {exc}")

    async def watch_logins(proxies: kopf.Index[Any, Any], replicas: kopf.Index[Any, Any]) -> None:
        """The login watch: every `login_seconds`, each ClaudeProxy with an available replica has its proxy's /readyz
        read, a few at a time, and gets a pass only when the verdict differs from its `LoginValid`
        (`Reconciler.watch_login`), so a refusal the proxy found by itself shows without waiting for the resync.
        One loop for the whole operator, like the resync loop, so no ClaudeProxy needs a finalizer (kopf's
        per-resource timers add one)."""
        limit = asyncio.Semaphore(WATCH_CONCURRENCY)

        async def look(key: tuple[str, str]) -> None:
            bodies = list(proxies.get(key, ()))
            if not bodies:  # deleted meanwhile
                return
            namespace, name = key
            available = max(list(replicas.get(key, ())) or [0])
            logger = logging.LoggerAdapter(_login_log, {"proxy": f"{namespace}/{name}"})
            async with limit:
                try:
                    await reconciler.watch_login(namespace, name, bodies[0], available, logger)
                except kopf.PermanentError as exc:
                    logger.debug(f"Login watch pass of {namespace}/{name}: {exc}")  # already in status and an Event
                except Exception as exc:
                    logger.warning(f"Login watch of {namespace}/{name} failed: {exc}")

        while True:
            await asyncio.sleep(config.login_seconds)
            await asyncio.gather(*(look(key) for key in list(proxies)))

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def converge(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        await reconciler.run(str(namespace), name, logger)

    @kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS, registry=registry)
    @kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS, registry=registry)
    async def child_changed(labels: Mapping[str, str], namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        await reconciler.run(str(namespace), labels[builders.INSTANCE_LABEL], logger)

    return registry
