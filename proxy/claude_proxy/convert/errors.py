"""An Anthropic error answer as the proxy's `UpstreamError`, as the OpenAI routes answer it: type and request id
kept, the status one the OpenAI SDKs' retry rules fit (`tables.client_status`: 529 is 503), Anthropic's wording made
OpenAI's where clients act on it (context overflow: RockBot trims and retries on `maximum context length`), and a
refusal of the proxy's own credential (`credential_refusal`) said to be one. And a request that failed validation as
the field it names, the OpenAI way (`first_problem`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from claude_proxy.convert.tables import client_status, openai_error_type
from claude_proxy.errors import UpstreamError
from claude_proxy.retry import retry_after as retry_hint

_TOO_LONG = re.compile(r"prompt is too long:\s*(\d+)\s*tokens\s*>\s*(\d+)\s*maximum", re.IGNORECASE)
# What Anthropic says when it refuses a credential for what it is, whatever the request: a subscription (OAuth)
# token outside Claude Code (a 400 `invalid_request_error`), or one whose third-party use needs extra usage the
# account has not got. Matched in lower case.
REFUSALS = (
    "only authorized for use with claude code",
    "third-party apps now draw from your extra usage",
    "out of extra usage",
)
REFUSED_STATUS = 403  # what the OpenAI routes answer a refused credential with: no OpenAI SDK retries it
REFUSED = "upstream_credential_refused"  # its type and code


def credential_refusal(status: int, error_type: str | None, message: str | None, *, messages: bool = True) -> bool:
    """Whether an Anthropic error answer refuses the credential itself rather than the request: any 401, a 403
    `permission_error` to a Messages call (`messages`; the model list may be closed to a login that can send
    messages), and a 400 or 403 whose message is one of `REFUSALS`."""
    if status == 401:
        return True
    if messages and status == 403 and error_type == "permission_error":
        return True
    text = (message or "").lower()
    return status in (400, 403) and any(refusal in text for refusal in REFUSALS)


def upstream_error(status: int, body: Any, headers: Any, *, messages: bool = True) -> UpstreamError:
    """Build the error for an Anthropic error response (`body` is the parsed JSON or raw text/bytes) to a Messages
    call (`messages`) or another (the model list)."""
    request_id = headers.get("request-id") if headers is not None else None
    retry_after = None
    if headers is not None:
        # relayed as the upstream sent it; a hint in milliseconds only becomes whole seconds (at least 1)
        retry_after = headers.get("retry-after")
        if retry_after is None and (seconds := retry_hint(headers)) is not None:
            retry_after = str(max(1, round(seconds)))
    upstream_type = None
    message = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            upstream_type = err.get("type") if isinstance(err.get("type"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
        request_id = request_id or (body.get("request_id") if isinstance(body.get("request_id"), str) else None)
    if not message:
        content_type = (headers.get("content-type") or "") if headers is not None else ""
        if body is None and content_type and "json" not in content_type:
            message = (
                f"Anthropic API answered HTTP {status} with a {content_type.split(';')[0].strip()} page instead of "
                "an error object (from a proxy or gateway in between?)"
            )
        else:
            message = f"Anthropic API answered HTTP {status} without an error message"
    etype = openai_error_type(upstream_type, status)
    param = code = None
    upstream_message = message
    refused = credential_refusal(status, upstream_type, message, messages=messages)
    answered = client_status(status)
    match = _TOO_LONG.search(message) if status == 400 else None
    if refused:
        # The client's own key never goes upstream: this refusal is of the proxy's credential, which only its
        # operator can fix. Said plainly, with a status no client retries or blames on its request.
        message = (
            f"Anthropic refused the proxy's own upstream credential (HTTP {status}: {message}). This is "
            "not a fault of this request or of its API key, and retrying will not help: the proxy's operator must "
            "renew its login or configure another credential (`claude-proxy check` shows which is in use; "
            "Anthropic serves subscription tokens only to Claude Code, so a Console API key in ANTHROPIC_API_KEY "
            "is the way for other clients)."
        )
        answered, etype, code = REFUSED_STATUS, REFUSED, REFUSED
    elif match:
        used, limit = match.group(1), match.group(2)
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages resulted in {used} "
            "tokens. Please reduce the length of the messages."
        )
        etype, param, code = "invalid_request_error", "messages", "context_length_exceeded"
    elif status == 404 and upstream_type == "not_found_error" and message.startswith("model:"):
        message = (
            f"{message} (Anthropic does not know this model: GET /v1/models lists the models the proxy offers, and "
            "PROXY_MODEL_ALIASES maps other names onto them, e.g. gpt-4o=claude-sonnet-4-6)"
        )
        param, code = "model", "model_not_found"
    elif upstream_type:
        code = upstream_type
    if request_id:
        message = f"{message} (Anthropic request-id: {request_id})"
    return UpstreamError(
        message,
        status=answered,
        type=etype,
        upstream_type=upstream_type,
        request_id=request_id,
        retry_after=retry_after,
        param=param,
        code=code,
        upstream_message=upstream_message,
        upstream_status=status,
        credential_refused=refused,
    )


def first_problem(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The first of pydantic's validation errors (a `ValidationError`'s or a framework's `errors()`) as its message
    and the field it names the OpenAI way (`messages[0].content`; empty for the whole body)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ""
    for part in first.get("loc", ()):
        if part == "body":
            continue
        if isinstance(part, int):
            param += f"[{part}]"
        elif isinstance(part, str) and part.endswith("]"):
            continue  # pydantic's union tags such as 'function-after[...]'
        else:
            param += f".{part}" if param else str(part)
    return str(first.get("msg", "invalid request")), param
