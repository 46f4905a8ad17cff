"""One level-based pass over a ClaudeProxy: read it fresh, converge every child, write what was observed to status.

Every trigger (create, update, resume, the resync loop, a child Job or Deployment changing) runs the same pass, one
at a time per resource, so the outcome depends only on the current state of the cluster and never on which event
came first. The pass is idempotent: a second run over an unchanged cluster writes nothing. Whichever pass writes a
new status also posts its Events (`events`), through the operator's own client, so no Event depends on the trigger.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from claude_proxy_operator import bookkeeping, builders, events, proxy_login, status
from claude_proxy_operator.apply import quantity, unchanged, with_digest
from claude_proxy_operator.config import Config, image_repository
from claude_proxy_operator.kube import (
    CLAUDE_PROXIES,
    CRONJOBS,
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NETWORK_POLICIES,
    PDBS,
    PODS,
    PVCS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    Kube,
    Resource,
)
from claude_proxy_operator.metrics import OperatorMetrics
from claude_proxy_operator.spec import Manifest, ProxySpec, SecretRef, SpecError, check_name, parse_spec

EventSink = Callable[[Mapping[str, Any], str, str, str], Awaitable[None]]
_UNREAD: Manifest = {}  # `_apply`'s default: the live object is read there
_log = logging.getLogger("claude_proxy_operator.events")


def _credential_secret(spec: ProxySpec) -> str | None:
    ref = spec.oauth.seed if spec.oauth else (spec.api_key or spec.access_token)
    return ref.name if ref else None


def available_replicas(deployment: Mapping[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)


def login_url(config: Config, name: str, namespace: str, spec: ProxySpec) -> str:
    """Where the proxy's Service answers /readyz, whose `login` object is Anthropic's last word on the login."""
    return proxy_login.url_for(config.login_url, name, namespace, config.cluster_domain, spec.service_port)


class NameConflict(Exception):
    """A child's name is taken by an object this ClaudeProxy does not own: the operator never writes over it."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        super().__init__(f"{kind} {namespace}/{name}")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        post_event: EventSink | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.post_event = post_event or self._post_event
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def _post_event(self, owner: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        body = events.event(owner, kind, reason, message, self.clock())
        try:
            await self.kube.create(EVENTS, body["metadata"]["namespace"], body)
        except Exception as exc:  # an Event is best effort; the status already says it
            _log.warning(f"Could not post Event {reason} for {owner['metadata']['name']}: {exc}")

    async def watch_login(
        self, namespace: str, name: str, body: Mapping[str, Any], available: int, logger: kopf.Logger
    ) -> bool:
        """The login watch's look at one ClaudeProxy between passes: read its proxy's /readyz (only while a replica
        is available), and when the verdict differs from the status' `LoginValid`, run the pass at once, so status,
        Events and the heal follow as from any other trigger. `body` is the resource as kopf's watch last saw it;
        an unchanged verdict costs one GET of /readyz and no request to the API server. The pass takes the
        resource's lock as every pass does (it waits for one already running). Returns whether a pass ran."""
        if available <= 0:
            return False
        try:
            spec = parse_spec(body.get("spec") or {}, default_image=self.config.default_image)
        except SpecError:
            return False  # Ready=False says so; nothing to ask
        if spec.replicas == 0:
            return False
        login = await proxy_login.probe(login_url(self.config, name, namespace, spec), self.config.login_timeout)
        if not status.login_verdict_changed(login, body.get("status") or {}):
            return False
        logger.info(f"The proxy's login verdict is now {login and login['state']}: reconciling {namespace}/{name}")
        await self.run(namespace, name, logger)
        return True

    async def run(self, namespace: str, name: str, logger: kopf.Logger) -> None:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            body = await self.kube.get(CLAUDE_PROXIES, namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                self._locks.pop((namespace, name), None)
                self.metrics.forget(namespace, name)
                return
            migration = bookkeeping.migration_patch(body.get("metadata", {}).get("annotations"))
            if migration is not None:
                body = await self.kube.patch(CLAUDE_PROXIES, namespace, name, migration)
                logger.info(f"Moved kopf's bookkeeping on {namespace}/{name} to {bookkeeping.PREFIX}/")
            with self.metrics.reconcile_pass():
                await _ReconcilePass(self, body, logger).run()


class _ReconcilePass:
    """The state of one reconcile pass over one ClaudeProxy."""

    def __init__(self, owner: Reconciler, body: Manifest, logger: kopf.Logger) -> None:
        self.kube = owner.kube
        self.config = owner.config
        self.now = owner.clock()
        self.post_event = owner.post_event
        self.metrics = owner.metrics
        self.body = body
        self.logger = logger
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.ns: str = meta["namespace"]
        self.generation = int(meta.get("generation") or 0)
        self.previous: Mapping[str, Any] = body.get("status") or {}
        self._seen: dict[tuple[str, str], Manifest | None] = {}  # children read in this pass, by (plural, name)

    # --- writing children ----------------------------------------------------------------------------------------

    def _own(self, obj: Manifest) -> Manifest:
        kopf.adopt(obj, owner=self.body)  # type: ignore[arg-type]
        return obj

    async def _apply(self, res: Resource, desired: Manifest, live: Manifest | None = _UNREAD) -> Manifest:
        """Server-side apply `desired` (created when absent), unless the live object was applied from exactly it;
        `live` is the object as this pass already read it (None: absent), so it is not read twice."""
        name = desired["metadata"]["name"]
        if live is _UNREAD:
            live = await self._read(res, name)
        if live is not None and not self._owned(res, live):
            raise NameConflict(res.kind, self.ns, name)  # checked before every write, not only before deletion
        if live is not None and unchanged(live, desired):
            return live
        applied = await self.kube.apply(res, self.ns, with_digest(desired))
        self.logger.info(f"{'Created' if live is None else 'Updated'} {res.kind} {self.ns}/{name}")
        return applied

    async def _read(self, res: Resource, name: str) -> Manifest | None:
        """A child as this pass first read it (None: absent); each is read once per pass."""
        key = (res.plural, name)
        if key not in self._seen:
            self._seen[key] = await self.kube.get(res, self.ns, name)
        return self._seen[key]

    def _owned(self, res: Resource, live: Mapping[str, Any]) -> bool:
        """Whether `live` is this ClaudeProxy's to write: it carries an ownerReference to it (by uid, so not to an
        earlier resource of the same name), or it is the login's volume kept from one (`retainOnDelete`: no
        ownerReference, this operator's labels for this name)."""
        meta = live.get("metadata") or {}
        uid = self.body["metadata"].get("uid")
        if uid and any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or ()):
            return True
        return res is PVCS and self._is_ours(live)

    def _fixed_children(self, spec: ProxySpec) -> list[tuple[Resource, str]]:
        children = [(SERVICE_ACCOUNTS, self.name), (DEPLOYMENTS, self.name), (SERVICES, self.name)]
        if spec.network_policy:
            children.append((NETWORK_POLICIES, self.name))
        if spec.replicas > 1:
            children.append((PDBS, self.name))
        if spec.oauth is not None:
            children += [(PVCS, builders.pvc_name(self.name)), (CRONJOBS, builders.cronjob_name(self.name))]
        return children

    async def _remove(self, res: Resource, name: str) -> None:
        live = await self.kube.get(res, self.ns, name)
        if live is None or not self._is_ours(live) or not self._owned(res, live):
            return
        if await self.kube.delete(res, self.ns, name):
            self.logger.info(f"Deleted {res.kind} {self.ns}/{name} (no longer needed)")

    def _is_ours(self, obj: Mapping[str, Any]) -> bool:
        found = obj.get("metadata", {}).get("labels") or {}
        return bool(
            found.get(builders.MANAGED_BY_LABEL) == builders.MANAGER and found.get(builders.INSTANCE_LABEL) == self.name
        )

    # --- reading -------------------------------------------------------------------------------------------------

    async def _secret_digest(self, ref: SecretRef) -> str | None:
        """A digest of one Secret key's content (for rollouts and reseeds); None when it cannot be read."""
        secret = await self.kube.get(SECRETS, self.ns, ref.name)
        value = ((secret or {}).get("data") or {}).get(ref.key)
        return _digest(ref.name, ref.key, value) if isinstance(value, str) else None

    # --- the pass --------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            check_name(self.name)
            spec = parse_spec(self.body.get("spec") or {}, default_image=self.config.default_image)
        except SpecError as exc:
            await self._write_blocked("InvalidSpec", str(exc))
            raise kopf.PermanentError(f"invalid spec: {exc}") from None
        if not self.config.image_allowed(spec.image):
            allowed = ", ".join(self.config.allowed_images or (image_repository(self.config.default_image),))
            message = (
                f"image {spec.image} is not allowed here; the cluster admin allows {allowed} "
                "(the operator's CLAUDE_PROXY_ALLOWED_IMAGES, the chart's operator.allowedImages)"
            )
            await self._write_blocked("ImageNotAllowed", message)
            raise kopf.PermanentError(message)
        conflicts = [
            f"{res.kind} {self.ns}/{name}"
            for res, name in self._fixed_children(spec)
            if (live := await self._read(res, name)) is not None and not self._owned(res, live)
        ]
        try:
            if conflicts:
                raise NameConflict(", ".join(conflicts), "", "")
            await self._converge(spec)
        except NameConflict as exc:
            taken = ", ".join(conflicts) or str(exc)
            message = (
                f"{taken} already exists and does not belong to this ClaudeProxy; the operator leaves it alone. "
                "Give the ClaudeProxy another name, or remove the other object"
            )
            await self._write_blocked("NameConflict", message)
            raise kopf.PermanentError(message) from None

    async def _converge(self, spec: ProxySpec) -> None:
        missing: list[str] = []
        digests: list[str] = []
        for ref in spec.secret_refs():
            digest = await self._secret_digest(ref)
            if digest is None:
                missing.append(f"Secret {ref.name} key {ref.key}")
            digests.append(digest or "missing")

        await self._apply(SERVICE_ACCOUNTS, self._own(builders.service_account(self.name, self.ns)))

        observed: dict[str, Any] = {}
        deployment = await self._read(DEPLOYMENTS, self.name)
        seed_digest: str | None = None
        if spec.oauth is not None:
            seed_digest, observed = await self._oauth(spec, missing)
        else:
            await self._drop_oauth()

        seed = status.seed_record(self.previous, self._observed(spec, missing, seed_digest, None, observed))
        seeded = spec.oauth is None or status.is_seeded(seed, seed_digest)
        if seeded or deployment is not None:
            desired = self._deployment(spec, digests, seed, seeded, deployment)
            deployment = await self._apply(DEPLOYMENTS, desired, live=deployment)
        await self._apply(SERVICES, self._own(builders.service(self.name, self.ns, spec)))
        if spec.network_policy:
            await self._apply(
                NETWORK_POLICIES, self._own(builders.network_policy(self.name, self.ns, spec, self.config.namespace))
            )
        else:
            await self._remove(NETWORK_POLICIES, self.name)
        if spec.replicas > 1:
            await self._apply(PDBS, self._own(builders.pod_disruption_budget(self.name, self.ns)))
        else:
            await self._remove(PDBS, self.name)

        observed.update(await self._login(spec, deployment))
        if spec.oauth is not None:
            await self._heal(spec, observed.get("login"), observed.get("refresh_outcome"))
        await self._write_status(self._observed(spec, missing, seed_digest, deployment, observed))

    async def _login(self, spec: ProxySpec, deployment: Mapping[str, Any] | None) -> dict[str, Any]:
        """The proxy's own word on whether Anthropic accepts its credential, read from its Service's /readyz."""
        if available_replicas(deployment) <= 0 or spec.replicas == 0:
            return {"login_probed": False}
        url = login_url(self.config, self.name, self.ns, spec)
        return {"login_probed": True, "login": await proxy_login.probe(url, self.config.login_timeout)}

    def _deployment(
        self, spec: ProxySpec, digests: list[str], seed: Mapping[str, Any] | None, seeded: bool, live: Manifest | None
    ) -> Manifest:
        """Roll out on a Secret's new content, and on a new seed once it has landed (not while it is copying)."""
        seed_digest = None
        if spec.oauth is not None:
            template = ((live or {}).get("spec") or {}).get("template") or {}
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            landed = seed.get("digest") if seeded and seed else annotations.get(builders.SEED_DIGEST_ANNOTATION)
            seed_digest = str(landed or "")
        return self._own(builders.deployment(self.name, self.ns, spec, _digest(*digests), seed_digest))

    async def _oauth(self, spec: ProxySpec, missing: list[str]) -> tuple[str | None, dict[str, Any]]:
        assert spec.oauth is not None
        pvc = await self._credentials_volume(spec)
        content = await self._secret_digest(spec.oauth.seed)
        # The volume's uid is part of the digest: a recreated (empty) volume is seeded again.
        seed_digest = _digest(content, str(pvc.get("metadata", {}).get("uid", ""))) if content else None
        if content is None and not status.is_seeded(self.previous.get("seed"), None):
            missing.append(f"Secret {spec.oauth.seed.name} key {spec.oauth.seed.key}")

        found: dict[str, Any] = {}
        spent = self.previous.get("seedSecret") or {}
        done = self.previous.get("seed") or {}
        if content is not None and spent.get("digest") == content and done.get("digest") != seed_digest:
            # A new volume, and the Secret still holds the login whose refresh token a refresh has spent.
            found["seed_spent"] = dict(spent)
        jobs = await self.kube.list(JOBS, self.ns, builders.selector(self.name, "seed"))
        current = builders.seed_job_name(self.name, seed_digest) if seed_digest else None
        for stale in jobs:
            if stale["metadata"]["name"] != current and self._is_ours(stale) and self._owned(JOBS, stale):
                await self.kube.delete(JOBS, self.ns, stale["metadata"]["name"])
        if seed_digest is not None and done.get("digest") != seed_digest and not found.get("seed_spent"):
            job: Manifest | None = next((j for j in jobs if j["metadata"]["name"] == current), None)
            if job is None:  # Jobs are immutable: applied once per Secret content (created), never changed
                job = await self._apply(JOBS, self._own(builders.seed_job(self.name, self.ns, spec, seed_digest)))
            found["seed_job"] = status.job_state(job)
            found["seed_job_name"] = current
            if found["seed_job"] in ("succeeded", "failed"):
                found["seed_finished_at"] = status.job_finished_at(job)
                labels = {**builders.selector(self.name, "seed"), "job-name": str(current)}
                outcomes = status.pod_outcomes(await self.kube.list(PODS, self.ns, labels), "seed")
                found["seed_outcome"] = outcomes[-1] if outcomes else None

        await self._apply(CRONJOBS, self._own(builders.refresh_cronjob(self.name, self.ns, spec)))
        await self._refresh_now(spec)
        refresh_pods = await self.kube.list(PODS, self.ns, builders.selector(self.name, "refresh"))
        refresh_jobs = await self.kube.list(JOBS, self.ns, builders.selector(self.name, "refresh"))
        outcomes = status.pod_outcomes(refresh_pods, "refresh")
        # A finished run whose pod left nothing readable still counts: what is known of it, and where to look.
        outcomes += status.unreported_jobs(refresh_jobs, refresh_pods, "refresh", self.now)
        outcomes.sort(key=lambda outcome: outcome.time)
        found["refresh_outcome"] = outcomes[-1] if outcomes else None
        await self._mark_spent(spec, content, seed_digest, outcomes)
        return seed_digest, found

    async def _mark_spent(
        self, spec: ProxySpec, content: str | None, seed_digest: str | None, outcomes: list[status.Outcome]
    ) -> None:
        """Once a refresh has rotated the login the volume was seeded with from the Secret's current content, the
        Secret's refresh token is spent: `status.seedSecret` says so (and the Secret may be deleted), and a new volume
        is not seeded from it (`Seeded=False`, `SeedSecretSpent`) but waits for a new login."""
        assert spec.oauth is not None
        seed = self.previous.get("seed") or {}
        if content is None or seed_digest is None or seed.get("digest") != seed_digest:
            return
        if seed.get("result") == "failed":
            return
        if (self.previous.get("seedSecret") or {}).get("digest") == content:
            return
        rotated = [o for o in outcomes if o.result == "refreshed" and o.time > str(seed.get("time", ""))]
        if not rotated:
            return
        record = {"name": spec.oauth.seed.name, "digest": content, "consumedAt": rotated[0].time}
        await self.kube.patch(CLAUDE_PROXIES, self.ns, self.name, {"status": {"seedSecret": record}}, "status")
        self.previous = {**self.previous, "seedSecret": record}

    async def _refresh_now(self, spec: ProxySpec) -> None:
        """A new value of the `refresh-now` annotation: one Job from the CronJob's template with `--force`, once per
        value. The Job's name derives from the value and the handled value is kept in status, so neither a repeated
        pass nor the Job's expiry (ttlSecondsAfterFinished) runs it twice. A request made before the first seed has
        landed waits for it: there is nothing to refresh on an empty volume."""
        annotations = self.body.get("metadata", {}).get("annotations") or {}
        requested = annotations.get(builders.REFRESH_NOW_ANNOTATION)
        if not requested or not status.is_seeded(self.previous.get("seed"), None):
            return
        digest = _digest("refresh-now", str(requested))
        if (self.previous.get("refreshNow") or {}).get("digest") == digest:
            return
        job = builders.refresh_now_job(self.name, self.ns, spec, digest)
        job_name = job["metadata"]["name"]
        if await self.kube.get(JOBS, self.ns, job_name) is None:
            await self._apply(JOBS, self._own(job), live=None)
            await self.post_event(self.body, "Normal", "RefreshRequested", f"Job {job_name} refreshes the token now")
        record = {"digest": digest, "job": job_name, "time": status.rfc3339(self.now)}
        await self.kube.patch(CLAUDE_PROXIES, self.ns, self.name, {"status": {"refreshNow": record}}, "status")

    async def _heal(self, spec: ProxySpec, login: Mapping[str, Any] | None, outcome: status.Outcome | None) -> None:
        """Anthropic refused the volume's access token before its expiry: run the refresh once (the refresh token may
        still be good), and after a failure again only after a backoff (`Config.heal_backoff`). A refusal the refresh
        cannot mend (`invalid_grant`: log in again) stops the attempts; `TokenFresh` and the Events say what to do.
        One refusal (the proxy's `since`) gets one successful refresh at most: if the new token is refused too, a
        person has to look. The attempts are kept in `status.heal`; their outcomes land in `lastRefresh`."""
        if not login or login.get("state") != "refused" or login.get("credential") != "oauth_file":
            return
        if not status.is_seeded(self.previous.get("seed"), None):
            return
        expiry = status.parse_time(self.previous.get("tokenExpiresAt"))
        if expiry is not None and expiry <= self.now:
            return  # an expired token is the refresh CronJob's to renew; TokenFresh says so
        refusal = str(login.get("since") or "refused")
        record = dict(self.previous.get("heal") or {})
        if record.get("since") != refusal:
            record = {"since": refusal, "attempts": 0}
        attempts = int(record.get("attempts") or 0)
        if record.get("job"):
            previous = self.previous.get("lastRefresh") or {}
            newer = outcome is not None and outcome.time > str(previous.get("time", ""))
            last = outcome.as_status() if outcome is not None and newer else previous
            state = status.job_state(await self.kube.get(JOBS, self.ns, str(record["job"])))
            if state is None:  # the Job expired: its outcome is what lastRefresh last said
                state = "failed" if last.get("result") == "failed" else "succeeded"
            if state != "failed":
                return  # still running, or refreshed: the proxy's next answer tells whether that mended it
            if last.get("reason") in status.USER_ACTION_REASONS:
                return  # e.g. invalid_grant: no refresh can mend it
            started = status.parse_time(record.get("time")) or self.now
            backoff = self.config.heal_backoff[min(attempts, len(self.config.heal_backoff)) - 1]
            if (self.now - started).total_seconds() < backoff:
                return
        attempts += 1
        digest = _digest("heal", refusal, str(attempts))
        job = builders.refresh_now_job(self.name, self.ns, spec, digest)
        job_name = job["metadata"]["name"]
        if await self.kube.get(JOBS, self.ns, job_name) is None:
            await self._apply(JOBS, self._own(job), live=None)
            await self.post_event(
                self.body,
                "Normal",
                "RefreshStarted",
                f"Anthropic refused the access token before its expiry; Job {job_name} refreshes the login "
                f"(attempt {attempts})",
            )
        record.update(attempts=attempts, job=job_name, time=status.rfc3339(self.now))
        await self.kube.patch(CLAUDE_PROXIES, self.ns, self.name, {"status": {"heal": record}}, "status")
        self.previous = {**self.previous, "heal": record}

    async def _credentials_volume(self, spec: ProxySpec) -> Manifest:
        """The PVC, applied whole: its immutable fields (class, access modes) cannot change in the spec (CEL rules),
        and its size only grows (a volume cannot shrink, so a larger live size is kept)."""
        assert spec.oauth is not None
        desired = builders.credentials_pvc(self.name, self.ns, spec)
        if not spec.oauth.storage.retain_on_delete:
            self._own(desired)
        live = await self._read(PVCS, desired["metadata"]["name"])
        if live is not None:
            current = (((live.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
            if current and quantity(str(current)) > quantity(spec.oauth.storage.size):
                self.logger.warning(f"PVC {self.ns}/{desired['metadata']['name']} is {current}; volumes cannot shrink")
                desired["spec"]["resources"]["requests"]["storage"] = str(current)
        return await self._apply(PVCS, desired, live=live)

    async def _drop_oauth(self) -> None:
        """What oauth mode needed and this mode does not: the CronJob, seed Jobs, and (unless kept) the volume."""
        await self._remove(CRONJOBS, builders.cronjob_name(self.name))
        for component in ("seed", "refresh"):
            for job in await self.kube.list(JOBS, self.ns, builders.selector(self.name, component)):
                await self._remove(JOBS, job["metadata"]["name"])
        pvc = await self.kube.get(PVCS, self.ns, builders.pvc_name(self.name))
        if pvc is not None and self._is_ours(pvc):
            owned = any(
                ref.get("uid") == self.body["metadata"].get("uid")
                for ref in pvc["metadata"].get("ownerReferences") or ()
            )
            if owned:
                await self._remove(PVCS, builders.pvc_name(self.name))
            else:
                self.logger.info(f"Keeping PVC {self.ns}/{builders.pvc_name(self.name)} (retainOnDelete)")

    # --- status --------------------------------------------------------------------------------------------------

    def _observed(
        self,
        spec: ProxySpec,
        missing: list[str],
        seed_digest: str | None,
        deployment: Mapping[str, Any] | None,
        found: Mapping[str, Any],
    ) -> status.Observed:
        return status.Observed(
            generation=self.generation,
            auth_mode=spec.auth_mode,
            endpoint=builders.endpoint(self.name, self.ns, spec.service_port, self.config.cluster_domain),
            now=self.now,
            missing_secrets=tuple(missing),
            seed_secret=spec.oauth.seed.name if spec.oauth else None,
            seed_digest=seed_digest,
            seed_job=found.get("seed_job"),
            seed_job_name=found.get("seed_job_name"),
            seed_finished_at=found.get("seed_finished_at"),
            seed_outcome=found.get("seed_outcome"),
            refresh_outcome=found.get("refresh_outcome"),
            replicas=spec.replicas,
            deployment=deployment,
            credential_secret=_credential_secret(spec),
            login=found.get("login"),
            login_probed=bool(found.get("login_probed")),
            seed_spent=found.get("seed_spent"),
        )

    async def _write_status(self, observed: status.Observed) -> None:
        new = status.compute_status(self.previous, observed)
        self.metrics.observe(self.body, new)
        old = {key: value for key, value in self.previous.items() if key in new}
        if {k: v for k, v in new.items() if v is not None} == {k: v for k, v in old.items() if v is not None}:
            return
        await self.kube.patch(CLAUDE_PROXIES, self.ns, self.name, {"status": new}, subresource="status")
        for kind, reason, message in status.events(self.previous, new):
            await self.post_event(self.body, kind, reason, message)
        ready = status.condition(new, "Ready")
        self.logger.info(f"Status: Ready={ready.get('status')} ({ready.get('reason')})")

    async def _write_blocked(self, reason: str, message: str) -> None:
        """Ready=False for what keeps the operator from acting at all (an invalid spec, an image not allowed, a name
        taken), and a Warning Event, once per message."""
        invalid = {
            "type": "Ready",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": status.rfc3339(self.now),
            "observedGeneration": self.generation,
        }
        if status.condition(self.previous, "Ready").get("message") == message:
            return
        conditions = [c for c in self.previous.get("conditions") or () if c.get("type") != "Ready"] + [invalid]
        self.metrics.observe(self.body, {**self.previous, "conditions": conditions})
        patch = {"status": {"observedGeneration": self.generation, "conditions": conditions}}
        await self.kube.patch(CLAUDE_PROXIES, self.ns, self.name, patch, subresource="status")
        await self.post_event(self.body, "Warning", reason, message)
