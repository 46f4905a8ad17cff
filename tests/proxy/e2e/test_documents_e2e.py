"""Documents end to end: a real PDF sent the ways the official openai SDK documents (a chat `file` part, a Responses
`input_file`) -> the proxy under uvicorn -> the strict fake Anthropic, which reads the PDF it is sent."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.conftest import ProxyFactory
from tests.fakes.anthropic import FakeAnthropic, message, text
from tests.paths import FIXTURES
from tests.proxy.http_support import client

PDF_BYTES = (FIXTURES / "documents" / "invoice.pdf").read_bytes()
PDF = base64.b64encode(PDF_BYTES).decode()
DATA_URL = f"data:application/pdf;base64,{PDF}"
MODEL = "claude-sonnet-4-6"


def sent_document(fake: FakeAnthropic) -> dict[str, object]:
    content = fake.messages_requests[-1].body["messages"][-1]["content"]
    documents = [block for block in content if block["type"] == "document"]
    assert len(documents) == 1
    return documents[0]


def test_a_pdf_through_chat_completions(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("The total is 42.00 EUR.")))
    out = client(proxy()).chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the invoice total?"},
                    {"type": "file", "file": {"filename": "invoice.pdf", "file_data": DATA_URL}},
                ],
            }
        ],
    )
    assert out.choices[0].message.content == "The total is 42.00 EUR."
    document = sent_document(fake)
    assert document["source"] == {"type": "base64", "media_type": "application/pdf", "data": PDF}
    assert document["title"] == "invoice.pdf"
    assert base64.b64decode(PDF) == PDF_BYTES


def test_a_pdf_through_a_streamed_chat_completion(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("It is an invoice.")))
    stream = client(proxy()).chat.completions.create(
        model=MODEL,
        stream=True,
        messages=[{"role": "user", "content": [{"type": "file", "file": {"file_data": DATA_URL}}]}],
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "It is an invoice."
    assert sent_document(fake)["source"]["data"] == PDF  # type: ignore[index]


def test_a_pdf_through_the_responses_api(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    fake.script(message(text("Invoice 4711.")))
    out = client(proxy()).responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Which invoice is this?"},
                    {"type": "input_file", "filename": "invoice.pdf", "file_data": DATA_URL},
                ],
            }
        ],
    )
    assert out.output_text == "Invoice 4711."
    document = sent_document(fake)
    assert document["source"] == {"type": "base64", "media_type": "application/pdf", "data": PDF}
    assert document["title"] == "invoice.pdf"


def test_a_file_id_is_a_400_naming_the_part_and_nothing_goes_upstream(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    c = client(proxy())
    with pytest.raises(openai.BadRequestError) as chat:
        c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]
        )
    assert chat.value.param == "messages[0].content[0].file.file_id"
    with pytest.raises(openai.BadRequestError) as responses:
        c.responses.create(
            model=MODEL, input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file-abc"}]}]
        )
    assert responses.value.param == "input[0].content[0].file_id"
    assert "Files API" in chat.value.message and "Files API" in responses.value.message
    assert fake.messages_requests == []


def test_a_broken_pdf_is_anthropics_400_passed_on(fake: FakeAnthropic, proxy: ProxyFactory) -> None:
    broken = base64.b64encode(PDF_BYTES[: len(PDF_BYTES) // 2]).decode()
    with pytest.raises(openai.BadRequestError) as info:
        client(proxy()).chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_data": f"data:application/pdf;base64,{broken}"}}],
                }
            ],
        )
    assert "The PDF specified was not valid." in info.value.message
