"""The Anthropic Files API through the official SDK (``client.beta.files``) against the running
gateway, and file blocks in messages resolved to the file's content for either upstream protocol
(the simulator's Anthropic side refuses file sources it cannot know, as Anthropic's API does)."""

from __future__ import annotations

import struct
import time
import zlib
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway import metering
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"  # noqa: E501


def png(size: int = 4) -> bytes:
    rows = b"".join(b"\x00" + b"\x80\x40\x20" * size for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def ant(live: dict[str, Any], secret: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=secret or live["secret"], max_retries=0
    )


def records() -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(endpoint="chat").order_by("created_at"))


def document(file_id: str) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "file", "file_id": file_id}}


def test_it_uploads_describes_lists_and_deletes_files(live):
    files = ant(live).beta.files
    notes = files.upload(file=("notes.txt", b"plain words", "text/plain"))
    assert notes.type == "file" and notes.id.startswith("file_")
    assert (notes.filename, notes.mime_type, notes.size_bytes) == ("notes.txt", "text/plain", 11)
    assert notes.downloadable is False
    picture = files.upload(file=("dir/picture.png", png(), "application/octet-stream"))
    assert (picture.filename, picture.mime_type) == ("picture.png", "image/png")
    paper = files.upload(file=("paper.pdf", PDF, "application/pdf"))
    assert paper.mime_type == "application/pdf"
    again = files.retrieve_metadata(paper.id)
    assert again.id == paper.id and again.created_at == paper.created_at
    # Newest first; the SDK follows next_page through pages of two.
    assert [f.id for f in files.list(limit=2)] == [paper.id, picture.id, notes.id]
    first = files.list(limit=2)
    assert [f.id for f in first.data] == [paper.id, picture.id] and first.next_page
    assert [f.id for f in files.list(ids=[notes.id, "file_unknown"])] == [notes.id]
    headers = {"x-api-key": live["secret"], "anthropic-version": "2023-06-01"}
    url = f"{live['url']}/anthropic/v1/files"
    after = httpx.get(url, params={"after_id": paper.id, "limit": 1}, headers=headers).json()
    assert [f["id"] for f in after["data"]] == [picture.id] and after["has_more"] is True
    before = httpx.get(url, params={"before_id": notes.id, "limit": 1}, headers=headers).json()
    assert [f["id"] for f in before["data"]] == [picture.id] and before["has_more"] is True
    assert (before["first_id"], before["last_id"]) == (picture.id, picture.id)
    with pytest.raises(anthropic.BadRequestError) as caught:
        files.download(notes.id)
    assert "not downloadable" in caught.value.message
    deleted = files.delete(notes.id)
    assert deleted.id == notes.id and deleted.type == "file_deleted"
    with pytest.raises(anthropic.NotFoundError):
        files.retrieve_metadata(notes.id)
    # The beta header of the Files API's beta is accepted as well.
    beta = files.upload(file=("b.txt", b"beta", "text/plain"), betas=["files-api-2025-04-14"])
    assert beta.mime_type == "text/plain"


def test_files_are_per_account(live):
    mine = ant(live).beta.files.upload(file=("secret.txt", b"[[say: secret]]", "text/plain"))
    other = factories.account(owner=factories.UserFactory.create(), plan_slug="enterprise")
    _, secret = factories.api_key(other)
    theirs = ant(live, secret)
    with pytest.raises(anthropic.NotFoundError):
        theirs.beta.files.retrieve_metadata(mine.id)
    with pytest.raises(anthropic.NotFoundError):
        theirs.beta.files.delete(mine.id)
    assert list(theirs.beta.files.list()) == []
    with pytest.raises(anthropic.BadRequestError) as caught:
        theirs.messages.create(
            model="sim-claude",
            max_tokens=20,
            messages=[{"role": "user", "content": [document(mine.id)]}],
        )
    assert "file not found" in caught.value.message
    (record,) = records()
    assert record.status == 400 and record.cost_micros == 0


def test_v1_files_serves_the_files_api_of_the_sdk_that_asks(live):
    client = anthropic.Anthropic(base_url=live["url"], api_key=live["secret"], max_retries=0)
    uploaded = client.beta.files.upload(file=("a.txt", b"hello", "text/plain"))
    assert [f.id for f in client.beta.files.list()] == [uploaded.id]
    oai = openai.OpenAI(base_url=f"{live['url']}/v1/", api_key=live["secret"], max_retries=0)
    assert [f.id for f in oai.files.list()] == []  # OpenAI's Files API does not see it
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(uploaded.id)


@pytest.mark.parametrize("model", ["sim-claude", "sim-gpt"])
def test_a_document_block_reads_the_uploaded_text_on_either_upstream(live, model):
    client = ant(live)
    file = client.beta.files.upload(file=("task.txt", b"[[say: read from the file]]", "text/plain"))
    done = client.messages.create(
        model=model,
        max_tokens=50,
        messages=[{"role": "user", "content": [document(file.id), {"type": "text", "text": " "}]}],
    )
    assert done.content[0].type == "text" and done.content[0].text == "read from the file"
    (record,) = records()
    assert record.status == 200 and record.input_tokens == done.usage.input_tokens > 0
    stream = client.messages.create(
        model=model,
        max_tokens=50,
        stream=True,
        messages=[{"role": "user", "content": [document(file.id)]}],
    )
    text = "".join(
        e.delta.text
        for e in stream
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "read from the file"
    counted = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": [document(file.id)]}]
    )
    assert counted.input_tokens > 0


@pytest.mark.parametrize("model", ["sim-claude", "sim-gpt"])
def test_image_and_pdf_blocks_reach_either_upstream(live, model):
    client = ant(live)
    picture = client.beta.files.upload(file=("p.png", png(), "image/png"))
    paper = client.beta.files.upload(file=("paper.pdf", PDF, "application/pdf"))
    done = client.messages.create(
        model=model,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "file", "file_id": picture.id}},
                    document(paper.id),
                    {"type": "text", "text": "Describe these."},
                ],
            }
        ],
    )
    assert done.content[0].text.startswith("I see 1 image.")
    assert records()[-1].status == 200


def test_it_refuses_a_file_in_the_wrong_block_at_no_cost(live):
    client = ant(live)
    paper = client.beta.files.upload(file=("paper.pdf", PDF, "application/pdf"))
    binary = client.beta.files.upload(
        file=("blob.bin", bytes(range(256)), "application/octet-stream")
    )
    for block in (
        {"type": "image", "source": {"type": "file", "file_id": paper.id}},
        document(binary.id),
    ):
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(
                model="sim-claude", max_tokens=20, messages=[{"role": "user", "content": [block]}]
            )
        assert "cannot be sent" in caught.value.message
        assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert [(r.status, r.cost_micros) for r in records()] == [(400, 0), (400, 0)]


def test_a_message_batch_line_reads_the_uploaded_file(live, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the batch runs on this process's runner thread
    client = ant(live)
    file = client.beta.files.upload(file=("task.txt", b"[[say: batched file]]", "text/plain"))

    def params(model: str, file_id: str) -> Any:
        return {
            "model": model,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": [document(file_id)]}],
        }

    created = client.messages.batches.create(
        requests=[
            {"custom_id": "claude", "params": params("sim-claude", file.id)},
            {"custom_id": "gpt", "params": params("sim-gpt", file.id)},
            {"custom_id": "missing", "params": params("sim-claude", "file_011missing")},
        ]
    )
    deadline = time.monotonic() + 30
    while client.messages.batches.retrieve(created.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    for name in ("claude", "gpt"):
        result = results[name]
        assert result.type == "succeeded"
        assert result.message.content[0].text == "batched file"
    assert results["missing"].type == "errored"
    assert "file not found" in results["missing"].error.error.message
