"""What state a ClaudeProxy is in, computed from what was observed: pure functions, the clock passed in.

Job outcomes arrive as the one JSON line `claude-proxy seed|refresh` leave in their termination message. Only the
known fields are taken from it, checked and shortened, and anything shaped like a token is masked: status and Events
are readable by anyone who may read the resource, so they never carry a secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RESULTS = frozenset({"refreshed", "copied", "skipped", "failed"})
# A finished Job whose pod left no readable outcome: it exited successfully, but what it did is not known.
UNREPORTED = "unreported"
# Refresh failures that retrying cannot mend: a person has to log in again or fix the Secret.
USER_ACTION_REASONS = frozenset({"invalid_grant", "malformed", "missing"})
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TOKENISH = re.compile(r"sk-ant-[A-Za-z0-9_-]+|[A-Za-z0-9_-]{40,}")
MAX_MESSAGE = 300

Condition = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def camel(reason: str) -> str:
    """`invalid_grant` -> `InvalidGrant`: a condition reason from an outcome's snake_case code."""
    return "".join(part.capitalize() for part in reason.split("_") if part) or "Unknown"


def clean_message(text: Any) -> str:
    masked = _TOKENISH.sub("[redacted]", str(text or ""))
    return masked if len(masked) <= MAX_MESSAGE else masked[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    """One finished `seed` or `refresh` run, as its pod reported it."""

    command: str
    result: str
    reason: str
    message: str
    expires_at: str | None
    time: str

    @property
    def ok(self) -> bool:
        return self.result != "failed"

    def as_status(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "result": self.result,
            "reason": self.reason,
            "message": self.message,
            "expiresAt": self.expires_at,
        }


def parse_outcome(text: str, finished_at: str) -> Outcome | None:
    """The outcome line of a termination message, or None when there is none worth trusting."""
    for line in reversed(text.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("command") not in ("seed", "refresh"):
            continue
        result, reason = data.get("result"), data.get("reason")
        if result not in RESULTS or not isinstance(reason, str) or not _REASON.match(reason):
            return None
        expires = parse_time(data.get("expiresAt"))
        return Outcome(
            command=data["command"],
            result=result,
            reason=reason,
            message=clean_message(data.get("message")),
            expires_at=rfc3339(expires) if expires else None,
            time=finished_at,
        )
    return None


def pod_outcomes(pods: Iterable[Mapping[str, Any]], command: str) -> list[Outcome]:
    """Every outcome reported by terminated containers of these pods, oldest first."""
    found: list[Outcome] = []
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or ():
            terminated = (status.get("state") or {}).get("terminated") or {}
            finished = parse_time(terminated.get("finishedAt"))
            if not terminated.get("message") or finished is None:
                continue
            outcome = parse_outcome(terminated["message"], rfc3339(finished))
            if outcome is not None and outcome.command == command:
                found.append(outcome)
    return sorted(found, key=lambda o: o.time)


def job_finished_at(job: Mapping[str, Any]) -> str | None:
    """When a finished Job finished: its completionTime, else the time its Complete or Failed condition turned."""
    job_status = job.get("status") or {}
    finished = parse_time(job_status.get("completionTime"))
    for cond in job_status.get("conditions") or ():
        if finished is None and cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            finished = parse_time(cond.get("lastTransitionTime"))
    return rfc3339(finished) if finished else None


def unreported_outcome(command: str, job_name: str, state: str, finished_at: str) -> Outcome:
    """What is known of a finished `seed` or `refresh` Job whose pod left no readable outcome (an evicted or deleted
    pod, an image that does not write one): whether it exited successfully, and where to look."""
    look = f"`kubectl describe job/{job_name}` and `kubectl logs job/{job_name}` may say more"
    if state == "failed":
        return Outcome(
            command=command,
            result="failed",
            reason="job_failed",
            message=clean_message(f"the {command} Job {job_name} failed without reporting an outcome; {look}"),
            expires_at=None,
            time=finished_at,
        )
    after = (
        "the volume holds a login, so the proxy starts; the token's expiry shows after the next refresh"
        if command == "seed"
        else "the token's expiry shows after the next run"
    )
    return Outcome(
        command=command,
        result="unreported",
        reason="no_outcome",
        message=clean_message(f"the {command} Job {job_name} completed without reporting an outcome; {after}; {look}"),
        expires_at=None,
        time=finished_at,
    )


def unreported_jobs(
    jobs: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], command: str, now: datetime
) -> list[Outcome]:
    """An outcome for each finished Job none of whose pods reported one."""
    reported = {
        (pod.get("metadata", {}).get("labels") or {}).get("job-name") for pod in pods if pod_outcomes([pod], command)
    }
    found = []
    for job in jobs:
        state = job_state(job)
        name = str(job.get("metadata", {}).get("name", ""))
        if state in ("succeeded", "failed") and name not in reported:
            found.append(unreported_outcome(command, name, state, job_finished_at(job) or rfc3339(now)))
    return found


def job_state(job: Mapping[str, Any] | None) -> str | None:
    """`succeeded`, `failed`, `running`, or None when there is no Job."""
    if job is None:
        return None
    for cond in job.get("status", {}).get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


@dataclass(frozen=True)
class Observed:
    """Everything the status is computed from; gathered by the reconciler, never containing secret values."""

    generation: int
    auth_mode: str
    endpoint: str
    now: datetime
    missing_secrets: Sequence[str] = ()
    seed_secret: str | None = None
    seed_digest: str | None = None
    seed_job: str | None = None  # job_state() of the seed Job for seed_digest
    seed_job_name: str | None = None
    seed_finished_at: str | None = None  # job_finished_at() of that Job, once finished
    seed_outcome: Outcome | None = None
    refresh_outcome: Outcome | None = None
    replicas: int = 1
    deployment: Mapping[str, Any] | None = None
    credential_secret: str | None = None  # the Secret a new login goes into (the seed Secret in oauth mode)
    login: Mapping[str, Any] | None = None  # proxy_login.parse() of the proxy's /readyz; None: no answer
    login_probed: bool = False  # whether /readyz was read (only while a replica is available)
    seed_spent: Mapping[str, Any] | None = None  # status.seedSecret, when a new volume would be seeded from it


def _condition(kind: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {"type": kind, "status": status, "reason": reason, "message": message}


def seed_record(previous: Mapping[str, Any], observed: Observed) -> dict[str, Any] | None:
    """The status' memory of the last finished seed: it is what keeps a finished seed from running again."""
    old = previous.get("seed")
    if observed.seed_outcome is not None and observed.seed_digest is not None:
        return {"digest": observed.seed_digest, **observed.seed_outcome.as_status()}
    if observed.seed_job in ("succeeded", "failed") and observed.seed_digest is not None:
        if isinstance(old, Mapping) and old.get("digest") == observed.seed_digest:
            return dict(old)  # already recorded: the record keeps its first time
        unreported = unreported_outcome(
            "seed",
            observed.seed_job_name or "of this seed",
            observed.seed_job,
            observed.seed_finished_at or rfc3339(observed.now),
        )
        return {"digest": observed.seed_digest, **unreported.as_status()}
    return dict(old) if isinstance(old, Mapping) else None


def is_seeded(seed: Mapping[str, Any] | None, digest: str | None) -> bool:
    """Whether the volume holds credentials from the Secret's current content (None: content unknown, any will do)."""
    if not seed or seed.get("result") in (None, "failed"):
        return False
    return digest is None or seed.get("digest") == digest


def _seeded(observed: Observed, seed: Mapping[str, Any] | None) -> Condition:
    if observed.auth_mode != "oauth":
        return _condition("Seeded", True, "NotRequired", f"{observed.auth_mode} mode uses no credentials volume")
    if observed.seed_spent:
        return _condition(
            "Seeded",
            False,
            "SeedSecretSpent",
            f"the credentials volume is new, and Secret {observed.seed_secret} still holds the login whose refresh "
            f"token the refresh at {observed.seed_spent.get('consumedAt')} spent (refresh tokens rotate): it is not "
            "seeded from it. Run `claude auth login` and replace the Secret's content (the operator seeds the new "
            "volume from it), or bring back the volume that holds the login",
        )
    if seed and (observed.seed_digest is None or seed.get("digest") == observed.seed_digest):
        if seed.get("result") == "failed":
            return _condition("Seeded", False, camel(seed.get("reason", "failed")), seed.get("message", ""))
        reason = "Copied" if seed.get("result") == "copied" else camel(seed.get("reason", "skipped"))
        return _condition("Seeded", True, reason, seed.get("message", ""))
    if observed.seed_digest is None:
        return _condition("Seeded", False, "SeedSecretNotFound", f"Secret {observed.seed_secret} cannot be read")
    return _condition("Seeded", False, "Seeding", "the seed Job is copying the credentials into the volume")


def last_refresh(previous: Mapping[str, Any], observed: Observed) -> dict[str, Any] | None:
    old = previous.get("lastRefresh")
    new = observed.refresh_outcome
    if new is not None and (not isinstance(old, Mapping) or str(old.get("time", "")) < new.time):
        return new.as_status()
    return dict(old) if isinstance(old, Mapping) else None


def token_expiry(*records: Mapping[str, Any] | None) -> str | None:
    """The expiry of the credentials on the volume: the one named by the newest outcome that names one."""
    named = [(str(r.get("time", "")), r["expiresAt"]) for r in records if r and isinstance(r.get("expiresAt"), str)]
    return max(named)[1] if named else None


def _token_fresh(observed: Observed, expires_at: str | None, refresh: Mapping[str, Any] | None) -> Condition:
    if observed.auth_mode == "apiKey":
        return _condition("TokenFresh", True, "NotRequired", "API keys do not expire")
    if observed.auth_mode == "accessToken":
        return _condition("TokenFresh", True, "NotRequired", "long-lived access token; nothing to refresh")
    expiry = parse_time(expires_at)
    valid = expiry is not None and expiry > observed.now
    if refresh and refresh.get("result") == "failed":
        reason = str(refresh.get("reason", "failed"))
        if reason in USER_ACTION_REASONS:
            hint = f"; log in again with Claude Code and put the new credentials in Secret {observed.seed_secret}"
            return _condition("TokenFresh", False, camel(reason), f"{refresh.get('message', '')}{hint}")
        if valid:
            return _condition(
                "TokenFresh",
                True,
                "RefreshRetrying",
                f"last refresh failed ({reason}); the token is valid until "
                f"{expires_at} and the next scheduled refresh retries",
            )
        return _condition("TokenFresh", False, camel(reason), str(refresh.get("message", "")))
    if expiry is None:
        return _condition("TokenFresh", None, "NoTokenYet", "no seed or refresh has reported a token expiry yet")
    if not valid:
        return _condition("TokenFresh", False, "TokenExpired", f"the access token expired at {expires_at}")
    if refresh and refresh.get("result") == "refreshed":
        return _condition("TokenFresh", True, "Refreshed", f"valid until {expires_at}")
    return _condition("TokenFresh", True, "Valid", f"valid until {expires_at}")


def _available(observed: Observed, seeded: Condition) -> Condition:
    deploy = observed.deployment
    if deploy is None:
        if observed.auth_mode == "oauth" and seeded["status"] != "True":
            return _condition("Available", False, "WaitingForSeed", "the proxy starts once the volume is seeded")
        return _condition("Available", False, "DeploymentPending", "the proxy Deployment is not created yet")
    if observed.replicas == 0:
        return _condition("Available", False, "ScaledToZero", "spec.replicas is 0")
    status = deploy.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    if available > 0:
        return _condition(
            "Available", True, "MinimumReplicasAvailable", f"{available}/{observed.replicas} replicas available"
        )
    return _condition("Available", False, "NoReplicasAvailable", f"0/{observed.replicas} replicas available")


_CREDENTIAL_NAMES = {"api_key": "API key", "access_token": "access token", "oauth_file": "OAuth login"}
MAX_ANTHROPIC_MESSAGE = 120


def login_hint(observed: Observed) -> str:
    """What a person does about a refused login, as the README says it."""
    secret = observed.credential_secret or "the credentials Secret"
    if observed.auth_mode == "apiKey":
        return f"put a valid API key in Secret {secret} (the proxy pods roll over to it)"
    if observed.auth_mode == "accessToken":
        return f"run `claude setup-token` and put the new token in Secret {secret}"
    return f"run `claude auth login` and replace Secret {secret}'s content (the operator seeds the volume again)"


# The LoginValid status a verdict of the proxy's /readyz leads to; any other ("unknown", no answer) changes nothing
# the login watch should act on (a pass decides what they mean).
_LOGIN_STATUS = {"valid": "True", "refused": "False"}


def login_verdict_changed(login: Mapping[str, Any] | None, status: Mapping[str, Any]) -> bool:
    """Whether the proxy's `login` (proxy_login.parse) says something other than the status' `LoginValid`: then a
    pass has something to write."""
    verdict = _LOGIN_STATUS.get(str((login or {}).get("state")))
    return verdict is not None and verdict != condition(status, "LoginValid").get("status")


def _login_valid(observed: Observed, previous: Mapping[str, Any]) -> Condition:
    if not observed.login_probed:
        return _condition("LoginValid", None, "ProxyNotAvailable", "no proxy replica is available to ask")
    login = observed.login
    if login is None:
        return _condition("LoginValid", None, "ProxyUnreachable", "the proxy's /readyz gave no login verdict")
    kind = _CREDENTIAL_NAMES.get(str(login.get("credential")), "credential")
    if login["state"] == "valid":
        return _condition("LoginValid", True, "LoginAccepted", f"Anthropic accepted the {kind}")
    if login["state"] == "refused":
        said = clean_message(login.get("message"))
        if len(said) > MAX_ANTHROPIC_MESSAGE:
            said = said[: MAX_ANTHROPIC_MESSAGE - 1] + "…"
        code = f"HTTP {login['status']}: " if isinstance(login.get("status"), int) else ""
        text = f"Anthropic refused the {kind} ({code}{said}); {login_hint(observed)}"
        return _condition("LoginValid", False, "LoginRefused", clean_message(text))
    # The replica that answered has sent nothing upstream yet (a new pod): the last verdict stands.
    old = condition(previous, "LoginValid")
    if old.get("status") in ("True", "False"):
        return _condition("LoginValid", old["status"] == "True", str(old.get("reason")), str(old.get("message", "")))
    return _condition("LoginValid", None, "NoRequestYet", "the proxy has not called Anthropic yet")


def _credentials(observed: Observed) -> Condition:
    if observed.missing_secrets:
        return _condition(
            "CredentialsReady", False, "SecretNotFound", "missing: " + ", ".join(observed.missing_secrets)
        )
    return _condition("CredentialsReady", True, "SecretsFound", "every referenced Secret and key is present")


def _stamp(conditions: list[Condition], previous: Sequence[Mapping[str, Any]], observed: Observed) -> list[Condition]:
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    for cond in conditions:
        old = before.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"] and old.get("lastTransitionTime")
        cond["lastTransitionTime"] = old["lastTransitionTime"] if same else rfc3339(observed.now)  # type: ignore[index]
        cond["observedGeneration"] = observed.generation
    return conditions


def compute_status(previous: Mapping[str, Any], observed: Observed) -> dict[str, Any]:
    """The whole `.status` (fields this operator owns), keeping transition times of unchanged conditions."""
    seed = seed_record(previous, observed)
    refresh = last_refresh(previous, observed) if observed.auth_mode == "oauth" else None
    expires = token_expiry(seed, refresh) if observed.auth_mode == "oauth" else None
    credentials = _credentials(observed)
    seeded = _seeded(observed, seed)
    fresh = _token_fresh(observed, expires, refresh)
    available = _available(observed, seeded)
    login = _login_valid(observed, previous)
    parts = [credentials, seeded, fresh, available]
    # A refused login keeps the proxy from serving; an unknown one (no request yet) does not.
    blocker = next((c for c in parts if c["status"] != "True"), None)
    if blocker is None and login["status"] == "False":
        blocker = login
    ready = (
        _condition("Ready", True, "Ready", "the proxy serves requests")
        if blocker is None
        else _condition("Ready", False, blocker["reason"], f"{blocker['type']}: {blocker['message']}")
    )
    status: dict[str, Any] = {
        "observedGeneration": observed.generation,
        "authMode": observed.auth_mode,
        "endpoint": observed.endpoint,
        "tokenExpiresAt": expires,
        "lastRefresh": refresh,
        "seed": seed if observed.auth_mode == "oauth" else None,
        "conditions": _stamp([*parts, login, ready], previous.get("conditions") or (), observed),
    }
    return status


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return {}


def events(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events a status change is worth: outcomes, and Ready turning."""
    found: list[tuple[str, str, str]] = []
    seed, old_seed = current.get("seed") or {}, previous.get("seed") or {}
    if seed and (seed.get("time"), seed.get("digest")) != (old_seed.get("time"), old_seed.get("digest")):
        if seed.get("result") == "failed":
            found.append(("Warning", "SeedFailed", f"{seed.get('reason')}: {seed.get('message')}"))
        elif seed.get("result") == UNREPORTED:
            found.append(("Warning", "SeedOutcomeMissing", str(seed.get("message"))))
        else:
            found.append(("Normal", "Seeded", f"{seed.get('result')}: {seed.get('message')}"))
    refresh, old_refresh = current.get("lastRefresh") or {}, previous.get("lastRefresh") or {}
    if refresh and refresh.get("time") != old_refresh.get("time"):
        if refresh.get("result") == "failed":
            said = f"{refresh.get('reason')}: {refresh.get('message')}"
            if refresh.get("reason") in USER_ACTION_REASONS:  # the condition's message says what to do, and where
                said = f"{refresh.get('reason')}: {condition(current, 'TokenFresh').get('message', '')}"
            found.append(("Warning", "RefreshFailed", said))
        elif refresh.get("result") == "refreshed":
            found.append(("Normal", "Refreshed", f"token valid until {current.get('tokenExpiresAt')}"))
        elif refresh.get("result") == UNREPORTED:
            found.append(("Warning", "RefreshOutcomeMissing", str(refresh.get("message"))))
    login, old_login = condition(current, "LoginValid"), condition(previous, "LoginValid")
    if login.get("status") == "False" and old_login.get("status") != "False":
        found.append(("Warning", "LoginRefused", str(login.get("message", ""))))
    elif login.get("status") == "True" and old_login.get("status") == "False":
        found.append(("Normal", "LoginAccepted", str(login.get("message", ""))))
    seeded, old_seeded = condition(current, "Seeded"), condition(previous, "Seeded")
    if seeded.get("reason") == "SeedSecretSpent" and old_seeded.get("reason") != "SeedSecretSpent":
        found.append(("Warning", "SeedSecretSpent", str(seeded.get("message", ""))))
    ready, old_ready = condition(current, "Ready"), condition(previous, "Ready")
    if ready.get("status") != old_ready.get("status"):
        if ready.get("status") == "True":
            found.append(("Normal", "Ready", str(ready.get("message", ""))))
        elif old_ready:
            found.append(("Warning", "NotReady", f"{ready.get('reason')}: {ready.get('message')}"))
    return found
