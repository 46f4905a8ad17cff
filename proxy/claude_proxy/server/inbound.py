"""What a request brings in before its body: the headers the proxy reads, found in one pass, and the checks made of
them, as FastAPI dependencies (`Depends(openai_key)`, `Depends(anthropic_key)`, `Depends(request_headers)`): the
inbound key, and that a POST says its body is JSON.

A POST must be `Content-Type: application/json` (any parameters, such as `charset=utf-8`) or another JSON type
(`application/*+json`), else it is answered 415 before its body is read. Every client of the proxy sends JSON and says
so; a web page does not get to: the types a browser sends without asking the server first (a CORS "simple" request:
`text/plain`, forms, or none at all) are exactly the ones refused, so a page the owner visits cannot drive a proxy
that listens on their machine.

Without keys, a request that reached the proxy on a loopback address must be addressed to this machine too: its
`Host` is `localhost` (or a name under `.localhost`) or an IP address, else it is answered 403. A page whose name the
attacker points at 127.0.0.1 (DNS rebinding) is same-origin with the proxy as far as the browser knows, so it could
send JSON and read the answers; its requests carry its own name as `Host`, which is how they are told apart. With
keys, the key check is the guard, and any name may be used."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from claude_proxy.errors import ProxyError
from claude_proxy.server.state import app_state, bearer


class UnsupportedMediaType(ProxyError):
    status = 415
    type = "invalid_request_error"


class ForeignHost(ProxyError):
    status = 403
    type = "permission_error"


class RequestHeaders:
    """The request headers the proxy reads, from one pass over the ASGI header list (names come lower-cased)."""

    __slots__ = ("anthropic_version", "api_key", "authorization", "betas", "content_length", "content_type", "host")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length: str | None = None
        self.content_type: bytes | None = None
        self.host: bytes | None = None
        self.anthropic_version: str | None = None
        self.betas: list[str] = []  # every anthropic-beta header, in order
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value
            elif name == b"host":
                self.host = value
            elif name == b"anthropic-beta":
                self.betas.append(value.decode("latin-1"))
            elif name == b"x-api-key":
                self.api_key = value
            elif name == b"anthropic-version":
                self.anthropic_version = value.decode("latin-1").strip()

    @property
    def first_beta(self) -> str | None:
        """The client's first `anthropic-beta` header: what the translated routes pass on."""
        return self.betas[0] if self.betas else None


async def request_headers(request: Request) -> RequestHeaders:
    return RequestHeaders(request.scope["headers"])


def json_media_type(content_type: bytes | None) -> bool:
    """Whether a `Content-Type` value names JSON: `application/json` or `application/<anything>+json`, with any
    parameters, in any case."""
    if not content_type:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    kind, slash, subtype = media.partition(b"/")
    return kind == b"application" and slash == b"/" and (subtype == b"json" or subtype.endswith(b"+json"))


def require_json(request: Request, headers: RequestHeaders) -> None:
    """Refuse a POST whose body is not said to be JSON (415), before anything else is done with it."""
    if request.scope["method"] == "POST" and not json_media_type(headers.content_type):
        raise UnsupportedMediaType(
            "Unsupported Content-Type: send the request body as JSON, with Content-Type: application/json",
            code="unsupported_media_type",
        )


@functools.lru_cache(maxsize=64)  # per request: the few addresses a server listens on, parsed once
def loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)  # per request without keys: a client sends the same Host again and again
def local_host_header(host: bytes | None) -> bool:
    """Whether a `Host` header addresses this machine as only its own clients do: `localhost`, a name under
    `.localhost`, or an IP address (with any port); no header at all (HTTP/1.0) too."""
    if not host:
        return True
    name = host.decode("latin-1").strip().lower()
    # without the port: an IPv6 address is in brackets, [::1]:8080
    name = name[1:].partition("]")[0] if name.startswith("[") else name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def require_local_host(request: Request, headers: RequestHeaders) -> None:
    """Without keys: a request that came in on a loopback address must name this machine as its `Host` (403)."""
    server = request.scope.get("server")
    if server and loopback(str(server[0])) and not local_host_header(headers.host):
        raise ForeignHost(
            "this proxy has no PROXY_API_KEYS, so it answers only requests addressed to localhost or an IP address "
            "(Host), never to another name that points here; use http://localhost or http://127.0.0.1, or set "
            "PROXY_API_KEYS",
            code="host_not_allowed",
        )


async def openai_key(request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> None:
    """The OpenAI routes' checks: a POST's body is JSON; then `Authorization: Bearer <key>`, or without keys, a
    `Host` of this machine's."""
    require_json(request, headers)
    state = app_state(request)
    if not state.inbound:
        require_local_host(request, headers)
    else:
        state.check_key(bearer(headers.authorization), "send Authorization: Bearer <one of PROXY_API_KEYS>")


async def anthropic_key(request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> None:
    """Anthropic's routes' checks: a POST's body is JSON; then the key as Anthropic's clients send it (`x-api-key`)
    or as a bearer token, or without keys, a `Host` of this machine's."""
    require_json(request, headers)
    state = app_state(request)
    if not state.inbound:
        require_local_host(request, headers)
    else:
        presented = headers.api_key.strip() if headers.api_key else bearer(headers.authorization)
        state.check_key(presented, "send x-api-key: <one of PROXY_API_KEYS> (or Authorization: Bearer)")
