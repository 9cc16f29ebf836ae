"""relay.ByteStream: its parts go out as they are, and content a middleware puts in its place
goes Django's own way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.relay import ByteStream


async def _parts(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_parts_are_sent_as_they_are() -> None:
    parts = _parts(b"data: 1\n\n", b"data: 2\n\n")
    response = ByteStream(parts, content_type="text/event-stream")
    assert aiter(response) is parts
    assert [part async for part in response] == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_content_replaced_later_is_what_is_sent() -> None:
    response = ByteStream(_parts(b"original"), content_type="text/event-stream")

    async def wrapped() -> AsyncIterator[str]:
        yield "replaced"  # a str: Django's path turns it into bytes

    response.streaming_content = wrapped()
    assert [part async for part in response] == [b"replaced"]
