"""The ASGI entry point over a real socket: what it answers to requests no view serves."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/v1/responses/x", "/nope", "/"])
def test_a_websocket_upgrade_to_a_path_without_a_socket_is_refused_with_403(
    gateway_server: Any, path: str
) -> None:
    url: str = gateway_server.url.replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin("http://127.0.0.1"), open_timeout=5).close()
    assert refused.value.response.status_code == 403
    # The server carries on.
    with pytest.raises(InvalidStatus) as again:
        connect(url, origin=Origin("http://127.0.0.1"), open_timeout=5).close()
    assert again.value.response.status_code == 403


@pytest.mark.parametrize("path", ["/v1/responses", "/openai/v1/responses"])
def test_the_responses_websocket_is_refused_with_426_so_clients_use_http(
    gateway_server: Any, path: str
) -> None:
    url: str = gateway_server.url.replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"Authorization": "Bearer tf-x"}, open_timeout=5).close()
    response = refused.value.response
    assert response.status_code == 426
    error = orjson.loads(response.body or b"{}")["error"]
    assert error["code"] == "websocket_not_supported" and "HTTP" in error["message"]


# --- the request edge: bodies too large or too slow, headers too slow ----------------------------


def _open(server: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def _head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (whole, the server closes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("path", "surface"),
    [
        ("/openai/v1/chat/completions", "openai"),
        ("/v1/chat/completions", "openai"),
        ("/anthropic/v1/messages", "anthropic"),
        ("/v1/messages", "anthropic"),
        ("/billing/stripe/webhook/", ""),
        ("/login/", ""),
    ],
)
@pytest.mark.parametrize("declared", [400_000_000, 32 * 1024 * 1024 + 1])
def test_a_declared_body_over_the_limit_is_refused_at_once_without_reading_it(
    gateway_server: Any, path: str, surface: str, declared: int
) -> None:
    started = time.monotonic()
    with _open(gateway_server) as sock:
        sock.sendall(_head(path, **{"Content-Length": str(declared)}) + b"{}")
        status, headers, body = _response(sock)
    assert status == 413
    assert time.monotonic() - started < 2
    assert headers.get("connection") == "close"
    if surface == "openai":
        assert orjson.loads(body)["error"]["code"] == "request_too_large"
        assert headers["x-request-id"].startswith("req_")
    elif surface == "anthropic":
        assert orjson.loads(body)["error"]["type"] == "request_too_large"
        assert headers["request-id"] == headers["x-request-id"]


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/billing/stripe/webhook/"])
def test_a_chunked_body_is_cut_off_at_the_limit_as_it_arrives(
    gateway_server: Any, settings: Any, path: str
) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 1024 * 1024
    chunk = b"a" * 65536
    with _open(gateway_server) as sock:
        sock.sendall(_head(path, **{"Transfer-Encoding": "chunked"}))
        for _ in range(17):  # just over the limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _headers, body = _response(sock)
    assert status == 413
    if path.startswith("/openai/"):
        assert orjson.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/login/"])
def test_a_body_that_stops_arriving_times_out(
    gateway_server: Any, settings: Any, path: str
) -> None:
    settings.HTTP_BODY_TIMEOUT_SECONDS = 1
    started = time.monotonic()
    with _open(gateway_server) as sock:
        sock.sendall(_head(path, **{"Content-Length": "100"}) + b'{"model":')
        status, _headers, body = _response(sock)
    assert status == 408
    assert 0.9 < time.monotonic() - started < 3
    if path.startswith("/openai/"):
        assert orjson.loads(body)["error"]["message"]


@pytest.mark.parametrize("sent", [b"", b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"])
def test_headers_that_do_not_arrive_in_time_close_the_connection(
    gateway_server: Any, settings: Any, sent: bytes
) -> None:
    settings.HTTP_HEADER_TIMEOUT_SECONDS = 1
    started = time.monotonic()
    with _open(gateway_server) as sock:
        sock.sendall(sent)
        assert sock.recv(65536) == b""
    assert time.monotonic() - started < 3


# --- DEBUG off: branded pages, JSON on the API paths ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "surface"),
    [
        ("/openai/v1/chat/completions", {}, "openai"),
        ("/v1/embeddings", {}, "openai"),
        ("/anthropic/v1/messages", {}, "anthropic"),
        ("/v1/messages/batches", {}, "anthropic"),
        ("/v1/models", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("/dashboard/", {}, ""),
    ],
)
def test_the_404_and_500_handlers_answer_json_on_api_paths_and_branded_pages_elsewhere(
    settings: Any, path: str, headers: dict[str, str], surface: str
) -> None:
    from django.test import RequestFactory
    from django.urls import get_resolver

    settings.DEBUG = False
    request = RequestFactory().post(path, headers=headers)
    resolver = get_resolver()
    handle_404: Any = resolver.resolve_error_handler(404)
    handle_500: Any = resolver.resolve_error_handler(500)
    not_found, failed = handle_404(request, Exception("x")), handle_500(request)
    assert (not_found.status_code, failed.status_code) == (404, 500)
    if not surface:
        assert b'data-testid="error-page"' in not_found.content
        assert b'data-testid="error-page"' in failed.content
        return
    for response in (not_found, failed):
        assert response["Content-Type"] == "application/json"
        assert response["x-request-id"].startswith("req_")
        body = orjson.loads(response.content)
        if surface == "anthropic":
            assert body["type"] == "error" and body["error"]["message"]
            assert response["request-id"] == response["x-request-id"]
        else:
            assert body["error"]["message"] and body["error"]["type"]
    assert "Traceback" not in failed.content.decode()


def test_with_debug_off_an_unknown_page_is_the_branded_404_without_the_url_list(
    gateway_server: Any, settings: Any
) -> None:
    settings.DEBUG = False
    for path in ("/no-such-page/", "/billing/nope/", "/accounts/x/y/"):
        response = httpx.get(gateway_server.url + path)
        assert response.status_code == 404
        assert 'data-testid="error-page"' in response.text
        assert "URLconf" not in response.text and "tokenfactory.urls" not in response.text


# --- security headers on the gateway's paths ------------------------------------------------------


@pytest.mark.parametrize("path", ["/openai/v1/models", "/v1/models", "/v1/docs", "/v1/nope"])
def test_the_gateway_paths_carry_the_security_headers(
    gateway_server: Any, settings: Any, path: str
) -> None:
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    plain = httpx.get(gateway_server.url + path)
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["x-frame-options"] == "DENY"
    assert plain.headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in plain.headers  # never over plain HTTP
    secure = httpx.get(gateway_server.url + path, headers={"x-forwarded-proto": "https"})
    assert secure.headers["strict-transport-security"].startswith("max-age=31536000")

    settings.SECURE_SSL_REDIRECT = True
    redirected = httpx.post(gateway_server.url + path, json={})
    assert redirected.status_code == 301
    assert redirected.headers["location"].startswith("https://")
