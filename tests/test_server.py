"""The server `manage.py serve` runs: uvicorn with each fully arrived request started inside the
read that brought it. Small ASGI apps over real sockets show that the request runs eagerly and
still behaves as a task: the same task and context after it waits, timeouts and hang-ups reach
it, a body that takes several reads and pipelined requests are served as uvicorn serves them."""

from __future__ import annotations

import asyncio
import contextvars
import json
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread
from tokenfactory.eager import start_eagerly
from tokenfactory.server import EagerHttpToolsProtocol

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")
_seen: list[dict[str, Any]] = []


def _inside_read() -> bool:
    """Whether the caller runs inside the protocol's data_received (not in a task step)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is EagerHttpToolsProtocol.data_received.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    eager = _inside_read()
    task = asyncio.current_task()
    _var.set(scope["path"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    out: dict[str, Any] = {"eager": eager, "length": len(body), "path": scope["path"]}
    if scope["path"] == "/boom":
        raise RuntimeError("boom in the first step")
    if scope["path"] == "/timeout":
        # The first real wait of this request is inside the timeout: the cancellation that ends
        # it reaches the task before the task has taken its first step of its own.
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            out["timed_out"] = True
    if scope["path"] == "/hangup":
        message = await receive()  # until the client goes away
        _seen.append({"message": message["type"], "task_is_same": asyncio.current_task() is task})
        return
    if scope["path"] != "/now":
        await asyncio.sleep(0.01)
    out["same_task"] = asyncio.current_task() is task and task is not None
    out["context"] = _var.get()
    payload = json.dumps(out).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(_app, eager=True).start()
    yield srv
    srv.stop()


def test_a_request_starts_in_the_read_that_brought_it_and_stays_one_task(
    server: ServerThread,
) -> None:
    response = httpx.post(f"{server.url}/chat", content=b"x" * 300)
    assert response.status_code == 200
    assert response.json() == {
        "eager": True,
        "length": 300,
        "path": "/chat",
        "same_task": True,
        "context": "/chat",
    }


def test_a_request_that_finishes_in_its_first_step(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/now")
    assert response.json()["eager"] is True
    assert response.json()["same_task"] is True


def test_a_timeout_in_the_first_step_reaches_the_request(server: ServerThread) -> None:
    started = time.monotonic()
    response = httpx.get(f"{server.url}/timeout")
    assert response.json()["timed_out"] is True
    assert time.monotonic() - started < 2


def test_an_error_in_the_first_step_is_a_500(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    # The connection and the server carry on.
    assert httpx.get(f"{server.url}/now").status_code == 200


def test_a_body_that_arrives_over_several_reads_starts_as_uvicorn_starts_it(
    server: ServerThread,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        length = 200_000
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % length + b"a" * 1000
        )
        sent = 1000
        while sent < length:
            time.sleep(0.005)
            piece = min(50_000, length - sent)
            sock.sendall(b"a" * piece)
            sent += piece
        answer = _read_response(sock)
    assert answer == {
        "eager": False,
        "length": length,
        "path": "/upload",
        "same_task": True,
        "context": "/upload",
    }


def test_a_body_written_after_the_headers_starts_the_request_when_it_arrives(
    server: ServerThread,
) -> None:
    # As httpx (under the OpenAI and Anthropic SDKs) writes a request: headers, then the body.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /later HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
        time.sleep(0.05)
        sock.sendall(b"hello")
        answer = _read_response(sock)
    assert (answer["eager"], answer["length"], answer["same_task"]) == (True, 5, True)


def test_a_client_that_waits_for_100_continue_gets_it(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(
            b"POST /expect HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"body")
        answer = _read_response(sock)
    assert (answer["path"], answer["length"], answer["eager"]) == ("/expect", 4, False)


def test_a_client_gone_before_its_body_leaves_the_server_serving(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /never HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
    time.sleep(0.05)
    assert httpx.get(f"{server.url}/now").json()["eager"] is True


def test_pipelined_requests_are_answered_in_order(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
            b"POST /second HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nde"
        )
        first, second = _read_response(sock), _read_response(sock)
    assert (first["path"], first["length"], first["eager"]) == ("/first", 3, True)
    # The second waited for the first's answer, then started as a plain task.
    assert (second["path"], second["length"], second["context"]) == ("/second", 2, "/second")


def test_a_client_that_hangs_up_is_seen_by_the_request(server: ServerThread) -> None:
    _seen.clear()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /hangup HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while not _seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _seen == [{"message": "http.disconnect", "task_is_same": True}]


def _read_response(sock: socket.socket) -> dict[str, Any]:
    """One HTTP response with a content-length from ``sock``: its JSON body."""
    data = _pending.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    # Anything past this response belongs to the next one: keep it for the next read.
    extra = body[length:]
    if extra:
        _pending[sock] = extra
    return dict(json.loads(body[:length]))


_pending: dict[socket.socket, bytes] = {}


def test_serve_refuses_several_workers_without_redis(settings: Any) -> None:
    from django.core.management import CommandError, call_command

    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="--workers 2 needs REDIS_URL"):
        call_command("serve", "--workers", "2")


async def test_start_eagerly_runs_the_first_step_at_once_as_the_task() -> None:
    log: list[str] = []
    tasks: list[asyncio.Task[Any] | None] = []

    async def work() -> int:
        log.append("first")
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0.01)
        log.append("second")
        tasks.append(asyncio.current_task())
        return 42

    task = start_eagerly(asyncio.get_running_loop(), work(), contextvars.copy_context())
    assert log == ["first"]  # before the event loop has run anything
    assert await task == 42
    assert log == ["first", "second"]
    assert tasks == [task, task]


async def test_a_cancellation_before_the_tasks_first_step_reaches_the_coroutine() -> None:
    log: list[str] = []

    async def work() -> None:
        log.append("first")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            log.append("finally")

    task = start_eagerly(asyncio.get_running_loop(), work(), contextvars.copy_context())
    task.cancel()  # before the loop gave the task its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["first", "cancelled", "finally"]


async def test_a_coroutine_that_ends_in_its_first_step_gives_the_task_its_outcome() -> None:
    async def answer() -> str:
        return "done"

    async def fail() -> None:
        raise ValueError("in the first step")

    loop = asyncio.get_running_loop()
    assert await start_eagerly(loop, answer(), contextvars.copy_context()) == "done"
    with pytest.raises(ValueError, match="in the first step"):
        await start_eagerly(loop, fail(), contextvars.copy_context())
