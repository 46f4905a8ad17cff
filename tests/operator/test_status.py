"""Status as a pure function of observations; Job outcome lines parsed defensively; apply's merge patches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from claude_proxy_operator import status
from claude_proxy_operator.apply import APPLIED_DIGEST, quantity, unchanged, with_digest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)
ENDPOINT = "http://p.ns.svc.cluster.local/v1"


def _line(command: str, result: str, reason: str, message: str = "done", expires: str | None = None) -> str:
    return json.dumps(
        {"command": command, "result": result, "reason": reason, "message": message, "expiresAt": expires}
    )


def _pod(message: str, finished: str) -> dict[str, Any]:
    return {"status": {"containerStatuses": [{"state": {"terminated": {"message": message, "finishedAt": finished}}}]}}


def test_parse_outcome_takes_the_json_line_and_normalizes() -> None:
    text = "some noise\n" + _line("refresh", "refreshed", "due", "token refreshed", "2026-03-01T20:00:00Z") + "\n"
    outcome = status.parse_outcome(text, "2026-03-01T12:00:00Z")
    assert outcome == status.Outcome(
        "refresh", "refreshed", "due", "token refreshed", "2026-03-01T20:00:00Z", "2026-03-01T12:00:00Z"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        json.dumps({"command": "serve", "result": "refreshed", "reason": "due"}),
        _line("refresh", "exploded", "due"),
        _line("refresh", "failed", "Not A Code"),
    ],
)
def test_parse_outcome_refuses_what_it_cannot_trust(text: str) -> None:
    assert status.parse_outcome(text, "2026-03-01T12:00:00Z") is None


def test_outcome_messages_never_carry_token_shaped_text() -> None:
    leaked = "upstream said sk-ant-oat01-test-leak and " + "x" * 50
    outcome = status.parse_outcome(_line("refresh", "failed", "invalid_grant", leaked), "2026-03-01T12:00:00Z")
    assert outcome is not None
    assert "sk-ant" not in outcome.message and "x" * 50 not in outcome.message
    assert outcome.message.count("[redacted]") == 2
    long = status.parse_outcome(_line("seed", "copied", "forced", "y " * 400), "2026-03-01T12:00:00Z")
    assert long is not None and len(long.message) == status.MAX_MESSAGE


def test_pod_outcomes_sorted_and_filtered_by_command() -> None:
    pods = [
        _pod(_line("refresh", "skipped", "not_due"), "2026-03-01T11:00:00Z"),
        _pod(_line("seed", "copied", "forced"), "2026-03-01T11:30:00Z"),
        _pod(_line("refresh", "failed", "network"), "2026-03-01T10:00:00Z"),
        {"status": {"containerStatuses": [{"state": {"running": {}}}]}},
    ]
    found = status.pod_outcomes(pods, "refresh")
    assert [(o.result, o.time) for o in found] == [
        ("failed", "2026-03-01T10:00:00Z"),
        ("skipped", "2026-03-01T11:00:00Z"),
    ]


def test_job_state() -> None:
    assert status.job_state(None) is None
    assert status.job_state({"status": {}}) == "running"
    assert status.job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "succeeded"
    assert status.job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "failed"


def test_finished_jobs_without_a_reported_outcome_still_have_one() -> None:
    reported = _pod(_line("refresh", "refreshed", "due"), "2026-03-01T11:00:00Z")
    reported["metadata"] = {"labels": {"job-name": "p-refresh-1"}}
    jobs: list[dict[str, Any]] = [
        {"metadata": {"name": "p-refresh-1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
        {"metadata": {"name": "p-refresh-2"}, "status": {"completionTime": "2026-03-01T12:00:00Z",
                                                         "conditions": [{"type": "Complete", "status": "True"}]}},
        {"metadata": {"name": "p-refresh-3"}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "lastTransitionTime": "2026-03-01T13:00:00Z"}]}},
        {"metadata": {"name": "p-refresh-4"}, "status": {}},  # still running
    ]  # fmt: skip
    now = datetime(2026, 3, 1, 14, tzinfo=UTC)
    found = status.unreported_jobs(jobs, [reported], "refresh", now)
    assert [(o.result, o.reason, o.time) for o in found] == [
        ("unreported", "no_outcome", "2026-03-01T12:00:00Z"),
        ("failed", "job_failed", "2026-03-01T13:00:00Z"),
    ]
    assert "p-refresh-3" in found[1].message and "kubectl logs job/p-refresh-3" in found[1].message


def _available(n: int = 1) -> dict[str, Any]:
    return {"status": {"availableReplicas": n}}


def _conds(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


def test_api_key_mode_ready_when_available() -> None:
    obs = status.Observed(generation=3, auth_mode="apiKey", endpoint=ENDPOINT, now=NOW, deployment=_available())
    st = status.compute_status({}, obs)
    assert _conds(st) == {
        "CredentialsReady": ("True", "SecretsFound"),
        "Seeded": ("True", "NotRequired"),
        "TokenFresh": ("True", "NotRequired"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "LoginValid": ("Unknown", "ProxyNotAvailable"),
        "Ready": ("True", "Ready"),
    }
    assert st["observedGeneration"] == 3 and st["endpoint"] == ENDPOINT and st["authMode"] == "apiKey"
    assert all(
        c["observedGeneration"] == 3 and c["lastTransitionTime"] == "2026-03-01T12:00:00Z" for c in st["conditions"]
    )
    assert st["tokenExpiresAt"] is None and st["seed"] is None


def test_transition_times_move_only_when_the_status_changes() -> None:
    first = status.compute_status({}, status.Observed(1, "apiKey", ENDPOINT, NOW, deployment=_available()))
    later = NOW + timedelta(minutes=5)
    missing = status.Observed(
        1, "apiKey", ENDPOINT, later, missing_secrets=["Secret k key api-key"], deployment=_available()
    )
    second = status.compute_status(first, missing)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["CredentialsReady"] == times["Ready"] == "2026-03-01T12:05:00Z"
    assert times["Available"] == times["Seeded"] == "2026-03-01T12:00:00Z"
    assert _conds(second)["Ready"] == ("False", "SecretNotFound")
    assert "Secret k key api-key" in status.condition(second, "Ready")["message"]


def _oauth(**kw: Any) -> status.Observed:
    base: dict[str, Any] = {
        "generation": 1, "auth_mode": "oauth", "endpoint": ENDPOINT, "now": NOW,
        "seed_secret": "creds", "seed_digest": "d1",
    }  # fmt: skip
    return status.Observed(**{**base, **kw})


def _outcome(command: str, result: str, reason: str, at: datetime, expires: datetime | None) -> status.Outcome:
    exp = status.rfc3339(expires) if expires else None
    return status.Outcome(command, result, reason, f"{command} {result}", exp, status.rfc3339(at))


def test_oauth_waits_for_the_seed_then_reports_expiry() -> None:
    seeding = status.compute_status({}, _oauth(seed_job="running"))
    assert _conds(seeding)["Seeded"] == ("False", "Seeding")
    assert _conds(seeding)["Available"] == ("False", "WaitingForSeed")
    assert _conds(seeding)["TokenFresh"] == ("Unknown", "NoTokenYet")

    seed = _outcome("seed", "copied", "forced", NOW, LATER)
    seeded = status.compute_status(seeding, _oauth(seed_job="succeeded", seed_outcome=seed, deployment=_available()))
    assert seeded["seed"]["digest"] == "d1" and seeded["seed"]["result"] == "copied"
    assert seeded["tokenExpiresAt"] == "2026-03-01T15:00:00Z"
    assert _conds(seeded)["Ready"] == ("True", "Ready")
    # Once recorded, the seed is remembered without its Job (the Job may be gone after its TTL).
    again = status.compute_status(seeded, _oauth(deployment=_available()))
    assert again["seed"] == seeded["seed"] and _conds(again)["Seeded"] == ("True", "Copied")
    assert ("Normal", "Seeded", "copied: seed copied") in status.events(seeding, seeded)
    assert ("Normal", "Ready", "the proxy serves requests") in status.events(seeding, seeded)
    assert status.events(seeded, again) == []


def _seeded_status() -> dict[str, Any]:
    seed = _outcome("seed", "copied", "forced", NOW - timedelta(hours=1), LATER)
    return status.compute_status({}, _oauth(seed_job="succeeded", seed_outcome=seed, deployment=_available()))


def test_invalid_grant_turns_token_fresh_false_with_what_to_do() -> None:
    before = _seeded_status()
    failed = _outcome("refresh", "failed", "invalid_grant", NOW, None)
    st = status.compute_status(before, _oauth(refresh_outcome=failed, deployment=_available()))
    fresh = status.condition(st, "TokenFresh")
    assert (fresh["status"], fresh["reason"]) == ("False", "InvalidGrant")
    assert "log in again" in fresh["message"] and "Secret creds" in fresh["message"]
    assert _conds(st)["Ready"] == ("False", "InvalidGrant")
    assert st["lastRefresh"] == {**failed.as_status()}
    told = "invalid_grant: refresh failed; log in again with Claude Code and put the new credentials in Secret creds"
    assert ("Warning", "RefreshFailed", told) in status.events(before, st)  # what to do, and where


def test_transient_refresh_failure_keeps_a_valid_token_fresh() -> None:
    before = _seeded_status()
    failed = _outcome("refresh", "failed", "network", NOW, None)
    st = status.compute_status(before, _oauth(refresh_outcome=failed, deployment=_available()))
    assert _conds(st)["TokenFresh"] == ("True", "RefreshRetrying")
    expired = status.compute_status(before, _oauth(refresh_outcome=failed, deployment=_available(), now=LATER))
    assert _conds(expired)["TokenFresh"] == ("False", "Network")


def test_refresh_updates_expiry_and_an_older_pod_does_not_roll_it_back() -> None:
    before = _seeded_status()
    new_expiry = LATER + timedelta(hours=8)
    refreshed = _outcome("refresh", "refreshed", "due", NOW, new_expiry)
    st = status.compute_status(before, _oauth(refresh_outcome=refreshed, deployment=_available()))
    assert st["tokenExpiresAt"] == status.rfc3339(new_expiry)
    assert _conds(st)["TokenFresh"] == ("True", "Refreshed")
    stale = _outcome("refresh", "failed", "network", NOW - timedelta(minutes=30), None)
    after = status.compute_status(st, _oauth(refresh_outcome=stale, deployment=_available()))
    assert after["lastRefresh"] == st["lastRefresh"] and after["tokenExpiresAt"] == st["tokenExpiresAt"]
    expired = status.compute_status(st, _oauth(refresh_outcome=refreshed, deployment=_available(), now=new_expiry))
    assert _conds(expired)["TokenFresh"] == ("False", "TokenExpired")


def test_failed_seed_and_missing_seed_secret() -> None:
    failed = status.compute_status({}, _oauth(seed_job="failed"))
    assert failed["seed"]["result"] == "failed"
    assert _conds(failed)["Seeded"] == ("False", "JobFailed")
    malformed = _outcome("seed", "failed", "malformed", NOW, None)
    st = status.compute_status({}, _oauth(seed_job="failed", seed_outcome=malformed))
    assert _conds(st)["Seeded"] == ("False", "Malformed")
    gone = status.compute_status({}, _oauth(seed_digest=None))
    assert _conds(gone)["Seeded"] == ("False", "SeedSecretNotFound")
    # Once seeded, the Secret may go: the volume holds the login.
    assert _conds(status.compute_status(_seeded_status(), _oauth(seed_digest=None)))["Seeded"][0] == "True"


def test_an_object_applied_from_the_same_desired_state_needs_no_write() -> None:
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "labels": {"a": "1"}},
        "spec": {"type": "NodePort"},
    }
    live = with_digest(desired)
    live["spec"]["clusterIP"] = "10.0.0.1"  # set by the server, not ours
    assert unchanged(live, desired)
    assert not unchanged(live, {**desired, "spec": {"type": "ClusterIP"}})
    assert not unchanged(None, desired)
    assert not unchanged(desired, desired)  # never applied by the operator: no digest
    assert (
        with_digest(desired)["metadata"]["annotations"][APPLIED_DIGEST]
        != with_digest({**desired, "metadata": {"name": "s"}})["metadata"]["annotations"][APPLIED_DIGEST]
    )
    assert "annotations" not in desired["metadata"]  # the desired object itself is left alone


def test_quantity() -> None:
    assert quantity("64Mi") == 64 * 2**20 and quantity("1G") == 10**9 and quantity("1.5Ki") == 1536
    assert quantity("1Gi") > quantity("1000Mi")
    with pytest.raises(ValueError):
        quantity("lots")


def _login(previous: dict[str, Any], login: dict[str, Any] | None, mode: str = "oauth") -> dict[str, Any]:
    obs = status.Observed(
        1, mode, ENDPOINT, NOW, deployment=_available(), credential_secret="claude-login",
        seed_secret="claude-login", seed_digest="d", login=login, login_probed=True,
        seed_outcome=status.Outcome("seed", "copied", "copied", "ok", "2026-03-01T13:00:00Z", "2026-03-01T11:00:00Z"),
    )  # fmt: skip
    return status.compute_status(previous, obs)


def test_a_refused_login_is_a_false_condition_with_what_to_do_and_blocks_ready() -> None:
    accepted = _login({}, {"state": "valid", "credential": "oauth_file"})
    assert _conds(accepted)["LoginValid"] == ("True", "LoginAccepted")
    assert _conds(accepted)["Ready"] == ("True", "Ready")
    leaked = "sk-ant-oat01-" + "y" * 50
    refused = _login(
        accepted,
        {"state": "refused", "credential": "oauth_file", "status": 401, "message": f"revoked {leaked} " + "z " * 200},
    )
    cond = status.condition(refused, "LoginValid")
    assert (cond["status"], cond["reason"]) == ("False", "LoginRefused")
    assert leaked not in cond["message"] and "HTTP 401" in cond["message"]
    assert "claude auth login" in cond["message"] and "claude-login" in cond["message"]  # the hint survives trimming
    assert len(cond["message"]) <= status.MAX_MESSAGE
    assert _conds(refused)["Ready"] == ("False", "LoginRefused")
    assert status.events(accepted, refused) == [
        ("Warning", "LoginRefused", cond["message"]),
        ("Warning", "NotReady", f"LoginRefused: LoginValid: {cond['message']}"),
    ]
    # The same verdict again, or a replica without one: no change, no Event.
    again = _login(
        refused,
        {"state": "refused", "credential": "oauth_file", "status": 401, "message": f"revoked {leaked} " + "z " * 200},
    )
    assert status.events(refused, again) == []
    unknown = _login(refused, {"state": "unknown"})
    assert status.condition(unknown, "LoginValid")["status"] == "False"
    assert status.events(refused, unknown) == []
    cleared = _login(unknown, {"state": "valid", "credential": "oauth_file"})
    assert [e[:2] for e in status.events(unknown, cleared)] == [("Normal", "LoginAccepted"), ("Normal", "Ready")]


@pytest.mark.parametrize(
    ("mode", "hint"),
    [("apiKey", "valid API key in Secret claude-login"), ("accessToken", "claude setup-token")],
)
def test_the_hint_fits_the_auth_mode(mode: str, hint: str) -> None:
    refused = _login({}, {"state": "refused", "credential": "api_key", "status": 401, "message": "no"}, mode)
    assert hint in status.condition(refused, "LoginValid")["message"]


def test_login_is_unknown_before_any_request_and_when_the_proxy_gives_no_answer() -> None:
    assert status.condition(_login({}, {"state": "unknown"}), "LoginValid")["reason"] == "NoRequestYet"
    assert status.condition(_login({}, None), "LoginValid")["reason"] == "ProxyUnreachable"
    assert _conds(_login({}, None))["Ready"] == ("True", "Ready")  # not knowing is no reason to be unready
