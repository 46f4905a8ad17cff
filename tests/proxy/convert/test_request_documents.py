"""Documents in a chat request: `file` content parts as Anthropic document blocks, and the 400s (naming the part)
for what Anthropic cannot read, checked before anything goes upstream."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from claude_proxy.convert.request import MAX_DOCUMENT_BYTES, MAX_DOCUMENTS
from claude_proxy.errors import InvalidRequest
from tests.paths import FIXTURES
from tests.proxy.convert.request_support import OPTS, translate, user

PDF = base64.b64encode((FIXTURES / "documents" / "invoice.pdf").read_bytes()).decode()
TEXT = base64.b64encode(b"Dear team,\nthe total is 42.00 EUR.\n").decode()


def with_parts(*parts: dict[str, Any]) -> dict[str, Any]:
    return translate(messages=[{"role": "user", "content": [{"type": "text", "text": "What does it say?"}, *parts]}])


def refused(*parts: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        with_parts(*parts)
    return info.value


def file(**fields: str) -> dict[str, Any]:
    return {"type": "file", "file": fields}


def test_a_pdf_data_url_becomes_a_base64_pdf_document_titled_by_its_file_name() -> None:
    body = with_parts(file(filename="invoice.pdf", file_data=f"data:application/pdf;base64,{PDF}"))
    assert body["messages"][0]["content"][1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "invoice.pdf",
    }


def test_bare_base64_is_read_as_a_pdf_by_its_signature_and_as_text_by_its_name() -> None:
    body = with_parts(file(file_data=PDF), file(filename="notes.txt", file_data=TEXT))
    pdf, text = body["messages"][0]["content"][1:]
    assert pdf == {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    assert text["source"] == {
        "type": "text",
        "media_type": "text/plain",
        "data": "Dear team,\nthe total is 42.00 EUR.\n",
    }
    assert text["title"] == "notes.txt"


def test_plain_text_becomes_a_text_document() -> None:
    body = with_parts(file(filename="a.txt", file_data=f"data:text/plain;charset=utf-8;base64,{TEXT}"))
    assert body["messages"][0]["content"][1]["source"]["type"] == "text"


def test_an_https_file_url_becomes_a_url_document() -> None:
    body = with_parts(file(file_url="https://example.com/report.pdf"))
    assert body["messages"][0]["content"][1] == {
        "type": "document",
        "source": {"type": "url", "url": "https://example.com/report.pdf"},
    }


def test_prompt_caching_marks_a_trailing_document() -> None:
    body = translate(OPTS, messages=[{"role": "user", "content": [file(file_data=PDF)]}])
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_a_tool_result_may_carry_a_document() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "fetch", "arguments": "{}"}}
    tool = {"type": "function", "function": {"name": "fetch", "parameters": {"type": "object"}}}
    body = translate(
        tools=[tool],
        messages=[
            user("Fetch the invoice"),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": [file(filename="i.pdf", file_data=PDF)]},
        ],
    )
    result = body["messages"][2]["content"][0]
    assert result["type"] == "tool_result"
    assert result["content"][0]["type"] == "document" and result["content"][0]["title"] == "i.pdf"


@pytest.mark.parametrize(
    ("part", "param", "words"),
    [
        (file(file_id="file-abc123"), "messages[0].content[1].file.file_id", "Files API"),
        (file(file_data="data:image/png;base64,iVBORw0K"), "messages[0].content[1].file.file_data", "image/png"),
        (
            file(file_data="data:application/msword;base64,AAAA"),
            "messages[0].content[1].file.file_data",
            "application/msword",
        ),
        (file(file_data="data:application/pdf;base64,@@@@"), "messages[0].content[1].file.file_data", "base64"),
        (file(file_data="data:application/pdf,plain"), "messages[0].content[1].file.file_data", "data:"),
        (file(filename="x.bin", file_data="AAAAAAAA"), "messages[0].content[1].file.file_data", "data:"),
        (file(filename="x.txt", file_data=base64.b64encode(b"\xff\xfe").decode()), "messages[0].content[1]", "UTF-8"),
        (file(file_url="http://example.com/a.pdf"), "messages[0].content[1].file.file_url", "https"),
        (file(filename="empty.pdf"), "messages[0].content[1].file", "file_data"),
        ({"type": "file", "file": "not an object"}, "messages[0].content[1]", "malformed"),
    ],
)
def test_what_anthropic_cannot_read_is_a_400_naming_the_part(part: dict[str, Any], param: str, words: str) -> None:
    error = refused(part)
    assert error.status == 400
    assert error.param is not None and error.param.startswith(param)
    assert words in error.message


def test_more_documents_than_anthropic_reads_are_refused_before_the_upstream_call() -> None:
    with_parts(*[file(file_data=PDF)] * MAX_DOCUMENTS)  # at the limit: fine
    error = refused(*[file(file_data=PDF)] * (MAX_DOCUMENTS + 1))
    assert (error.status, error.code) == (400, "too_many_documents")
    assert error.param == f"messages[0].content[{MAX_DOCUMENTS + 1}]"


def test_more_document_data_than_a_request_may_carry_is_a_413() -> None:
    big = "A" * (MAX_DOCUMENT_BYTES // 2 + 4)
    pdf = base64.b64encode(b"%PDF-1").decode() + big[: len(big) - len(big) % 4]
    error = refused(file(file_data=pdf), file(file_data=pdf))
    assert (error.status, error.code) == (413, "request_too_large")
    assert error.param == "messages[0].content[2]"
