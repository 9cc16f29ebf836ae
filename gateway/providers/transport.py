"""The upstream connection pool: httpx's transport interface over aiohttp's connector.

The gateway speaks httpx (requests, responses, timeouts, errors) and one ``httpx.AsyncClient``
per process owns this transport. Underneath, aiohttp's connector keeps the connections:
httpcore's pool rescans every connection (with a poll() each) on every request, 2-5 ms of CPU per
request at 64 concurrent upstream calls here, where aiohttp's costs about 0.3 ms.

This replaces the ``httpx-aiohttp`` glue, which re-parsed the URL, built a timeout object and
entered an exception-mapping context manager per request and per body chunk: the URL and timeouts
here are remembered (an upstream route has one of each), and errors are mapped once per call.
Only public API on both sides: a ``httpx.AsyncBaseTransport`` whose responses carry an
``httpx.AsyncByteStream`` over aiohttp's ``ClientResponse``.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx
from yarl import URL

_HTTP11 = {"http_version": b"HTTP/1.1"}
# A request extension: read the whole body before returning (a non-stream call), which saves
# httpx's chain of async iterators over a body that arrives in one piece.
READ_WHOLE = "tf.read_whole"
# Set by httpx when it built the request; aiohttp writes its own from the URL and the body.
_DROPPED = frozenset({"host", "content-length", "transfer-encoding"})


def _mapped(exc: BaseException) -> httpx.TransportError:
    """An aiohttp failure as the httpx exception the router and relays act on."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)


_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The verifying TLS context (certifi's CA bundle), loaded once per process: tens of
    milliseconds that would otherwise land on the first request of every event loop."""
    return httpx.create_ssl_context()


# Closing a stream whose protocol end was seen: how long to wait for the rest of the body (the
# upstream's end-of-body marker) and how much of it to take before giving the connection up.
_TAIL_WAIT_S = 2.0
_TAIL_MAX_BYTES = 1 << 16
_tails: set[asyncio.Task[None]] = set()


class _Body(httpx.AsyncByteStream):
    """An upstream body, chunk by chunk as the socket delivers it."""

    __slots__ = ("_response", "_tail_read")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._tail_read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except _FAILURES as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        if self._tail_read:
            return  # the tail reader releases the connection (close_after_tail)
        # Read to the end: the connection goes back to the pool; cut short: it is closed.
        self._response.release()

    def close_after_tail(self) -> None:
        """The caller has all it needs (the stream's protocol end, such as ``[DONE]``, came in):
        release now when the body is complete, else read the rest (the chunked encoding's last
        chunk, usually already on its way) in the background, so the connection can go back to
        the pool without making the caller's response wait for it."""
        content = self._response.content
        if content.is_eof() or self._response.closed:
            self._response.release()
            return
        self._tail_read = True
        task = asyncio.get_running_loop().create_task(self._read_tail())
        _tails.add(task)
        task.add_done_callback(_tails.discard)

    async def _read_tail(self) -> None:
        content, taken = self._response.content, 0
        try:
            async with asyncio.timeout(_TAIL_WAIT_S):
                while taken <= _TAIL_MAX_BYTES:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    taken += len(chunk)
        except _FAILURES:
            pass  # timed out or broken: released below, which closes the connection
        finally:
            # At the end of the body the connection is kept; otherwise aiohttp closes it.
            self._response.release()


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """A streamed response's decoded body, chunk by chunk as the socket delivers it: straight
    from this transport's stream (``response.stream``) when the upstream did not compress it
    (every SSE stream seen so far), which spares each chunk httpx's layers (about 1 us a chunk);
    through httpx's decoders when it did."""
    body = response.stream
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        return response.aiter_bytes()
    if isinstance(body, _Body):
        return body.__aiter__()
    return response.aiter_raw()


async def close_finished(response: httpx.Response) -> None:
    """Close an upstream stream whose protocol-level end the relay has seen: at once for the
    caller, and the connection back to the pool once its last bytes arrive (``_Body``)."""
    body = response.stream
    if isinstance(body, _Body):
        body.close_after_tail()
    await response.aclose()


class UpstreamTransport(httpx.AsyncBaseTransport):
    """One aiohttp session and connector per event loop, made on first use."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[object, URL] = {}
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 30.0,
                ssl=ssl_context(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes, as the response's headers say
            )
        return self._session

    def _url(self, request: httpx.Request) -> URL:
        key = str(request.url)
        url = self._urls.get(key)
        if url is None:
            url = URL(key, encoded=True)
            if len(self._urls) < 4096:
                self._urls[key] = url
        return url

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.items() if k not in _DROPPED]
        try:
            data = request.content
        except httpx.RequestNotRead:
            # A multipart upload (transcriptions): already in memory, sent with its length.
            data = await request.aread()
        try:
            response = await self._client().request(
                request.method,
                self._url(request),
                headers=headers,
                data=data or None,
                allow_redirects=False,
                timeout=self._timeout(request),
            )
            if request.extensions.get(READ_WHOLE):
                body = await response.read()
                return httpx.Response(
                    status_code=response.status,
                    headers=response.raw_headers,
                    content=body,
                    request=request,
                    extensions=_HTTP11,
                )
        except _FAILURES as exc:
            raise _mapped(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=_HTTP11,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
