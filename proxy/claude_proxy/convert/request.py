"""Chat completions request -> Anthropic Messages request: one function per parameter, then one step for the rules
that cross parameters (`_combine`).

No I/O, no environment, no globals, no logging; inputs are never mutated. Everything the caller can configure comes
in through `Options`. Errors are `InvalidRequest` naming the offending field (`param`), never the content.

Mapping notes (OpenAI field -> Anthropic field):
- system/developer messages, wherever they stand -> the one top-level `system`, in order.
- user parts: text -> text; image_url data: URL -> base64 image; https: URL -> url image; file (file_data: a PDF
  or plain text, as a data: URL or bare base64) -> a document block (base64 PDF source, or text source), file_url
  (https:) -> a URL document; file_id, other media types and other part types -> 400 naming the part. Documents are
  counted and measured against Anthropic's limits before anything goes upstream (`MAX_DOCUMENTS`,
  `MAX_DOCUMENT_BYTES`). Tool results take text, image and file parts alike.
- assistant tool_calls -> tool_use (arguments must be a JSON object); tool/function messages -> tool_result blocks
  in one user turn, results first. A tool call left without a result gets an explicit error result; a result without
  its call becomes plain text; tool history without `tools` gets minimal tool definitions and tool_choice none.
- tool_choice auto|none|required|named -> auto|none|any|tool; parallel_tool_calls=false -> disable_parallel_tool_use.
- response_format json_schema -> output_config.format (structured outputs), the schema rewritten to the subset the
  API accepts (schema.py); json_object -> a forced tool whose input object is returned as the message content (falls
  back to an instruction when tools or thinking forbid it). A json_schema that structured outputs cannot take (a
  recursive one, or a model without structured outputs) goes the json_object way, with the schema as the tool's.
- function strict: true -> Anthropic's strict tool use, schema rewritten likewise, on the models that have it and
  within the API's per-request budgets for strict schemas; a tool past them is sent without strict.
- logprobs/top_logprobs and audio output cannot be answered: a 400 naming the parameter.
- reasoning_effort -> thinking (budget_tokens, or adaptive + output_config.effort on the models that take it).
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from claude_proxy.convert.schema import Complexity, UnsupportedSchema, complexity, strict_schema
from claude_proxy.convert.wire import (
    AssistantMessage,
    ChatRequest,
    FileData,
    FilePart,
    FunctionMessage,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from claude_proxy.errors import InvalidRequest

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^,;]*)*?);base64,(?P<data>.*)$", re.DOTALL)
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
PDF, PLAIN_TEXT = "application/pdf", "text/plain"
DOCUMENT_TYPES = (PDF, PLAIN_TEXT)
# Anthropic's limits for documents (PDF support): a request of at most 32 MB and at most 100 PDF pages. A page
# count needs the PDF parsed (Anthropic says it, as a 400); every document is at least a page, so more than 100
# documents, or more than 32 MB of them, can never be served and are refused before the upstream call.
MAX_DOCUMENTS = 100
MAX_DOCUMENT_BYTES = 32_000_000  # of document data as sent (base64 or text) in one request, as PROXY_MAX_BODY_BYTES
TITLE_MAX = 255
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".csv", ".log")

MISSING_RESULT = "No result was returned for this tool call."
HISTORY_TOOL_DESCRIPTION = "Tool used earlier in this conversation (its definition was not sent with this request)."
JSON_TOOL_DESCRIPTION = "Give the final answer as a JSON object. Always answer through this tool."
JSON_INSTRUCTION = "Respond only with a single valid JSON object, with no text before or after it."
SCHEMA_INSTRUCTION = (
    "Respond only with a single valid JSON object matching this JSON schema, with no text before or after it:"
)
# Models without structured outputs (`output_config.format`, strict tools): those before the 4.5 generation.
NO_STRUCTURED_OUTPUTS = r"^claude-(3|(opus|sonnet)-4(-0)?(-\d{8})?$|opus-4-1)"
# The API's budgets for the strict schemas of one request (tools marked strict, optional properties, unions).
STRICT_TOOLS_MAX = 20
STRICT_OPTIONAL_MAX = 24
STRICT_UNIONS_MAX = 16
START_PLACEHOLDER = "(continued)"


@dataclass(frozen=True)
class ThinkingBudgets:
    """Token budgets for `reasoning_effort` on models that take `thinking: {type: enabled}` (their defaults are the
    settings')."""

    minimal: int
    low: int
    medium: int
    high: int


_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


@dataclass(frozen=True)
class Options:
    """What the caller configures, built from the settings (`Settings.conversion_options`), which hold the defaults."""

    default_max_tokens: int
    default_model: str | None
    aliases: Mapping[str, str]
    adaptive_thinking: re.Pattern[str]
    fixed_sampling: re.Pattern[str]
    budgets: ThinkingBudgets
    prompt_cache: bool
    no_structured_outputs: re.Pattern[str] = re.compile(NO_STRUCTURED_OUTPUTS)


@dataclass(frozen=True)
class Translation:
    """An Anthropic request plus what the response translation needs to know about it."""

    body: dict[str, Any]
    model: str
    json_tool: str | None = None  # name of the forced tool whose input is the answer (json_object mode)


# ---- model names ---------------------------------------------------------------------------------------------------


def resolve_model(name: str, options: Options) -> str:
    """Client model name -> Anthropic model id: aliases, provider prefixes (`anthropic/…`) and dots (`4.5` -> `4-5`)."""
    name = name.strip() or (options.default_model or "")
    if not name:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if name in options.aliases:
        return options.aliases[name]
    normal = name.rsplit("/", 1)[-1].replace(".", "-")
    return options.aliases.get(normal, normal)


# ---- request -------------------------------------------------------------------------------------------------------


def _text_of(content: str | list[Any], param: str) -> str:
    """Text of a system/developer message (only text parts make sense there)."""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, TextPart):
            raise InvalidRequest(f"{param} may only contain text parts, got {part.type!r}", param=f"{param}[{j}].type")
        texts.append(part.text)
    return "\n".join(texts)


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if not match:
            raise InvalidRequest("image data URLs must look like data:image/png;base64,<data>", param=param)
        mime = match.group("mime").lower()
        if mime not in IMAGE_TYPES:
            raise InvalidRequest(
                f"unsupported image type {mime!r}; use one of {', '.join(sorted(IMAGE_TYPES))}", param=param
            )
        data = match.group("data").strip()
        try:
            b64decode(data[:4096] + "=" * (-len(data[:4096]) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("image data URL is not valid base64", param=param) from None
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    if url.startswith("https://"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url.url must be an https: URL or a data: URL with base64 image data", param=param)


class Documents:
    """The documents of one request so far, held to Anthropic's count and size limits as they are added."""

    def __init__(self) -> None:
        self.count = 0
        self.size = 0

    def add(self, block: dict[str, Any], param: str) -> dict[str, Any]:
        self.count += 1
        self.size += len(block["source"].get("data") or block["source"].get("url") or "")
        if self.count > MAX_DOCUMENTS:
            raise InvalidRequest(
                f"too many documents: at most {MAX_DOCUMENTS} per request (Anthropic reads at most 100 PDF pages "
                "per request)",
                param=param,
                code="too_many_documents",
            )
        if self.size > MAX_DOCUMENT_BYTES:
            raise InvalidRequest(
                f"documents too large: at most {MAX_DOCUMENT_BYTES // 1_000_000} MB of document data per request "
                "(Anthropic's request limit)",
                status=413,
                param=param,
                code="request_too_large",
            )
        return block


def _base64_ok(data: str) -> bool:
    head = data[:4096]
    try:
        b64decode(head + "=" * (-len(head) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _inline_type(data: str, filename: str | None) -> str | None:
    """The media type of bare base64 file data: a PDF by its signature, plain text by the file's name."""
    try:
        head = b64decode(data[:12] + "=" * (-len(data[:12]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if head.startswith(b"%PDF-"):
        return PDF
    if filename and filename.lower().endswith(_TEXT_SUFFIXES):
        return PLAIN_TEXT
    return None


def document_block(file: FileData, param: str, documents: Documents) -> dict[str, Any]:
    """A `file` content part as an Anthropic document block; `param` names the part (`messages[0].content[1]`)."""
    if file.file_id:
        raise InvalidRequest(
            "file parts with file_id are not supported: file ids belong to OpenAI's Files API, which this proxy does "
            "not have; send the file's content as file_data (data:application/pdf;base64,... or "
            "data:text/plain;base64,...)",
            param=f"{param}.file.file_id",
        )
    block: dict[str, Any]
    if file.file_data:
        raw = file.file_data.strip()
        where = f"{param}.file.file_data"
        if raw.startswith("data:"):
            match = _DATA_URL.match(raw)
            if not match:
                raise InvalidRequest("file data URLs must look like data:application/pdf;base64,<data>", param=where)
            mime, data = match.group("mime").lower(), match.group("data").strip()
        else:
            data = raw
            mime = _inline_type(data, file.filename) or ""
            if not mime:
                raise InvalidRequest(
                    "file_data without a data: URL must be a base64 PDF (or plain text with a .txt file name); send "
                    "data:<media type>;base64,<data>",
                    param=where,
                )
        if mime not in DOCUMENT_TYPES:
            raise InvalidRequest(
                f"unsupported file type {mime!r}: Anthropic reads PDF ({PDF}) and plain text ({PLAIN_TEXT}) documents",
                param=where,
            )
        if not data or not _base64_ok(data):
            raise InvalidRequest("file_data is not valid base64", param=where)
        if mime == PDF:
            block = {"type": "document", "source": {"type": "base64", "media_type": PDF, "data": data}}
        else:
            try:
                text = b64decode(data + "=" * (-len(data) % 4), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise InvalidRequest("text/plain file_data must be base64 of UTF-8 text", param=where) from None
            if not text.strip():
                raise InvalidRequest("text/plain file_data is empty", param=where)
            block = {"type": "document", "source": {"type": "text", "media_type": PLAIN_TEXT, "data": text}}
    elif file.file_url:
        if not file.file_url.startswith("https://"):
            raise InvalidRequest("file_url must be an https: URL of a PDF", param=f"{param}.file.file_url")
        block = {"type": "document", "source": {"type": "url", "url": file.file_url}}
    else:
        raise InvalidRequest("file parts need file_data (or file_url)", param=f"{param}.file")
    if file.filename and file.filename.strip():
        block["title"] = file.filename.strip()[:TITLE_MAX]
    return documents.add(block, param)


def _user_blocks(content: str | list[Any], param: str, documents: Documents) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            if part.text.strip():
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url, f"{param}[{j}].image_url.url"))
        elif isinstance(part, FilePart):
            blocks.append(document_block(part.file, f"{param}[{j}]", documents))
        elif part.type in ("text", "image_url", "file"):
            raise InvalidRequest(f"malformed {part.type} content part", param=f"{param}[{j}]")
        else:
            raise InvalidRequest(f"unsupported content part type {part.type!r}", param=f"{param}[{j}].type")
    return blocks


def _assistant_text(content: str | list[Any] | None, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks = []
    for j, part in enumerate(content):
        text = getattr(part, "text", None)
        if text is None and part.type == "refusal":
            text = getattr(part, "refusal", None)
        if not isinstance(text, str):
            raise InvalidRequest(f"assistant content parts must be text, got {part.type!r}", param=f"{param}[{j}].type")
        if text.strip():
            blocks.append({"type": "text", "text": text})
    return blocks


def _arguments(raw: str | dict[str, Any] | None, param: str) -> dict[str, Any]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("tool call arguments are not valid JSON", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=param)
    return value


def _tool_id(raw: str, fallback: str) -> str:
    return _ID_UNSAFE.sub("_", raw) if raw else fallback


def _result_content(content: Any, param: str, documents: Documents) -> str | list[dict[str, Any]] | None:
    """A tool message's content as tool_result content (None when there is nothing to send)."""
    if content is None:
        return None
    if isinstance(content, str):
        return content if content.strip() else None
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
        blocks: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            if part["type"] == "text" and isinstance(part.get("text"), str):
                if part["text"].strip():
                    blocks.append({"type": "text", "text": part["text"]})
            elif part["type"] == "image_url" and isinstance(part.get("image_url"), dict):
                blocks.append(_image_block(str(part["image_url"].get("url", "")), f"{param}[{j}].image_url.url"))
            elif part["type"] == "file" and isinstance(part.get("file"), dict):
                try:
                    file = FileData.model_validate(part["file"])
                except ValueError:
                    raise InvalidRequest("malformed file content part", param=f"{param}[{j}].file") from None
                blocks.append(document_block(file, f"{param}[{j}]", documents))
            else:
                blocks.append({"type": "text", "text": orjson.dumps(part).decode()})
        return blocks or None
    return orjson.dumps(content).decode()


def _result_as_text(tool_id: str, name: str | None, content: str | list[dict[str, Any]] | None) -> dict[str, Any]:
    if isinstance(content, list):
        body = "\n".join(b["text"] for b in content if b.get("type") == "text") or "(non-text result)"
    else:
        body = content or "(empty result)"
    label = f"{name} " if name else ""
    return {"type": "text", "text": f"[Result of tool call {label}{tool_id}]\n{body}"}


class _Turns:
    """Builds the alternating user/assistant turns and keeps every tool_use paired with a tool_result."""

    def __init__(self) -> None:
        self.turns: list[dict[str, Any]] = []
        self.pending: dict[str, str] = {}  # tool_use id -> name, from the latest assistant turn
        self.answered: set[str] = set()
        self.history_tools: dict[str, None] = {}  # tool names used in history, in order
        self.legacy_calls: list[tuple[str, str]] = []  # (id, name) of legacy function_call turns, unanswered
        self.documents = Documents()

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": role, "content": list(blocks)})

    def flush(self) -> None:
        missing = [i for i in self.pending if i not in self.answered]
        self.add(
            "user",
            [{"type": "tool_result", "tool_use_id": i, "content": MISSING_RESULT, "is_error": True} for i in missing],
        )
        self.pending = {}
        self.answered = set()

    def result(self, tool_id: str, name: str | None, content: str | list[dict[str, Any]] | None) -> None:
        if tool_id in self.pending and tool_id not in self.answered:
            self.answered.add(tool_id)
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
            if content is not None:
                block["content"] = content
            self.add("user", [block])
        else:
            self.add("user", [_result_as_text(tool_id, name, content)])

    def assistant(self, blocks: list[dict[str, Any]], calls: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.flush()
        uses = []
        for tool_id, name, args in calls:
            if tool_id in self.pending:
                raise InvalidRequest(f"duplicate tool call id {tool_id!r} in one assistant message", param="messages")
            self.pending[tool_id] = name
            self.history_tools[name] = None
            uses.append({"type": "tool_use", "id": tool_id, "name": name, "input": args})
        self.add("assistant", blocks + uses)


def _convert_messages(req: ChatRequest) -> tuple[list[str], _Turns]:
    system: list[str] = []
    turns = _Turns()
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}]"
        if isinstance(msg, SystemMessage):
            text = _text_of(msg.content, f"{param}.content")
            if text.strip():
                system.append(text)
        elif isinstance(msg, UserMessage):
            turns.flush()
            turns.add("user", _user_blocks(msg.content, f"{param}.content", turns.documents))
        elif isinstance(msg, AssistantMessage):
            calls = []
            for k, call in enumerate(msg.tool_calls or []):
                cparam = f"{param}.tool_calls[{k}]"
                if not TOOL_NAME.match(call.function.name):
                    raise InvalidRequest(
                        "tool names must match ^[a-zA-Z0-9_-]{1,128}$", param=f"{cparam}.function.name"
                    )
                args = _arguments(call.function.arguments, f"{cparam}.function.arguments")
                calls.append((_tool_id(call.id, f"call_{i}_{k}"), call.function.name, args))
            if msg.function_call is not None and not msg.tool_calls:
                fc = msg.function_call
                if not TOOL_NAME.match(fc.name):
                    raise InvalidRequest(
                        "function names must match ^[a-zA-Z0-9_-]{1,128}$", param=f"{param}.function_call.name"
                    )
                legacy_id = f"call_fn_{i}"
                calls.append((legacy_id, fc.name, _arguments(fc.arguments, f"{param}.function_call.arguments")))
                turns.legacy_calls.append((legacy_id, fc.name))
            turns.assistant(_assistant_text(msg.content, f"{param}.content"), calls)
        elif isinstance(msg, ToolMessage):
            tool_id = _tool_id(msg.tool_call_id, "")
            content = _result_content(msg.content, f"{param}.content", turns.documents)
            turns.result(tool_id, turns.pending.get(tool_id), content)
        elif isinstance(msg, FunctionMessage):
            match = next((c for c in reversed(turns.legacy_calls) if c[1] == msg.name), None)
            if match is not None:
                turns.legacy_calls.remove(match)
            tool_id = match[0] if match else f"call_fn_orphan_{i}"
            turns.result(tool_id, msg.name, _result_content(msg.content, f"{param}.content", turns.documents))
    turns.flush()
    return system, turns


def _tool_defs(req: ChatRequest) -> tuple[list[dict[str, Any]], list[int]]:
    """Anthropic tool definitions, and the positions of those the client marked strict."""
    defs: list[dict[str, Any]] = []
    strict: list[int] = []
    seen: set[str] = set()
    functions = [(f"tools[{i}].function", t.function) for i, t in enumerate(req.tools or [])]
    functions += [(f"functions[{i}]", f) for i, f in enumerate(req.functions or [])]
    for param, fn in functions:
        if not TOOL_NAME.match(fn.name):
            raise InvalidRequest("tool names must match ^[a-zA-Z0-9_-]{1,128}$", param=f"{param}.name")
        if fn.name in seen:
            raise InvalidRequest(f"tool {fn.name!r} is defined twice", param=f"{param}.name")
        seen.add(fn.name)
        schema = dict(fn.parameters) if fn.parameters else {"type": "object", "properties": {}}
        if "type" not in schema:
            schema["type"] = "object"
        elif schema["type"] != "object":
            raise InvalidRequest("tool parameters must be a JSON schema of type object", param=f"{param}.parameters")
        tool: dict[str, Any] = {"name": fn.name, "input_schema": schema}
        if fn.description:
            tool["description"] = fn.description
        if fn.strict:
            strict.append(len(defs))
        defs.append(tool)
    return defs, strict


def _make_strict(tools: list[dict[str, Any]], wanted: list[int], spent: Complexity) -> None:
    """Mark the wanted tools strict, schemas rewritten, while the request's budgets allow; the others stay as sent."""
    count = 0
    for i in wanted:
        try:
            schema = strict_schema(tools[i]["input_schema"])
        except UnsupportedSchema:
            continue
        total = spent + complexity(schema)
        if count >= STRICT_TOOLS_MAX or total.optional > STRICT_OPTIONAL_MAX or total.unions > STRICT_UNIONS_MAX:
            continue
        tools[i] = {**tools[i], "input_schema": schema, "strict": True}
        spent, count = total, count + 1


def _refuse_unanswerable(req: ChatRequest) -> None:
    """Parameters whose answer the client would read, and that Anthropic cannot give."""
    if req.n is not None and req.n > 1:
        raise InvalidRequest("n > 1 is not supported: Anthropic returns one choice per request", param="n")
    if req.logprobs:
        raise InvalidRequest(
            "logprobs are not supported: Anthropic does not return token log probabilities", param="logprobs"
        )
    if req.top_logprobs:
        raise InvalidRequest(
            "top_logprobs is not supported: Anthropic does not return token log probabilities", param="top_logprobs"
        )
    if req.audio is not None or (req.modalities and "audio" in req.modalities):
        raise InvalidRequest("audio output is not supported: Anthropic answers in text", param="modalities")


def _tool_choice(req: ChatRequest, names: Iterable[str]) -> dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None and req.function_call is not None:
        choice = req.function_call if isinstance(req.function_call, str) else None
        if choice is None:
            named = req.function_call.name  # type: ignore[union-attr]
            if named not in names:
                raise InvalidRequest(f"function_call names unknown function {named!r}", param="function_call")
            return {"type": "tool", "name": named}
    if choice is None:
        result: dict[str, Any] | None = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    else:
        named = choice.function.name
        if named not in names:
            raise InvalidRequest(f"tool_choice names unknown tool {named!r}", param="tool_choice")
        result = {"type": "tool", "name": named}
    if req.parallel_tool_calls is False:
        result = dict(result or {"type": "auto"})
        result["disable_parallel_tool_use"] = True
    return result


def _stop_sequences(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    return [s for s in items if s.strip()]


def _cache_last(blocks: list[dict[str, Any]]) -> None:
    for block in reversed(blocks):
        if block.get("type") in ("text", "image", "document", "tool_use", "tool_result") and not (
            block.get("type") == "text" and not block.get("text")
        ):
            block["cache_control"] = {"type": "ephemeral"}
            return


def _messages(req: ChatRequest) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """`messages` -> Anthropic's `system` texts and alternating turns (starting with a user turn, tool results first
    in theirs), and the names of the tools the history used."""
    system, turns = _convert_messages(req)
    messages = turns.turns
    if not messages:
        raise InvalidRequest("messages must contain at least one user or assistant message", param="messages")
    if messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": START_PLACEHOLDER}]})
    # Within a user turn, tool results must come before anything else.
    for turn in messages:
        if turn["role"] == "user":
            content = turn["content"]
            if any(b["type"] == "tool_result" for b in content):
                turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
                    b for b in content if b["type"] != "tool_result"
                ]
    return system, messages, list(turns.history_tools)


def _max_tokens(req: ChatRequest, options: Options) -> int:
    """`max_completion_tokens`, else `max_tokens`, else the configured default."""
    return req.max_completion_tokens or req.max_tokens or options.default_max_tokens


def _effort(req: ChatRequest) -> str | None:
    """`reasoning_effort`: the thinking asked for (`none` asks for none)."""
    effort = req.reasoning_effort
    return effort if effort and effort != "none" else None


def _sampling(req: ChatRequest) -> dict[str, Any]:
    """`temperature` (at most 1, Anthropic's range), else `top_p`: Anthropic takes one of them."""
    if req.temperature is not None:
        return {"temperature": min(req.temperature, 1.0)}
    if req.top_p is not None:
        return {"top_p": req.top_p}
    return {}


def _metadata(req: ChatRequest) -> dict[str, Any] | None:
    """`user` -> `metadata.user_id` (at most 256 characters)."""
    return {"user_id": req.user[:256]} if req.user else None


@dataclass
class _EachParameter:
    """Each parameter mapped on its own, before the rules that cross parameters (`_combine`)."""

    model: str
    system: list[str]
    messages: list[dict[str, Any]]
    history_tools: list[str]
    tools: list[dict[str, Any]]
    strict_wanted: list[int]
    tool_choice: dict[str, Any] | None
    max_tokens: int
    effort: str | None
    response_format: Any
    sampling: dict[str, Any]
    stop_sequences: list[str]
    metadata: dict[str, Any] | None


def to_anthropic(req: ChatRequest, options: Options) -> Translation:
    """Translate a validated OpenAI chat request into an Anthropic Messages request: each parameter by its own
    function, then every rule that crosses parameters in `_combine`."""
    _refuse_unanswerable(req)
    model = resolve_model(req.model, options)
    system, messages, history_tools = _messages(req)
    tools, strict_wanted = _tool_defs(req)
    mapped = _EachParameter(
        model=model,
        system=system,
        messages=messages,
        history_tools=history_tools,
        tools=tools,
        strict_wanted=strict_wanted,
        tool_choice=_tool_choice(req, [t["name"] for t in tools]) if tools else None,
        max_tokens=_max_tokens(req, options),
        effort=_effort(req),
        response_format=req.response_format,
        sampling=_sampling(req),
        stop_sequences=_stop_sequences(req.stop),
        metadata=_metadata(req),
    )
    return _combine(mapped, options)


def _combine(m: _EachParameter, options: Options) -> Translation:
    """The rules that cross parameters, in one place and in this order:
    1. tools used in the history but not defined get minimal definitions (and, with no tools of the client's,
       tool_choice none);
    2. thinking only when the request allows it: not with a forced tool choice, not in the middle of a tool loop; a
       thinking budget raises max_tokens above it;
    3. response_format: structured outputs when the model has them and the schema converts; else a forced answer
       tool, unless tools or thinking forbid forcing one (then an instruction in `system`);
    4. strict tools, within the request's budgets (which the output schema shares), on models with structured outputs;
    5. sampling parameters only without thinking and on models that take them;
    6. prompt caching marks the last tool, the system prompt and the last message."""
    model, tools, system, messages = m.model, m.tools, m.system, m.messages
    names = [t["name"] for t in tools]
    tool_choice = m.tool_choice
    # 1. tool history
    history_only = [n for n in m.history_tools if n not in names]
    if history_only:
        tools += [
            {"name": n, "description": HISTORY_TOOL_DESCRIPTION, "input_schema": {"type": "object"}}
            for n in history_only
        ]
        if not names:
            tool_choice = {"type": "none"}

    body: dict[str, Any] = {"model": model, "max_tokens": m.max_tokens}

    # 2. thinking
    thinking: dict[str, Any] | None = None
    forced = tool_choice is not None and tool_choice.get("type") in ("any", "tool")
    last_assistant = next((t for t in reversed(messages) if t["role"] == "assistant"), None)
    mid_tool_loop = (
        last_assistant is not None
        and messages[-1]["role"] == "user"
        and any(b["type"] == "tool_use" for b in last_assistant["content"])
        and any(b["type"] == "tool_result" for b in messages[-1]["content"])
    )
    if m.effort and not forced and not mid_tool_loop:
        if options.adaptive_thinking.search(model):
            thinking = {"type": "adaptive"}
            body.setdefault("output_config", {})["effort"] = _EFFORT[m.effort]
        else:
            budget = getattr(options.budgets, "high" if m.effort == "xhigh" else m.effort)
            if body["max_tokens"] <= budget:
                body["max_tokens"] = budget + body["max_tokens"]
            thinking = {"type": "enabled", "budget_tokens": budget}

    # 3. structured output
    json_tool: str | None = None
    json_tool_schema: dict[str, Any] | None = None
    structured = not options.no_structured_outputs.search(model)
    spent = Complexity()
    fmt = m.response_format
    if fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_ if fmt.json_schema else None
        if not schema:
            raise InvalidRequest(
                "response_format json_schema needs json_schema.schema", param="response_format.json_schema"
            )
        converted: dict[str, Any] | None = None
        if structured:
            try:
                converted = strict_schema(schema)
            except UnsupportedSchema:
                converted = None
        if converted is not None:
            body.setdefault("output_config", {})["format"] = {"type": "json_schema", "schema": converted}
            spent = complexity(converted)
        elif names or thinking is not None or schema.get("type") != "object":
            system.append(f"{SCHEMA_INSTRUCTION}\n{orjson.dumps(schema).decode()}")
        else:
            json_tool_schema = schema
    elif fmt is not None and fmt.type == "json_object":
        if names or thinking is not None:
            system.append(JSON_INSTRUCTION)
        else:
            json_tool_schema = {"type": "object"}
    if json_tool_schema is not None:
        json_tool = "json_response"
        taken = {t["name"] for t in tools}
        suffix = 0
        while json_tool in taken:
            suffix += 1
            json_tool = f"json_response_{suffix}"
        tools.append({"name": json_tool, "description": JSON_TOOL_DESCRIPTION, "input_schema": json_tool_schema})
        tool_choice = {"type": "tool", "name": json_tool, "disable_parallel_tool_use": True}
    # 4. strict tools
    if m.strict_wanted and structured:
        _make_strict(tools, m.strict_wanted, spent)

    if system:
        body["system"] = [{"type": "text", "text": text} for text in system]
    body["messages"] = messages
    if tools:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    # 5. sampling
    if thinking is not None:
        body["thinking"] = thinking
    elif not options.fixed_sampling.search(model):
        body.update(m.sampling)
    if m.stop_sequences:
        body["stop_sequences"] = m.stop_sequences
    if m.metadata is not None:
        body["metadata"] = m.metadata
    # 6. prompt caching
    if options.prompt_cache:
        if tools:
            tools[-1] = {**tools[-1], "cache_control": {"type": "ephemeral"}}
        if "system" in body:
            body["system"][-1]["cache_control"] = {"type": "ephemeral"}
        _cache_last(messages[-1]["content"])
    return Translation(body=body, model=model, json_tool=json_tool)
