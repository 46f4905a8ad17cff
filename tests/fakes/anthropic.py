"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 that validates requests as strictly as the real
API does (headers, auth, roles, block types, tool pairing, parameter ranges) and records what it received.

Tests script the answers: `fake.script(...)` queues replies (a message dict, an error, a broken reply, or a
callable); with nothing queued it answers `fake.default(record)` when set, else a short text message. A message reply
is rendered as SSE when the request asked to stream, so one scenario serves both modes. A reply's `_events` list
replaces the rendered stream: raw SSE bytes, numbers (pauses, during which a client disconnect is noticed) and
`RESET` (the connection is reset there, as a crashed gateway would).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pypdf

logging.getLogger("pypdf").setLevel(logging.ERROR)  # a refused PDF is the answer, not a log line

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOP_LEVEL = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "thinking",
    "stream",
    "output_config",
    "service_tier",
}
# anthropic-version values the API accepts: the proxy's own default and the one the current anthropic SDK sends.
API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
RESET = "reset-connection"  # in `_events`: reset the TCP connection at this point

BLOCK_TYPES = {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document"}


class Reject(Exception):
    def __init__(self, status: int, etype: str, message: str) -> None:
        super().__init__(message)
        self.status, self.etype, self.message = status, etype, message


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ErrorReply:
    status: int
    etype: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # send this body verbatim instead of the JSON envelope


@dataclass
class BrokenReply:
    """A 200 that declares the whole `body` but sends only its first `send` bytes, then resets the connection."""

    body: bytes
    send: int
    content_type: str = "application/json"


def message(
    *blocks: dict[str, Any],
    stop_reason: str | None = "end_turn",
    usage: dict[str, Any] | None = None,
    model: str | None = None,
    id: str = "msg_fake01",
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {"input_tokens": 12, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def thinking(value: str, signature: str = "sig-fake") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def ratelimit_headers(*, unified: bool) -> dict[str, str]:
    """Rate-limit headers as Anthropic sends them: the unified subscription windows for OAuth traffic, the Console
    limits (requests, tokens, input and output tokens; reset in RFC 3339) otherwise."""
    now = int(time.time())
    if unified:
        return {
            "anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-reset": str(now + 3600),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "anthropic-ratelimit-unified-fallback-percentage": "0.5",
            "anthropic-ratelimit-unified-5h-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": "0.42",
            "anthropic-ratelimit-unified-5h-reset": str(now + 3600),
            "anthropic-ratelimit-unified-7d-status": "allowed_warning",
            "anthropic-ratelimit-unified-7d-utilization": "0.81",
            "anthropic-ratelimit-unified-7d-reset": str(now + 3 * 86400),
            "anthropic-ratelimit-unified-overage-status": "rejected",
        }
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))
    out: dict[str, str] = {}
    for kind, limit, remaining in (
        ("requests", 4000, 3999),
        ("tokens", 400000, 390000),
        ("input-tokens", 300000, 295000),
        ("output-tokens", 100000, 95000),
    ):
        out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
        out[f"anthropic-ratelimit-{kind}-reset"] = reset
    return out


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def render_sse(msg: dict[str, Any], *, piece: int = 3, ping: bool = True) -> Iterator[bytes]:
    """Render a message as the event stream the real API would send for it (text and JSON split into fragments)."""
    start = dict(msg, content=[], stop_reason=None, stop_sequence=None)
    usage = dict(msg.get("usage") or {})
    start["usage"] = dict(usage, output_tokens=1)
    yield _sse("message_start", {"type": "message_start", "message": start})
    if ping:
        yield b'event: ping\ndata: {"type": "ping"}\n\n'
    for index, block in enumerate(msg["content"]):
        kind = block["type"]
        if kind == "text":
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            body = block["text"]
            for i in range(0, len(body), piece):
                delta = {"type": "text_delta", "text": body[i : i + piece]}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        elif kind == "thinking":
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            body = block["thinking"]
            for i in range(0, len(body), piece):
                delta = {"type": "thinking_delta", "thinking": body[i : i + piece]}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": block.get("signature", "")}
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        elif kind == "tool_use":
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": head})
            body = json.dumps(block["input"]) if block["input"] else ""
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                },
            )
            for i in range(0, len(body), piece):
                delta = {"type": "input_json_delta", "partial_json": body[i : i + piece]}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


# ---- strict validation ----------------------------------------------------------------------------------------------


def _bad(message: str) -> Reject:
    return Reject(400, "invalid_request_error", message)


MAX_PDF_PAGES = 100
DOCUMENT_KEYS = {"type", "source", "title", "context", "citations", "cache_control"}


def _check_document(block: dict[str, Any], where: str, role: str) -> None:
    """A document block as the real API checks it: a user turn's, a PDF (base64 that decodes to a PDF, or an https
    URL) or plain text, and nothing else."""
    if role != "user":
        raise _bad(f"{where}: document blocks are only allowed in user messages")
    extra = set(block) - DOCUMENT_KEYS
    if extra:
        raise _bad(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    if "title" in block and (not isinstance(block["title"], str) or not 1 <= len(block["title"]) <= 500):
        raise _bad(f"{where}.title: must be a string of 1 to 500 characters")
    src = block.get("source")
    if not isinstance(src, dict):
        raise _bad(f"{where}.source: Field required")
    kind = src.get("type")
    if kind == "base64":
        if set(src) != {"type", "media_type", "data"} or src["media_type"] != "application/pdf":
            raise _bad(f"{where}.source.media_type: Input should be 'application/pdf'")
        try:
            data = base64.b64decode(str(src["data"]), validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{where}.source.data: invalid base64 data") from None
        try:
            pages = len(pypdf.PdfReader(io.BytesIO(data)).pages)
        except Exception:  # whatever the reader trips on, the PDF is not one Anthropic reads
            raise _bad("The PDF specified was not valid.") from None
        if not pages:
            raise _bad("The PDF specified was not valid.")
        if pages > MAX_PDF_PAGES:
            raise _bad(f"A maximum of {MAX_PDF_PAGES} PDF pages may be provided.")
    elif kind == "text":
        if set(src) != {"type", "media_type", "data"} or src["media_type"] != "text/plain":
            raise _bad(f"{where}.source.media_type: Input should be 'text/plain'")
        if not isinstance(src["data"], str) or not src["data"]:
            raise _bad(f"{where}.source.data: must be a non-empty string")
    elif kind == "url":
        if set(src) != {"type", "url"} or not str(src.get("url", "")).startswith("https://"):
            raise _bad(f"{where}.source.url: must be an https URL")
    else:
        raise _bad(
            f"{where}.source.type: Input tag {kind!r} found using 'type' does not match any of the expected tags"
        )


def _check_blocks(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        if not content.strip():
            raise _bad(f"{where}: text content blocks must contain non-whitespace text")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _bad(f"{where}: content must be a non-empty string or list of blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise _bad(
                f"{where}.{i}: unknown content block type {block.get('type') if isinstance(block, dict) else block!r}"
            )
        kind = block["type"]
        if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"].strip()):
            raise _bad(f"{where}.{i}: text content blocks must contain non-whitespace text")
        if kind == "image":
            src = block.get("source") or {}
            if src.get("type") == "base64":
                if src.get("media_type") not in ("image/jpeg", "image/png", "image/gif", "image/webp"):
                    raise _bad(f"{where}.{i}.source.media_type: unsupported")
                if not isinstance(src.get("data"), str) or not src["data"]:
                    raise _bad(f"{where}.{i}.source.data: required")
            elif src.get("type") == "url":
                if not str(src.get("url", "")).startswith("https://"):
                    raise _bad(f"{where}.{i}.source.url: must be https")
            else:
                raise _bad(f"{where}.{i}.source: unsupported source type")
        if kind == "document":
            _check_document(block, f"{where}.{i}", role)
        if kind == "tool_use":
            if role != "assistant":
                raise _bad(f"{where}.{i}: tool_use blocks are only allowed in assistant messages")
            if not TOOL_ID.match(str(block.get("id", ""))):
                raise _bad(f"{where}.{i}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if not TOOL_NAME.match(str(block.get("name", ""))):
                raise _bad(f"{where}.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if not isinstance(block.get("input"), dict):
                raise _bad(f"{where}.{i}.input: Input should be a valid dictionary")
        if kind == "tool_result":
            if role != "user":
                raise _bad(f"{where}.{i}: tool_result blocks are only allowed in user messages")
            if not TOOL_ID.match(str(block.get("tool_use_id", ""))):
                raise _bad(f"{where}.{i}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if "content" in block:
                inner = block["content"]
                if isinstance(inner, list):
                    _check_blocks(inner, f"{where}.{i}.content", "user")
                elif not isinstance(inner, str):
                    raise _bad(f"{where}.{i}.content: must be a string or a list of blocks")
    return content


# ---- structured outputs: the JSON Schema subset of `output_config.format` and strict tools -----------------------
# From Anthropic's "JSON Schema limitations" and the 400s the real API answers (`For 'integer' type, property
# 'minimum' is not supported`, `For 'object' type, 'additionalProperties' must be explicitly set to false`).

SCHEMA_ANNOTATIONS = {"description", "title", "default", "$schema"}
SCHEMA_ANY = SCHEMA_ANNOTATIONS | {"type", "enum", "const", "anyOf", "allOf", "$ref", "$defs", "definitions"}
SCHEMA_BY_TYPE = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems"},
    "string": {"format", "pattern"},
}
SCHEMA_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
UNSUPPORTED_REGEX = re.compile(r"\\[1-9]|\\k<|\(\?<?[=!]|\\[bB]")
MAX_STRICT_TOOLS = 20
MAX_OPTIONAL = 24  # optional properties across all strict schemas of a request
MAX_UNIONS = 16  # anyOf / type-list nodes across all strict schemas of a request
# Models without structured outputs (before the 4.5 generation, Opus 4.1 aside).
NO_STRUCTURED_OUTPUTS = re.compile(r"^claude-(3|(opus|sonnet)-4(-0)?(-\d{8})?$|opus-4-1)")


def _schema_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _schema_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _schema_refs(v)]
    return []


def _pointer(root: dict[str, Any], ref: str, where: str) -> Any:
    if not ref.startswith("#"):
        raise _bad(f"{where}: external $ref is not supported: {ref}")
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            raise _bad(f"{where}: $ref {ref} could not be resolved")
        node = node[part]
    return node


def _check_schema_node(node: Any, where: str, root: dict[str, Any], counts: list[int]) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if isinstance(kind, list) or isinstance(node.get("anyOf"), list):
        counts[1] += 1
    for key in node:
        allowed = (
            SCHEMA_ANY.union(*(SCHEMA_BY_TYPE.get(k, set()) for k in kinds))
            if kinds
            else (SCHEMA_ANY | set().union(*SCHEMA_BY_TYPE.values()))
        )
        if key not in allowed:
            label = f"For '{kinds[0]}' type, property" if len(kinds) == 1 else "Property"
            raise _bad(f"{where}: {label} '{key}' is not supported")
    if "object" in kinds or "properties" in node:
        if node.get("additionalProperties") is not False:
            raise _bad(f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false")
        props = node.get("properties") or {}
        counts[0] += len([k for k in props if k not in (node.get("required") or [])])
        for sub in props.values():
            _check_schema_node(sub, where, root, counts)
    if "minItems" in node and node["minItems"] not in (0, 1):
        raise _bad(f"{where}: For 'array' type, 'minItems' values other than 0 and 1 are not supported")
    if "format" in node and node["format"] not in SCHEMA_FORMATS:
        raise _bad(f"{where}: For 'string' type, format '{node['format']}' is not supported")
    if "pattern" in node and UNSUPPORTED_REGEX.search(str(node["pattern"])):
        raise _bad(f"{where}: For 'string' type, the regex in 'pattern' uses unsupported features")
    if "enum" in node and any(isinstance(v, dict | list) for v in node["enum"]):
        raise _bad(f"{where}: enum values must be strings, numbers, booleans or null")
    for entry in node.get("allOf") or []:
        if isinstance(entry, dict) and "$ref" in entry:
            raise _bad(f"{where}: allOf with $ref is not supported")
    for key in ("anyOf", "allOf"):
        for sub in node.get(key) or []:
            _check_schema_node(sub, where, root, counts)
    if "items" in node:
        _check_schema_node(node["items"], where, root, counts)
    for defs in ("$defs", "definitions"):
        for sub in (node.get(defs) or {}).values():
            _check_schema_node(sub, where, root, counts)


def check_strict_schema(schema: Any, where: str, counts: list[int]) -> None:
    """Refuse what the real API refuses in a structured-output or strict-tool schema; add to `counts`
    ([optional properties, unions])."""
    if not isinstance(schema, dict):
        raise _bad(f"{where}: must be a JSON schema object")
    path: list[str] = []

    def visit(ref: str) -> None:
        if ref in path:
            raise _bad(f"{where}: Too many recursive definitions in schema")
        path.append(ref)
        for inner in _schema_refs(_pointer(schema, ref, where)) if ref != "#" else ["#"]:
            visit(inner)
        path.pop()

    for ref in _schema_refs(schema):
        visit(ref)
    _check_schema_node(schema, where, schema, counts)


def validate_structured(body: dict[str, Any]) -> None:
    """Strict tools and `output_config.format`: supported model, schema subset, per-request budgets."""
    counts = [0, 0]
    model = str(body.get("model", ""))
    fmt = (body.get("output_config") or {}).get("format")
    strict = [(i, t) for i, t in enumerate(body.get("tools") or []) if isinstance(t, dict) and "strict" in t]
    for i, tool in strict:
        if not isinstance(tool["strict"], bool):
            raise _bad(f"tools.{i}.strict: Input should be a valid boolean")
    strict = [(i, t) for i, t in strict if t["strict"]]
    if (fmt is not None or strict) and NO_STRUCTURED_OUTPUTS.search(model):
        raise _bad(f"'{model}' does not support structured outputs (output_config.format and strict tools)")
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        check_strict_schema(fmt["schema"], "output_config.format.schema", counts)
    if len(strict) > MAX_STRICT_TOOLS:
        raise _bad(f"tools: at most {MAX_STRICT_TOOLS} tools may use strict mode in one request")
    for i, tool in strict:
        check_strict_schema(tool.get("input_schema"), f"tools.{i}.input_schema", counts)
    if counts[0] > MAX_OPTIONAL or counts[1] > MAX_UNIONS:
        raise _bad(
            f"Schema is too complex: {counts[0]} optional parameters (at most {MAX_OPTIONAL}) and {counts[1]} "
            f"union-typed parameters (at most {MAX_UNIONS}) across the strict schemas of this request"
        )


def validate_messages_request(body: Any, *, fixed_sampling: bool = False) -> None:
    """Raise Reject for anything the real API would refuse (the subset the proxy can get wrong)."""
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    extra = set(body) - TOP_LEVEL
    if extra:
        raise _bad(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise _bad("max_tokens: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise _bad("system: must be a string or a list of text blocks")
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" or not str(block.get("text", "")).strip():
                raise _bad(f"system.{i}: system blocks must be non-empty text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required")
    tools = body.get("tools")
    tool_names = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools: must be a list")
        for i, tool in enumerate(tools):
            if not TOOL_NAME.match(str(tool.get("name", ""))):
                raise _bad(f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise _bad(f"tools.{i}.input_schema: must be a JSON schema of type object")
            if tool["name"] in tool_names:
                raise _bad(f"tools: Tool names must be unique: {tool['name']}")
            tool_names.add(tool["name"])
    merged: list[dict[str, Any]] = []  # the API merges consecutive same-role turns
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = _check_blocks(msg.get("content"), f"messages.{i}.content", role)
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] = merged[-1]["content"] + blocks
        else:
            merged.append({"role": role, "content": list(blocks)})
    if merged[0]["role"] != "user":
        raise _bad("messages: first message must use the user role")
    uses_tools = False
    for i, turn in enumerate(merged):
        types = [b["type"] for b in turn["content"]]
        if "tool_use" in types or "tool_result" in types:
            uses_tools = True
        if turn["role"] == "assistant":
            ids = [b["id"] for b in turn["content"] if b["type"] == "tool_use"]
            if len(set(ids)) != len(ids):
                raise _bad(f"messages.{i}: tool_use ids must be unique")
            if ids:
                nxt = merged[i + 1] if i + 1 < len(merged) else None
                if nxt is None:
                    raise _bad(
                        f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: "
                        + ", ".join(ids)
                    )
                results = {b["tool_use_id"] for b in nxt["content"] if b["type"] == "tool_result"}
                missing = [x for x in ids if x not in results]
                if missing:
                    raise _bad(
                        f"messages.{i + 1}: tool_use ids were found without tool_result blocks immediately after: "
                        + ", ".join(missing)
                    )
        else:
            prev = merged[i - 1] if i > 0 else None
            allowed = {b["id"] for b in prev["content"] if b["type"] == "tool_use"} if prev else set()
            seen_other = False
            for b in turn["content"]:
                if b["type"] == "tool_result":
                    if seen_other:
                        raise _bad(f"messages.{i}: tool_result blocks must come first in the user message")
                    if b["tool_use_id"] not in allowed:
                        raise _bad(
                            f"messages.{i}: unexpected tool_use_id found in tool_result blocks: {b['tool_use_id']}. "
                            "Each tool_result block must have a corresponding tool_use block in the previous message."
                        )
                else:
                    seen_other = True
    if uses_tools and not tools:
        raise _bad("Requests which include tool_use or tool_result blocks must define tools.")
    for i, turn in enumerate(merged):
        for b in turn["content"]:
            if b["type"] == "tool_use" and tools is not None and b["name"] not in tool_names:
                raise _bad(f"messages.{i}: tool_use names a tool that is not defined: {b['name']}")
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            raise _bad("tool_choice may only be specified while providing tools")
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise _bad("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in tool_names:
            raise _bad("tool_choice.name: names a tool that is not defined")
    temp = body.get("temperature")
    if temp is not None and not (0 <= temp <= 1):
        raise _bad("temperature: Input should be less than or equal to 1")
    if temp is not None and body.get("top_p") is not None:
        raise _bad("`temperature` and `top_p` cannot both be specified for this model.")
    if fixed_sampling and (temp is not None or body.get("top_p") is not None or body.get("top_k") is not None):
        raise _bad("temperature, top_p and top_k may not be set for this model")
    for i, stop in enumerate(body.get("stop_sequences") or []):
        if not isinstance(stop, str) or not stop.strip():
            raise _bad(f"stop_sequences.{i}: each stop sequence must contain non-whitespace")
    think = body.get("thinking")
    if think is not None:
        if think.get("type") == "enabled":
            budget = think.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                raise _bad("thinking.budget_tokens: Input should be greater than or equal to 1024")
            if budget >= body["max_tokens"]:
                raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`")
        elif think.get("type") not in ("adaptive", "disabled"):
            raise _bad("thinking.type: unknown")
        if think.get("type") != "disabled":
            if choice is not None and choice.get("type") in ("any", "tool"):
                raise _bad("Thinking may not be enabled when tool_choice forces tool use.")
            if temp is not None and temp != 1:
                raise _bad("`temperature` may only be set to 1 when thinking is enabled.")
            last_assistant = next((t for t in reversed(merged) if t["role"] == "assistant"), None)
            if (
                last_assistant is not None
                and any(b["type"] == "tool_use" for b in last_assistant["content"])
                and last_assistant["content"][0]["type"] not in ("thinking", "redacted_thinking")
                and merged[-1]["role"] == "user"
                and any(b["type"] == "tool_result" for b in merged[-1]["content"])
            ):
                raise _bad(
                    "messages: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is "
                    "enabled, a final `assistant` message must start with a thinking block."
                )
    cfg = body.get("output_config")
    if cfg is not None:
        fmt = cfg.get("format")
        if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
            raise _bad("output_config.format: must be {type: json_schema, schema}")
        if "effort" in cfg and cfg["effort"] not in ("low", "medium", "high", "max"):
            raise _bad("output_config.effort: unknown effort")
    validate_structured(body)


# ---- the server ----------------------------------------------------------------------------------------------------

Reply = dict[str, Any] | ErrorReply | BrokenReply | Callable[[Recorded], Any]


class _Server(ThreadingHTTPServer):
    # The standard library listens with a backlog of 5: a burst of new connections beyond it (a proxy opening its
    # pool under load, or reconnecting after resets) has SYNs dropped and retried a second or three later.
    request_queue_size = 1024
    daemon_threads = True


class FakeAnthropic:
    """`with FakeAnthropic() as fake:` serves on 127.0.0.1:<random port>; `fake.url` is the base URL."""

    def __init__(
        self,
        *,
        api_keys: tuple[str, ...] = ("sk-ant-api03-test-key",),
        oauth_tokens: tuple[str, ...] = ("sk-ant-oat01-test-token",),
        models: tuple[str, ...] = ("claude-sonnet-4-6", "claude-haiku-4-5-20251001"),
        models_refuse_oauth: bool = False,
        known_models_only: bool = False,
        fixed_sampling: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_keys = set(api_keys)
        self.oauth_tokens = set(oauth_tokens)
        self.models = models
        self.models_refuse_oauth = models_refuse_oauth
        # Refuse a message for a model not in `models`, as Anthropic does: 404 not_found_error "model: <name>".
        self.known_models_only = known_models_only
        self.fixed_sampling = fixed_sampling
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.stream_delay = 0.0  # seconds between SSE events
        self.disconnects = 0  # streams whose client went away before the end
        self.abandoned = 0  # non-streamed requests whose client went away before the answer was ready
        self.open_streams = 0
        self.active = 0  # POST /v1/messages requests being handled right now
        self.default: Callable[[Recorded], Any] | None = None  # the reply when nothing is scripted
        # Sent with every answer, as Anthropic sends its anthropic-ratelimit-* headers (see `ratelimit_headers`).
        self.response_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server = _Server((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def messages_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def authenticate(self, headers: dict[str, str]) -> bool:
        """True for OAuth, False for API key; raises Reject otherwise."""
        version = headers.get("anthropic-version")
        if not version:
            raise _bad("anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise _bad(f"anthropic-version: {version!r} is not a valid version")
        key, auth = headers.get("x-api-key"), headers.get("authorization")
        if key and auth:
            raise _bad("send either x-api-key or Authorization, not both")
        if key:
            if key not in self.api_keys:
                raise Reject(401, "authentication_error", "invalid x-api-key")
            return False
        if auth and auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
            betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",")]
            if "oauth-2025-04-20" not in betas:
                raise Reject(401, "authentication_error", "OAuth authentication is currently not supported.")
            if token not in self.oauth_tokens:
                raise Reject(401, "authentication_error", "OAuth token has expired or is invalid.")
            return True
        raise Reject(401, "authentication_error", "x-api-key header is required")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The head and the body go out in separate writes: with Nagle's algorithm the body then waits for the
            # client's delayed ACK of the head, about 40 ms per answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_fake{len(fake.requests):04d}")
                for k, v in {**fake.response_headers, **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> None:
                rid = f"req_fake{len(fake.requests):04d}"
                body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": rid}
                self._send_json(status, body, headers)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake._lock:
                    fake.requests.append(Recorded("GET", url.path, headers, dict(parse_qs(url.query))))
                if url.path != "/v1/models":
                    return self._error(404, "not_found_error", f"no route {url.path}")
                try:
                    oauth = fake.authenticate(headers)
                except Reject as rej:
                    return self._error(rej.status, rej.etype, rej.message)
                if oauth and fake.models_refuse_oauth:
                    return self._error(403, "permission_error", "OAuth tokens may not list models")
                data = [
                    {"type": "model", "id": m, "display_name": m, "created_at": "2025-10-01T00:00:00Z"}
                    for m in fake.models
                ]
                self._send_json(
                    200,
                    {
                        "data": data,
                        "has_more": False,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None,
                    },
                )

            def do_POST(self) -> None:
                with fake._lock:
                    fake.active += 1
                try:
                    self._post()
                finally:
                    with fake._lock:
                        fake.active -= 1

            def _reset(self) -> None:
                """Abort the connection with a TCP reset (SO_LINGER 0), as a crashed peer would."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                except OSError:
                    pass

            def _post(self) -> None:
                url = urlparse(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                raw = self.rfile.read(int(headers.get("content-length", "0") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                record = Recorded("POST", url.path, headers, body)
                with fake._lock:
                    fake.requests.append(record)
                if url.path == "/v1/messages/count_tokens":
                    return self._count_tokens(headers, body)
                if url.path != "/v1/messages":
                    return self._error(404, "not_found_error", f"no route {url.path}")
                try:
                    fake.authenticate(headers)
                    if body is None:
                        raise _bad("request body is not valid JSON")
                    validate_messages_request(body, fixed_sampling=fake.fixed_sampling)
                    if fake.known_models_only and body["model"] not in fake.models:
                        raise Reject(404, "not_found_error", f"model: {body['model']}")
                except Reject as rej:
                    return self._error(rej.status, rej.etype, rej.message)
                with fake._lock:
                    reply: Any = fake.replies.popleft() if fake.replies else None
                if reply is None and fake.default is not None:
                    reply = fake.default
                if callable(reply):
                    reply = reply(record)
                    if self._peer_closed():
                        with fake._lock:
                            fake.abandoned += 1
                        self.close_connection = True
                        return None
                if reply is None:
                    reply = message(text("Hello from the fake."))
                if isinstance(reply, BrokenReply):
                    self.send_response(200)
                    self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(reply.body)))
                    self.send_header("request-id", f"req_fake{len(fake.requests):04d}")
                    self.end_headers()
                    self.wfile.write(reply.body[: reply.send])
                    self.wfile.flush()
                    time.sleep(0.05)  # let the partial body reach the client before the reset
                    return self._reset()
                if isinstance(reply, ErrorReply):
                    if reply.raw is not None:
                        data = reply.raw
                        self.send_response(reply.status)
                        self.send_header("content-type", reply.headers.get("content-type", "text/html"))
                        self.send_header("content-length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return None
                    return self._error(reply.status, reply.etype, reply.message, reply.headers)
                reply = dict(reply, model=reply.get("model") or body["model"])
                if not body.get("stream"):
                    return self._send_json(200, reply)
                return self._stream(reply)

            def _count_tokens(self, headers: dict[str, str], body: Any) -> None:
                """POST /v1/messages/count_tokens: the request checked as a message would be (it takes no
                max_tokens and no stream), answered with a count derived from the text it holds."""
                try:
                    fake.authenticate(headers)
                    if not isinstance(body, dict):
                        raise _bad("request body is not valid JSON")
                    extra = set(body) - (TOP_LEVEL - {"max_tokens", "stream", "stop_sequences", "temperature"})
                    if extra:
                        raise _bad(f"{sorted(extra)[0]}: Extra inputs are not permitted")
                    validate_messages_request({**body, "max_tokens": 128000}, fixed_sampling=fake.fixed_sampling)
                except Reject as rej:
                    return self._error(rej.status, rej.etype, rej.message)
                with fake._lock:
                    reply: Any = fake.replies.popleft() if fake.replies else None
                if isinstance(reply, ErrorReply):
                    return self._error(reply.status, reply.etype, reply.message, reply.headers)
                return self._send_json(200, {"input_tokens": 1 + len(json.dumps(body.get("messages"))) // 4})

            def _peer_closed(self) -> bool:
                """True when the client has closed its end (it gave up on this request)."""
                try:
                    return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True

            def _stream(self, reply: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("request-id", f"req_fake{len(fake.requests):04d}")
                for k, v in fake.response_headers.items():
                    self.send_header(k, v)
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                with fake._lock:
                    fake.open_streams += 1
                try:
                    events = reply["_events"] if "_events" in reply else render_sse(reply)
                    for chunk in events:
                        if chunk == RESET:
                            self.wfile.flush()
                            time.sleep(0.05)
                            self._reset()
                            return
                        if isinstance(chunk, int | float):  # a pause scripted inside the stream
                            deadline = time.monotonic() + chunk
                            while time.monotonic() < deadline:
                                if self._peer_closed():
                                    raise ConnectionResetError("client closed the stream during a pause")
                                time.sleep(0.01)
                            continue
                        if fake.stream_delay:
                            time.sleep(fake.stream_delay)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.disconnects += 1
                finally:
                    with fake._lock:
                        fake.open_streams -= 1

        return Handler
