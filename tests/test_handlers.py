"""The middleware-free handler the inference paths go through (tokenfactory.handlers), called as
ASGI in-process with this module as the URL conf: views answer without any middleware, sync and
template views work, errors become Django's 404/500 and are logged, bodies of many messages are
read whole, responses and requests are closed, and a disconnect cancels the view."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from typing import Any

import pytest
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.template import engines
from django.template.response import SimpleTemplateResponse
from django.urls import path

from tokenfactory.handlers import MiddlewareFreeASGIHandler

_events: list[str] = []
_files: list[Any] = []


async def echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"length": len(request.body), "path": request.path})


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"sync")


async def template_view(request: HttpRequest) -> SimpleTemplateResponse:
    return SimpleTemplateResponse(engines["django"].from_string("rendered {{ n }}"), {"n": 7})


async def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


async def slow(request: HttpRequest) -> HttpResponse:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        _events.append("cancelled")
        raise
    return HttpResponse(b"late")


async def file_view(request: HttpRequest) -> FileResponse:
    handle = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the response)
    handle.write(b"file body")
    handle.seek(0)
    _files.append(handle)
    return FileResponse(handle)


# As tokenfactory/urls.py has them (the default 404 page links to the dashboard's URL names,
# which this URL map does not have).
handler404 = "gateway.errors.page_not_found"
handler500 = "gateway.errors.server_error"

urlpatterns = [
    path("v1/echo", echo),
    path("v1/sync", sync_view),
    path("v1/template", template_view),
    path("v1/boom", boom),
    path("v1/slow", slow),
    path("v1/file", file_view),
]


@pytest.fixture
def handler(settings: Any) -> MiddlewareFreeASGIHandler:
    settings.ROOT_URLCONF = __name__
    settings.DEBUG = False
    _events.clear()
    _files.clear()
    return MiddlewareFreeASGIHandler()


async def _call(
    handler: MiddlewareFreeASGIHandler,
    url: str,
    messages: list[dict[str, Any]] | None = None,
    *,
    hang_up_after: float | None = None,
) -> dict[str, Any]:
    """One request through the handler: the status, headers and body it sent."""
    incoming = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        if hang_up_after is not None:
            await asyncio.sleep(hang_up_after)
        else:
            await asyncio.Event().wait()  # the client stays until the end
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    await asyncio.wait_for(handler(scope, receive, send), 5)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return {
        "status": start["status"] if start else None,
        "headers": {k.decode().lower(): v.decode() for k, v in start["headers"]} if start else {},
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    }


async def test_a_view_answers_without_any_middleware(handler: MiddlewareFreeASGIHandler) -> None:
    answer = await _call(handler, "/v1/echo")
    assert answer["status"] == 200
    assert answer["body"] == b'{"length": 0, "path": "/v1/echo"}'
    # The settings' middleware chain did not run (no session, CSRF or messages: no cookie, no
    # Vary on it); the security headers are applied without it (issue #16 item 18).
    assert "set-cookie" not in answer["headers"] and "vary" not in answer["headers"]
    assert answer["headers"]["x-frame-options"] == "DENY"
    assert answer["headers"]["x-content-type-options"] == "nosniff"


async def test_sync_and_template_views_answer(handler: MiddlewareFreeASGIHandler) -> None:
    assert (await _call(handler, "/v1/sync"))["body"] == b"sync"
    assert (await _call(handler, "/v1/template"))["body"] == b"rendered 7"


async def test_a_body_in_many_messages_is_read_whole(handler: MiddlewareFreeASGIHandler) -> None:
    parts = [b"a" * 40_000, b"b" * 40_000, b"c" * 5]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    answer = await _call(handler, "/v1/echo", messages)
    assert answer["body"] == b'{"length": 80005, "path": "/v1/echo"}'


async def test_errors_are_djangos_404_and_500_and_are_logged(
    handler: MiddlewareFreeASGIHandler, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django.request"):
        missing = await _call(handler, "/v1/nothing-here")
        failed = await _call(handler, "/v1/boom")
    assert (missing["status"], failed["status"]) == (404, 500)
    logged = [record.getMessage() for record in caplog.records]
    assert "Not Found: /v1/nothing-here" in logged
    assert "Internal Server Error: /v1/boom" in logged
    # The handler carries on.
    assert (await _call(handler, "/v1/echo"))["status"] == 200


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
async def test_the_response_is_closed_once_sent(handler: MiddlewareFreeASGIHandler) -> None:
    answer = await _call(handler, "/v1/file")
    assert answer["body"] == b"file body"
    assert _files[0].closed


async def test_a_disconnect_cancels_the_view(handler: MiddlewareFreeASGIHandler) -> None:
    answer = await _call(handler, "/v1/slow", hang_up_after=0.05)
    assert answer["status"] is None  # nothing was sent
    assert _events == ["cancelled"]
