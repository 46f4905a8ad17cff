"""One exception hierarchy for everything that can go wrong in a request, rendered as OpenAI's envelope by the server.

Messages never contain a key, a token or a prompt. The bottom of the package: it imports nothing of the project, so
every layer can raise these. How an Anthropic error answer becomes an `UpstreamError` is `convert.errors`.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """An error with an HTTP status, rendered as `{"error": {message, type, param, code}}`."""

    status: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ProxyError):
    status = 401
    type = "authentication_error"


class CredentialsUnavailable(ProxyError):
    """The proxy has no usable upstream credential (not the client's fault). `x-should-retry: false`: an attempt
    at once fares no better (only the operator's fix does), so SDK clients that honour the header do not retry."""

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"x-should-retry": "false"})


class UpstreamError(ProxyError):
    """Anthropic answered with an error status: `status` is the one the OpenAI routes answer with (529 is 503 there),
    `upstream_status` Anthropic's own; `credential_refused` when the answer refused the proxy's credential."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str,
        upstream_type: str | None = None,
        request_id: str | None = None,
        retry_after: str | None = None,
        param: str | None = None,
        code: str | None = None,
        upstream_message: str | None = None,
        upstream_status: int | None = None,
        credential_refused: bool = False,
    ) -> None:
        headers = {"retry-after": retry_after} if retry_after else {}
        if request_id:
            headers["x-upstream-request-id"] = request_id
        if credential_refused:
            headers["x-should-retry"] = "false"
        super().__init__(message, status=status, type=type, param=param, code=code, headers=headers)
        self.upstream_status = upstream_status if upstream_status is not None else status
        self.credential_refused = credential_refused
        self.upstream_type = upstream_type
        self.upstream_message = upstream_message if upstream_message is not None else message  # Anthropic's words
        self.request_id = request_id
        self.retry_after = retry_after


class UnusableAnswer(UpstreamError):
    """Anthropic answered something the proxy cannot use: not JSON, not an event stream, a malformed event, a
    stream cut short or broken off. Always 502 `upstream_error`; `code` says which, when a client may act on it."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, status=502, type="upstream_error", code=code)


class UpstreamUnavailable(ProxyError):
    """Anthropic could not be reached (connection refused, reset, DNS, TLS)."""

    status = 502
    type = "upstream_unavailable"


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout_error"
