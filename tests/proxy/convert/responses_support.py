"""What the Responses API translation's tests share: the model, the creation time and the conversion options they
translate with, the echo of a request, and a message translated into a Response the official SDK validates."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response

from claude_proxy.config import Settings
from claude_proxy.convert.responses import ResponsesRequest, to_anthropic_request, to_response

CREATED = 1_760_000_000
MODEL = "claude-sonnet-4-6"
# Adaptive thinking on the 4.6 models only, and no model with fixed sampling.
OPTIONS = Settings(
    adaptive_thinking_models=r"^claude-(opus|sonnet)-4-6", fixed_sampling_models=r"(?!)"
).conversion_options()


def echo_of(payload: dict[str, Any]) -> dict[str, Any]:
    return to_anthropic_request(ResponsesRequest.model_validate({"model": MODEL, **payload}), OPTIONS).echo


def response_for(msg: dict[str, Any], json_tool: str | None = None, **payload: Any) -> Response:
    out = to_response(
        msg, model=MODEL, created_at=CREATED, echo=echo_of({"input": "x", **payload}), json_tool=json_tool
    )
    assert "output_text" not in out  # an SDK convenience, not part of the wire object
    return Response.model_validate(out)
