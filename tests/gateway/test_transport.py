"""The upstream transport against a plain socket server in a thread: requests leave at once,
bodies of any size arrive whole, a cancelled upload gives its connection up, and a streamed body
comes chunk by chunk as sent, or decoded when the upstream compressed it."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.providers.transport import (
    READ_WHOLE,
    UpstreamTransport,
    body_chunks,
    close_finished,
)


@dataclass
class Upstream:
    """Answers each request with the length and SHA-256 of its body. ``read_delay`` makes it read
    slowly, so a large body fills the socket buffers and the sender has to wait."""

    url: str = ""
    read_delay: float = 0.0
    # When set: answer with these SSE events as a chunked stream, one chunk each (gzip-compressed
    # as one body when ``gzip``).
    events: list[bytes] = field(default_factory=list)
    gzip: bool = False
    received: list[bytes] = field(default_factory=list)  # each request's bytes, as they arrive
    closed: threading.Event = field(default_factory=threading.Event)
    connections: int = 0  # accepted so far

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        self.closed.set()
                        return
                    buffer += chunk
                    self.received.append(chunk)
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    if self.read_delay:
                        time.sleep(self.read_delay)
                    chunk = conn.recv(65536)
                    if not chunk:
                        self.closed.set()
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                if self.events:
                    self._stream(conn)
                    continue
                answer = json.dumps(
                    {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                ).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )

    def _stream(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        head += b"transfer-encoding: chunked\r\n"
        pieces = list(self.events)
        if self.gzip:
            head += b"content-encoding: gzip\r\n"
            pieces = [gzip.compress(b"".join(pieces))]
        conn.sendall(head + b"\r\n")
        for piece in pieces:
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.01)
        conn.sendall(b"0\r\n\r\n")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = Upstream(url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1/echo")
    threading.Thread(target=server.serve, args=(listener,), daemon=True).start()
    yield server
    listener.close()


def client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=8, keepalive_expiry=30)
    return httpx.AsyncClient(transport=UpstreamTransport(limits), limits=limits, timeout=30)


async def test_a_request_is_on_the_wire_before_the_event_loop_runs_anything_else(upstream):
    async with client() as http:
        assert (await http.post(upstream.url, content=b"warm")).status_code == 200
        upstream.received.clear()
        sending = asyncio.create_task(http.post(upstream.url, content=b'{"hello": 1}'))
        await asyncio.sleep(0)  # the request task takes its first step, and only that
        time.sleep(0.3)  # the event loop is held: nothing it schedules can run now
        assert b"".join(upstream.received).endswith(b'{"hello": 1}'), (
            "the request waited for another trip round the event loop before it was written"
        )
        assert (await sending).json()["length"] == 12


async def test_a_body_larger_than_the_socket_buffers_arrives_whole(upstream):
    upstream.read_delay = 0.002
    body = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB
    async with client() as http:
        answer = (await http.post(upstream.url, content=body)).json()
        again = (await http.post(upstream.url, content=b"small")).json()
    assert answer == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert again["length"] == 5


async def test_a_cancelled_upload_closes_its_connection_and_the_next_request_works(upstream):
    upstream.read_delay = 0.05  # reads 64 KiB every 50 ms: a 16 MiB body takes seconds
    async with client() as http:
        sending = asyncio.create_task(http.post(upstream.url, content=b"x" * (16 << 20)))
        await asyncio.sleep(0.3)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        upstream.read_delay = 0.0
        assert await asyncio.to_thread(upstream.closed.wait, 10), "the connection stayed open"
        assert (await http.post(upstream.url, content=b"after")).json()["length"] == 5


_EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]


async def _stream_through_transport(url: str) -> list[bytes]:
    """The chunks ``body_chunks`` gives for a streamed answer, sent as the providers send."""
    transport = UpstreamTransport(httpx.Limits(max_connections=8, keepalive_expiry=30))
    try:
        response = await transport.handle_async_request(httpx.Request("POST", url, content=b"{}"))
        chunks = [chunk async for chunk in body_chunks(response)]
        await response.aclose()
        return chunks
    finally:
        await transport.aclose()


async def test_a_stream_comes_chunk_by_chunk_as_the_upstream_sent_it(upstream):
    upstream.events = _EVENTS
    # Each write of the upstream (10 ms apart), as written.
    assert await _stream_through_transport(upstream.url) == _EVENTS


async def test_a_compressed_stream_is_decoded(upstream):
    upstream.events, upstream.gzip = _EVENTS, True
    assert b"".join(await _stream_through_transport(upstream.url)) == b"".join(_EVENTS)


async def test_a_finished_stream_closes_at_once_and_its_connection_is_used_again(upstream):
    upstream.events = _EVENTS
    # As the providers send: straight to the transport.
    transport = UpstreamTransport(httpx.Limits(max_connections=8, keepalive_expiry=30))
    try:
        response = await transport.handle_async_request(
            httpx.Request("POST", upstream.url, content=b"{}")
        )
        async for chunk in body_chunks(response):
            if chunk.endswith(b"[DONE]\n\n"):
                break  # the protocol's end: the chunked body's last chunk is still to come
        started = time.monotonic()
        await close_finished(response)
        assert response.is_closed
        assert time.monotonic() - started < 0.005, "closing waited for the body's end"
        upstream.events = []
        await asyncio.sleep(0.05)  # the body's last chunk arrives; the connection is free
        again = await transport.handle_async_request(
            httpx.Request("POST", upstream.url, content=b"next", extensions={READ_WHOLE: True})
        )
        assert json.loads(again.content)["length"] == 4
    finally:
        await transport.aclose()
    assert upstream.connections == 1
