"""What a request brings in before its body: the headers the proxy reads, found in one pass, and the inbound key
check, as FastAPI dependencies (`Depends(openai_key)`, `Depends(anthropic_key)`, `Depends(request_headers)`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from claude_proxy.server.state import app_state, bearer


class RequestHeaders:
    """The request headers the proxy reads, from one pass over the ASGI header list (names come lower-cased)."""

    __slots__ = ("anthropic_version", "api_key", "authorization", "betas", "content_length")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length: str | None = None
        self.anthropic_version: str | None = None
        self.betas: list[str] = []  # every anthropic-beta header, in order
        for name, value in raw:
            if name == b"authorization":
                self.authorization = value
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
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


async def openai_key(request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> None:
    """The OpenAI routes' key check: `Authorization: Bearer <key>`."""
    state = app_state(request)
    if state.inbound:
        state.check_key(bearer(headers.authorization), "send Authorization: Bearer <one of PROXY_API_KEYS>")


async def anthropic_key(request: Request, headers: Annotated[RequestHeaders, Depends(request_headers)]) -> None:
    """Anthropic's routes' key check: the key as Anthropic's clients send it (`x-api-key`), or as a bearer token."""
    state = app_state(request)
    if state.inbound:
        presented = headers.api_key.strip() if headers.api_key else bearer(headers.authorization)
        state.check_key(presented, "send x-api-key: <one of PROXY_API_KEYS> (or Authorization: Bearer)")
