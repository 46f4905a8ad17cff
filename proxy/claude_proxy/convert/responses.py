"""Pure translation between OpenAI's Responses API and Anthropic messages.

A Responses request is rewritten into the chat-completions request it means (`to_chat`), and that one goes through
`request.to_anthropic`, so both endpoints share every rule: images, tools and tool_choice, strict tools and the
schema transform, JSON modes, reasoning, history repair, prompt caching. Anthropic's answer is mapped straight into
a Response object (`to_response`). No I/O, no environment, no globals; inputs are never mutated. Errors are
`InvalidRequest` naming the field as the client sent it (`input[2].content[0].image_url`).

Mapping notes (Responses field -> chat field):
- `instructions` -> a leading system message; `input` as a string -> one user message.
- message items (role user/assistant/system/developer, content a string or parts): input_text/output_text ->
  text, input_image with `image_url` (data: or https: URL) -> image_url; input_file with `file_data` or
  `file_url` -> a file part (a document block: PDF or plain text, base64, text or URL source); `file_id` -> 400.
- function_call items -> the assistant's tool_calls (consecutive calls join one assistant turn, `call_id` is the
  tool call id); function_call_output items -> tool messages; reasoning items are ignored (their text cannot be
  sent back to Anthropic without its signature).
- item_reference items -> the output item they name, in their place, found through the `lookup` the caller passes
  (the route's in-memory store of the proxy's own output items): a message becomes an assistant message, a
  function_call a tool call, a reasoning item nothing. An id the lookup does not know -> 400 (`input[i].id`) saying
  to send the full item or set `store: false`; no lookup (the store is off) -> 400 as for any unsupported item.
- function tools (flat: name, description, parameters, strict) -> chat tools; any other tool type -> 400.
- tool_choice auto|none|required|{type: function, name} -> the same choice; parallel_tool_calls as it is.
- text.format json_schema|json_object|text -> response_format; reasoning.effort -> reasoning_effort;
  max_output_tokens -> max_completion_tokens; temperature, top_p; user/safety_identifier -> user.
- state: no stored responses. `previous_response_id`, `conversation` and `background` need them and are refused
  with a 400 that says to send the full input; only output items are kept (by the route, when `store` is not
  false), so that item references resolve.

Anthropic -> Response: thinking -> a `reasoning` item with one summary_text; each non-empty text block -> a
`message` item with one output_text; tool_use -> a `function_call` item (call_id = tool_use id). stop_reason
max_tokens/model_context_window_exceeded -> status incomplete (max_output_tokens), refusal -> incomplete
(content_filter), anything else completed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, ValidationError

from claude_proxy.convert.errors import first_problem
from claude_proxy.convert.request import Options, Translation, to_anthropic
from claude_proxy.convert.response import tool_arguments
from claude_proxy.convert.tables import responses_usage
from claude_proxy.convert.wire import ChatRequest, _Open
from claude_proxy.errors import InvalidRequest

UNSTORED = "this proxy keeps no stored responses: send the whole conversation in `input` instead"
# Finds the output item an item_reference names, in its input form: None when it is not kept.
Lookup = Callable[[str], Mapping[str, Any] | None]
_MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\](?:\.tool_calls\[(\d+)\](?:\.function)?)?")
_TOOL_PARAM = re.compile(r"^tools\[(\d+)\]\.function")
# Chat fields -> the Responses fields they came from (for the `param` of errors the chat translation raises).
_FIELDS = {
    "response_format.json_schema": "text.format",
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
}

# Anthropic stop_reason -> (status, incomplete_details.reason); anything else is `completed`.
_INCOMPLETE: Mapping[str, str] = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}


class ResponsesRequest(_Open):
    """POST /v1/responses, as far as the proxy reads it (unknown fields are tolerated)."""

    model: str = ""
    input: str | list[Any]
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None
    store: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = None
    prompt: Any = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


@dataclass(frozen=True)
class ResponsesTranslation:
    """The Anthropic request, plus what the answer needs to echo of the client's request."""

    translation: Translation
    echo: dict[str, Any]  # the request's settings, as the Response object repeats them


# ---- request -------------------------------------------------------------------------------------------------------


def _refuse_stateful(req: ResponsesRequest) -> None:
    if req.previous_response_id:
        raise InvalidRequest(f"previous_response_id is not supported: {UNSTORED}", param="previous_response_id")
    if req.conversation is not None:
        raise InvalidRequest(f"conversation is not supported: {UNSTORED}", param="conversation")
    if req.background:
        raise InvalidRequest(f"background responses are not supported: {UNSTORED}", param="background")
    if req.prompt is not None:
        raise InvalidRequest(
            "stored prompt templates are not supported: send `instructions` and `input`", param="prompt"
        )
    if req.top_logprobs:
        raise InvalidRequest(
            "top_logprobs is not supported: Anthropic does not return token log probabilities", param="top_logprobs"
        )


def _part(part: Any, param: str, role: str) -> dict[str, Any]:
    """One content part of a message item as a chat content part."""
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise InvalidRequest("content parts must be objects with a type", param=param)
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{kind} parts need a text string", param=f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and role != "assistant":
        url = part.get("image_url")
        if isinstance(url, str) and url:
            return {"type": "image_url", "image_url": {"url": url}}
        if part.get("file_id"):
            raise InvalidRequest(
                "input_image with file_id is not supported (no Files API here): send image_url as a data: or "
                "https: URL",
                param=f"{param}.file_id",
            )
        raise InvalidRequest("input_image needs image_url", param=f"{param}.image_url")
    if kind == "input_file" and role != "assistant":
        if part.get("file_id"):
            raise InvalidRequest(
                "input_file with file_id is not supported: file ids belong to OpenAI's Files API, which this proxy "
                "does not have; send the content as file_data (data:application/pdf;base64,...) or an https: file_url",
                param=f"{param}.file_id",
            )
        file = {k: part[k] for k in ("filename", "file_data", "file_url") if isinstance(part.get(k), str)}
        if not file.get("file_data") and not file.get("file_url"):
            raise InvalidRequest("input_file needs file_data or file_url", param=f"{param}.file_data")
        return {"type": "file", "file": file}
    raise InvalidRequest(f"unsupported content part type {kind!r} in a {role} message", param=f"{param}.type")


class _Builder:
    """Chat messages from Responses input items, remembering where each came from (to name fields in errors)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.origins: list[str] = []  # input path of each chat message
        self.calls: dict[tuple[int, int], str] = {}  # (message index, tool call index) -> input path

    def add(self, message: dict[str, Any], origin: str) -> None:
        self.messages.append(message)
        self.origins.append(origin)

    def message(self, item: Mapping[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(
                "message role must be one of user, assistant, system, developer", param=f"{param}.role"
            )
        content = item.get("content")
        if isinstance(content, str):
            parts: str | list[dict[str, Any]] = content
        elif isinstance(content, list):
            parts = [_part(p, f"{param}.content[{j}]", role) for j, p in enumerate(content)]
        else:
            raise InvalidRequest("message content must be a string or a list of parts", param=f"{param}.content")
        self.add({"role": role, "content": parts}, param)

    def call(self, item: Mapping[str, Any], param: str) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest("function_call items need a call_id", param=f"{param}.call_id")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("function_call items need a name", param=f"{param}.name")
        arguments = item.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            raise InvalidRequest("function_call arguments must be a JSON string", param=f"{param}.arguments")
        tool_call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments or ""}}
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            self.add({"role": "assistant", "content": None, "tool_calls": []}, param)
            last = self.messages[-1]
        calls = last.setdefault("tool_calls", [])
        self.calls[(len(self.messages) - 1, len(calls))] = param
        calls.append(tool_call)

    def output(self, item: Mapping[str, Any], param: str) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest("function_call_output items need a call_id", param=f"{param}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            content: Any = [_part(p, f"{param}.output[{j}]", "tool") for j, p in enumerate(output)]
        elif isinstance(output, str) or output is None:
            content = output
        else:
            raise InvalidRequest("function_call_output output must be a string or parts", param=f"{param}.output")
        self.add({"role": "tool", "tool_call_id": call_id, "content": content}, param)

    def param(self, chat_param: str | None) -> str | None:
        """A chat field name (`messages[3].tool_calls[0].function.arguments`) as the client's input field."""
        if not chat_param:
            return chat_param
        for chat_field, field in _FIELDS.items():
            if chat_param == chat_field or chat_param.startswith(f"{chat_field}."):
                return field + chat_param[len(chat_field) :]
        tool = _TOOL_PARAM.match(chat_param)
        if tool is not None:  # Responses function tools are flat: tools[i].name, not tools[i].function.name
            return f"tools[{tool.group(1)}]" + chat_param[tool.end() :]
        match = _MESSAGE_PARAM.match(chat_param)
        if match is None:
            return chat_param
        index = int(match.group(1))
        if index >= len(self.origins):
            return "input"
        origin = self.origins[index]
        if match.group(2) is not None:
            origin = self.calls.get((index, int(match.group(2))), origin)
        rest = chat_param[match.end() :]
        # a chat file part's fields (`file.file_data`) are the input_file's own (`file_data`)
        return origin + rest.replace(".file.file_", ".file_").replace(".file.filename", ".filename")


def _referenced(item: Mapping[str, Any], param: str, lookup: Lookup | None) -> Mapping[str, Any]:
    """The output item an `item_reference` names, as the proxy keeps it; a 400 when it is not kept here."""
    if lookup is None:
        raise InvalidRequest(
            "item references are not supported: this proxy keeps no output items (PROXY_RESPONSES_STORE_MB=0): send "
            "the full item instead (clients send references to earlier output when they store responses: turn "
            "`store` off)",
            param=f"{param}.type",
        )
    ref = item.get("id")
    if not isinstance(ref, str) or not ref:
        raise InvalidRequest("item_reference items need an id", param=f"{param}.id")
    found = lookup(ref)
    if found is None:
        raise InvalidRequest(
            f"item {ref!r} is not (or no longer) held by this proxy: it keeps the output items it answered for a "
            "while, in memory, in one process; send the full item instead of a reference, or set `store: false` so "
            "the client sends it",
            param=f"{param}.id",
        )
    return found


def _items(req: ResponsesRequest, builder: _Builder, lookup: Lookup | None) -> None:
    if req.instructions and req.instructions.strip():
        builder.add({"role": "system", "content": req.instructions}, "instructions")
    if isinstance(req.input, str):
        builder.add({"role": "user", "content": req.input}, "input")
        return
    for i, item in enumerate(req.input):
        param = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest("input items must be objects", param=param)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "item_reference":  # the kept output item it names, in its place
            item = _referenced(item, param, lookup)
            kind = item.get("type")
        if kind == "message":
            builder.message(item, param)
        elif kind == "function_call":
            builder.call(item, param)
        elif kind == "function_call_output":
            builder.output(item, param)
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(f"unsupported input item type {kind!r}", param=f"{param}.type")


def _tools(req: ResponsesRequest) -> list[dict[str, Any]] | None:
    if req.tools is None:
        return None
    tools = []
    for i, tool in enumerate(req.tools):
        param = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind != "function":
            raise InvalidRequest(
                f"tool type {kind!r} is not supported: only function tools can be answered through Anthropic here",
                param=f"{param}.type",
            )
        if not isinstance(tool.get("name"), str):
            raise InvalidRequest("function tools need a name", param=f"{param}.name")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    kind = choice.get("type") if isinstance(choice, Mapping) else choice
    raise InvalidRequest(
        f"tool_choice {kind!r} is not supported: use auto, none, required or a function",
        param="tool_choice",
    )


def _response_format(text: Mapping[str, Any] | None) -> dict[str, Any] | None:
    fmt = text.get("format") if text else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping) or not schema:
            raise InvalidRequest("text.format json_schema needs a schema", param="text.format.schema")
        spec = {k: fmt[k] for k in ("name", "description", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": {**spec, "schema": schema}}
    raise InvalidRequest(f"unsupported text.format type {kind!r}", param="text.format.type")


def _effort(reasoning: Mapping[str, Any] | None) -> str | None:
    effort = reasoning.get("effort") if reasoning else None
    if effort is None:
        return None
    if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        raise InvalidRequest(f"unsupported reasoning.effort {effort!r}", param="reasoning.effort")
    return str(effort)


def to_chat(req: ResponsesRequest, lookup: Lookup | None = None) -> tuple[ChatRequest, _Builder]:
    """The chat-completions request a Responses request means, and where its messages came from. `lookup` finds
    the output items that `item_reference` inputs name (None: references are refused)."""
    _refuse_stateful(req)
    builder = _Builder()
    _items(req, builder, lookup)
    if not builder.messages:
        raise InvalidRequest("input must contain at least one message", param="input")
    chat: dict[str, Any] = {
        "model": req.model,
        "messages": builder.messages,
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": _tools(req),
        "tool_choice": _tool_choice(req.tool_choice),
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req.text),
        "reasoning_effort": _effort(req.reasoning),
        "user": req.safety_identifier or req.user,
    }
    try:
        return ChatRequest.model_validate({k: v for k, v in chat.items() if v is not None}), builder
    except ValidationError as exc:
        message, param = first_problem(exc.errors())
        raise InvalidRequest(message, param=builder.param(param) or None) from None


def _echo(req: ResponsesRequest) -> dict[str, Any]:
    fmt = (req.text or {}).get("format") or {"type": "text"}
    tools = [
        {
            "type": "function",
            "name": t["name"],
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in req.tools or []
    ]
    return {
        "instructions": req.instructions,
        "metadata": req.metadata or {},
        "tools": tools,
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_output_tokens": req.max_output_tokens,
        "text": {"format": fmt},
        "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": (req.reasoning or {}).get("summary")},
    }


def to_anthropic_request(req: ResponsesRequest, options: Options, lookup: Lookup | None = None) -> ResponsesTranslation:
    """Translate a validated Responses request into an Anthropic Messages request (`lookup`: as for `to_chat`)."""
    chat, builder = to_chat(req, lookup)
    try:
        translation = to_anthropic(chat, options)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=builder.param(exc.param), code=exc.code) from None
    return ResponsesTranslation(translation=translation, echo=_echo(req))


# ---- response ------------------------------------------------------------------------------------------------------


def response_id(message_id: str | None) -> str:
    base = message_id.removeprefix("msg_") if message_id else "proxy"
    return f"resp_{base}"


def item_id(kind: str, message_id: str | None, index: int) -> str:
    base = message_id.removeprefix("msg_") if message_id else "proxy"
    return f"{kind}_{base}_{index}"


def status_of(stop_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    reason = _INCOMPLETE.get(stop_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def message_item(id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(id: str, text: str | None) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text is not None else []
    return {"id": id, "type": "reasoning", "summary": summary}


def call_item(id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response_object(
    *,
    id: str,
    created_at: int,
    model: str,
    echo: Mapping[str, Any],
    output: list[dict[str, Any]],
    status: str,
    incomplete_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "usage": usage,
        "previous_response_id": None,
        "truncation": "disabled",
        **echo,
    }


def to_response(
    message: Mapping[str, Any],
    *,
    model: str,
    created_at: int,
    echo: Mapping[str, Any],
    json_tool: str | None = None,
) -> dict[str, Any]:
    """Translate an Anthropic message into a Response object."""
    message_id = message.get("id") if isinstance(message.get("id"), str) else None
    status, details = status_of(message.get("stop_reason"))
    output: list[dict[str, Any]] = []
    json_answer: str | None = None
    texts: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        index = len(output)
        if kind == "text" and block.get("text"):
            item = message_item(item_id("msg", message_id, index), block["text"])
            output.append(item)
            texts.append(item)
        elif kind == "thinking" and block.get("thinking"):
            output.append(reasoning_item(item_id("rs", message_id, index), block["thinking"]))
        elif kind == "tool_use":
            arguments = tool_arguments(block.get("input"))
            if json_tool is not None and block.get("name") == json_tool:
                if json_answer is None:
                    json_answer = arguments
                    output.append(message_item(item_id("msg", message_id, index), arguments))
                continue
            call_id = block.get("id") or item_id("call", message_id, index)
            output.append(call_item(item_id("fc", message_id, index), call_id, block.get("name") or "", arguments))
    if json_answer is not None:  # the tool's JSON is the answer; other text would make it invalid JSON
        output = [item for item in output if item not in texts]
    if status == "incomplete":
        for item in output[-1:]:
            if item["type"] in ("message", "function_call"):
                item["status"] = "incomplete"
    return response_object(
        id=response_id(message_id),
        created_at=created_at,
        model=message.get("model") or model,
        echo=echo,
        output=output,
        status=status,
        incomplete_details=details,
        usage=responses_usage(message.get("usage")),
    )
