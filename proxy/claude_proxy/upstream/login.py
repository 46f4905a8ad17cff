"""Whether Anthropic accepts the proxy's credential, as its answers showed: the login's truth for /readyz, /metrics and
the operator's `LoginValid` condition.

Every upstream answer updates it: a refusal of the credential (`convert.errors.credential_refusal`: a 401, a 403
`permission_error` to a message, Anthropic's 400 for a subscription token outside Claude Code, …) marks the login
refused, keeping Anthropic's error message, masked and shortened, and which kind of credential was in use; any success
marks it valid again. Only the kind of credential is kept, never the credential: the message is masked for anything
shaped like a token, since /readyz is readable by whoever reaches the pod. Each change of verdict is logged once: a
WARNING when the login is refused, an INFO when it is accepted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from claude_proxy.redact import mask_secrets

log = logging.getLogger("claude_proxy.login")
MAX_MESSAGE = 300
MIN_CHECK_WAIT = 1.0  # the idle check never spins, whatever the clock says


def _masked(text: str) -> str:
    masked = mask_secrets(" ".join(text.split()))
    return masked if len(masked) <= MAX_MESSAGE else masked[: MAX_MESSAGE - 1] + "…"


class LoginState:
    """The last verdict on the credential: None before any upstream answer, then True or False."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.valid: bool | None = None
        self.credential: str | None = None  # the kind in use (`api_key`, `oauth_file`, ...), never its value
        self.status: int | None = None
        self.message = ""
        self.since: float | None = None  # when the verdict last changed
        self.answered: float | None = None  # when Anthropic last said anything of the credential

    def _set(self, valid: bool, credential: str, status: int | None, message: str) -> None:
        if valid is not self.valid:
            self.since = self.clock()
            if not valid:
                log.warning(
                    "Anthropic refused the proxy's credential (%s): HTTP %s %s; every request fails until the login "
                    "is renewed or another credential is configured",
                    credential,
                    status,
                    message,
                )
            elif self.valid is False:
                log.info("Anthropic accepts the proxy's credential (%s) again", credential)
        self.valid, self.credential, self.status, self.message = valid, credential, status, message

    def accepted(self, credential: str) -> None:
        self.answered = self.clock()
        if self.valid is True and self.credential == credential:
            return  # the hot path: nothing changes
        self._set(True, credential, None, "")

    def refused(self, credential: str, status: int, message: str) -> None:
        self.answered = self.clock()
        self._set(False, credential, status, _masked(message))

    def idle_for(self, started: float) -> float:
        """Seconds since Anthropic last answered about the credential (since `started` when it never has)."""
        return self.clock() - (self.answered if self.answered is not None else started)

    def gauge(self) -> float:
        """1 accepted, 0 refused, -1 before any answer."""
        return -1.0 if self.valid is None else float(self.valid)

    def as_json(self) -> dict[str, Any]:
        if self.valid is None:
            return {"state": "unknown"}
        info: dict[str, Any] = {"state": "valid" if self.valid else "refused", "credential": self.credential}
        if self.since is not None:
            info["since"] = datetime.fromtimestamp(self.since, UTC).isoformat().replace("+00:00", "Z")
        if not self.valid:
            info["status"] = self.status
            info["message"] = self.message
        return info


async def check_when_idle(
    state: LoginState,
    check: Callable[[], Awaitable[object]],
    interval: float,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Keep the verdict true without traffic: whenever Anthropic has said nothing of the credential for `interval`
    seconds, run `check` once (a call that validates the credential and generates nothing, `GET /v1/models`), whose
    answer updates `state` like any other. Real requests answered within the interval make the check unnecessary, so
    a busy proxy never sends one. Runs until cancelled; a failed check is retried after the next interval."""
    started = state.clock()
    while True:
        idle = state.idle_for(started)
        if idle < interval:
            await sleep(max(interval - idle, MIN_CHECK_WAIT))
            continue
        try:
            await check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the answer, if any, is already in `state`; the next interval tries again
            log.debug(f"idle login check: {type(exc).__name__}")
        started = state.clock()  # a check that got no answer waits a whole interval too
