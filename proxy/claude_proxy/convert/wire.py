"""Wire types: what OpenAI clients send (validated, unknown fields tolerated) and what Anthropic sends back.

Requests are validated once into these models at the edge; the translation layer only reads them. Output shapes are
described as TypedDicts (plain dicts on the hot path, no model construction for what we build ourselves).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Open(BaseModel):
    """Tolerates fields this proxy does not know (clients send many)."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ---- OpenAI request ------------------------------------------------------------------------------------------------


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageURL(_Open):
    url: str
    detail: str | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


class FileData(_Open):
    """A file given inline (`file_data`: a data: URL with base64 content, or the base64 alone), by URL (`file_url`,
    as the Responses API's input_file has it) or by OpenAI Files API id (`file_id`, which has no counterpart here)."""

    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None


class FilePart(_Open):
    type: Literal["file"]
    file: FileData


class OtherPart(_Open):
    """Any other part type (input_audio, refusal, ...): rejected or handled by translation with a clear error."""

    type: str


ContentPart = TextPart | ImagePart | FilePart | OtherPart


class FunctionCall(_Open):
    name: str
    arguments: str | dict[str, Any] | None = None


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Open):
    role: Literal["system", "developer"]
    content: str | list[ContentPart]
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    name: str | None = None


class ToolMessage(_Open):
    role: Literal["tool"]
    tool_call_id: str
    # Clients send strings, parts, JSON values or null here; all are kept.
    content: Any = None


class FunctionMessage(_Open):
    """Legacy `functions` protocol: the result of a function_call."""

    role: Literal["function"]
    name: str
    content: Any = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


class FunctionDef(_Open):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaFormat(_Open):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    model: str = ""
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    user: str | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    metadata: dict[str, Any] | None = None
    # Accepted only in their "off" form (translation refuses the others: nothing upstream can answer them).
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_limit(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop sequences")
        return value


# ---- OpenAI response shapes (built by us) --------------------------------------------------------------------------


class FunctionOut(TypedDict):
    name: str
    arguments: str


class ToolCallOut(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionOut


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class UsageOut(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
