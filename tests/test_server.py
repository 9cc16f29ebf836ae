"""The server `manage.py serve` runs: stock uvicorn (httptools) on a uvloop loop whose tasks start
eagerly. Small ASGI apps over real sockets show what serving must still guarantee: requests
served, a body that comes after its headers or over many reads, pipelining, Expect: 100-continue,
hang-ups seen by the request; the gateway itself shows that a hang-up cancels the view and its
upstream call, and `manage.py serve` itself serves over a socket."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread, free_port

ROOT = Path(__file__).resolve().parents[1]

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")
_seen: list[dict[str, Any]] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    task = asyncio.current_task()
    _var.set(scope["path"])
    # A task made here has run up to its first wait before create_task returns (eager start).
    steps: list[str] = []

    async def child() -> None:
        steps.append("child's first step")
        await asyncio.sleep(0)

    child_task = asyncio.create_task(child())
    steps.append("after create_task")
    await child_task
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    out: dict[str, Any] = {"length": len(body), "path": scope["path"], "steps": steps}
    out["loop"] = type(asyncio.get_running_loop()).__module__.split(".")[0]
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/timeout":
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            out["timed_out"] = True
    if scope["path"] == "/hangup":
        message = await receive()  # until the client goes away
        _seen.append({"message": message["type"], "task_is_same": asyncio.current_task() is task})
        return
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
    srv = ServerThread(_app, served=True).start()
    yield srv
    srv.stop()


def test_a_request_is_served_on_uvloop_with_eager_tasks(server: ServerThread) -> None:
    response = httpx.post(f"{server.url}/chat", content=b"x" * 300)
    assert response.status_code == 200
    assert response.json() == {
        "length": 300,
        "path": "/chat",
        "steps": ["child's first step", "after create_task"],
        "loop": "uvloop",
        "same_task": True,
        "context": "/chat",
    }


def test_a_timeout_inside_a_request_reaches_it(server: ServerThread) -> None:
    started = time.monotonic()
    response = httpx.get(f"{server.url}/timeout")
    assert response.json()["timed_out"] is True
    assert time.monotonic() - started < 2


def test_an_error_is_a_500_and_the_server_carries_on(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert httpx.get(f"{server.url}/now").status_code == 200


def test_a_body_written_after_the_headers_is_read_whole(server: ServerThread) -> None:
    # As httpx (under the OpenAI and Anthropic SDKs) writes a request: headers, then the body.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /later HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
        time.sleep(0.05)
        sock.sendall(b"hello")
        answer = _read_response(sock)
    assert (answer["path"], answer["length"], answer["same_task"]) == ("/later", 5, True)


@pytest.mark.parametrize("length", [200_000, 5_000_000])
def test_a_large_body_over_many_reads_is_read_whole(server: ServerThread, length: int) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % length + b"a" * 1000
        )
        sent = 1000
        while sent < length:
            time.sleep(0.001)
            piece = min(256_000, length - sent)
            sock.sendall(b"a" * piece)
            sent += piece
        answer = _read_response(sock)
    assert (answer["path"], answer["length"], answer["context"]) == ("/upload", length, "/upload")


def test_a_client_that_waits_for_100_continue_gets_it(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(
            b"POST /expect HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"body")
        answer = _read_response(sock)
    assert (answer["path"], answer["length"]) == ("/expect", 4)


def test_a_client_gone_before_its_body_leaves_the_server_serving(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /never HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
    time.sleep(0.05)
    assert httpx.get(f"{server.url}/now").status_code == 200


def test_pipelined_requests_are_answered_in_order(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
            b"POST /second HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nde"
            b"GET /third HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        answers = [_read_response(sock) for _ in range(3)]
    assert [(a["path"], a["length"], a["context"]) for a in answers] == [
        ("/first", 3, "/first"),
        ("/second", 2, "/second"),
        ("/third", 0, "/third"),
    ]


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


@pytest.mark.e2e
def test_a_client_that_hangs_up_cancels_the_view_and_its_upstream_call(
    live: dict[str, Any], gateway_server: ServerThread
) -> None:
    from tests import factories

    factories.model("sim-slow", routes=[(live["openai"], "sim-gpt+latency=3000")])

    async def tasks() -> int:
        # The metering flusher starts with the first usage record (here the 499 the hang-up
        # leaves) and outlives the request by design: not one of the view's tasks.
        return sum(
            1
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") != "_flush_forever"
        )

    baseline = gateway_server.call(tasks())
    httpx.post(f"{live['sim']}/_sim/reset")
    body = json.dumps({"model": "sim-slow", "messages": [{"role": "user", "content": "hi"}]})
    with socket.create_connection(("127.0.0.1", gateway_server.port)) as sock:
        sock.sendall(
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (live["secret"].encode(), len(body), body.encode())
        )
        deadline = time.monotonic() + 3
        while httpx.get(f"{live['sim']}/_sim/stats").json()["requests"] < 1:
            assert time.monotonic() < deadline, "the upstream call never started"
            time.sleep(0.02)
    hung_up = time.monotonic()
    # The view and its tasks are gone long before the upstream would have answered...
    while gateway_server.call(tasks()) > baseline and time.monotonic() - hung_up < 2:
        time.sleep(0.02)
    assert gateway_server.call(tasks()) <= baseline
    # ...and the upstream saw its caller leave: it never answered.
    time.sleep(max(0.0, 3.3 - (time.monotonic() - hung_up)))
    stats = httpx.get(f"{live['sim']}/_sim/stats").json()
    assert (stats["requests"], stats["output_tokens"]) == (1, 0)


def test_serve_refuses_several_workers_without_redis(settings: Any) -> None:
    from django.core.management import CommandError, call_command

    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="--workers 2 needs REDIS_URL"):
        call_command("serve", "--workers", "2")


@pytest.mark.e2e
@pytest.mark.parametrize("listen", ["port", "uds"])
def test_manage_py_serve_serves_the_platform(tmp_path: Path, listen: str) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "REDIS_URL": ""}
    port = free_port()
    where = ["--port", str(port)] if listen == "port" else ["--uds", str(tmp_path / "tf.sock")]
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--log-level", "warning", *where],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    transport = httpx.HTTPTransport() if listen == "port" else httpx.HTTPTransport(uds=where[1])
    try:
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = client.get("/openai/v1/models")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    assert time.monotonic() < deadline, "manage.py serve did not start"
                    time.sleep(0.1)
        # No key: the gateway's own 401, in OpenAI's shape.
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "invalid_request_error"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
