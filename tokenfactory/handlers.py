"""ASGI plumbing: a middleware-free Django handler for the inference paths, and static files.

Django runs MiddlewareMixin middleware in async mode by handing each hook to a thread
(``sync_to_async``), several hops per request. Inference and API calls authenticate with keys,
not cookies, so they need no sessions, CSRF or messages: they go through a handler that has the
same URLs and views but no middleware at all, built on Django's handler through its public
methods only.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from asgiref.sync import iscoroutinefunction, sync_to_async
from asgiref.wsgi import WsgiToAsgi
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch, set_script_prefix
from django.utils.log import log_response
from whitenoise import WhiteNoise

from gateway import errors, metrics
from gateway.exchange import new_request_id

GATEWAY_PREFIXES = errors.API_PREFIXES


class MiddlewareFreeASGIHandler(ASGIHandler):
    """Django's ASGI handler for the key-authenticated paths: no middleware, and none of the
    per-request thread hops and bookkeeping.

    Built on the stock handler's public methods (``read_body``, ``create_request``,
    ``resolve_request``, ``check_response``, ``send_response``), it overrides three:

    - ``__call__`` skips the per-request ``ThreadSensitiveContext`` (the views here keep their
      database work in worker threads that manage their own connections);
    - ``handle`` runs the view in the connection's own task (one task per request fewer), sends
      no ``request_started`` (its receivers are sync: a trip through a thread each) and closes
      the response inline rather than in a thread (``request_finished``'s receivers then run in
      the event loop's thread, which holds no database connection to close): a measured
      1.5-2 ms of event-loop time per request at 64 concurrent clients;
    - ``get_response_async`` resolves the path (remembered per path) and calls the view, with
      Django's own conversion of an exception into a response, and no middleware chain.

    ``read_body`` reads a one-message body (every inference call) without a spooled temporary
    file. The stock ``__init__`` still builds the settings' middleware chain; nothing uses it."""

    _RESOLVED_MAX = 1024

    def __init__(self) -> None:
        super().__init__()
        self._resolved: dict[str, tuple[ResolverMatch, Any]] = {}
        self._respond: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = cast(
            Any, convert_exception_to_response(self._view_response)
        )
        self._security_middleware()
        setting_changed.connect(self._forget_routes, weak=False)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await self.send_response(error_response, send)
            return

        # As Django does: a disconnect while the view runs cancels it (and its upstream call);
        # here by cancelling this task rather than a second one made for the view.
        this = asyncio.current_task()
        assert this is not None
        state = {"served": False, "aborted": False}

        async def listen() -> None:
            message = await receive()
            if message["type"] == "http.disconnect" and not state["served"]:
                state["aborted"] = True
                this.cancel()

        listener = asyncio.create_task(listen())
        response: HttpResponseBase | None = None
        try:
            response = await self.get_response_async(request)
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if not state["aborted"]:
                raise
            this.uncancel()
        finally:
            state["served"] = True
            listener.cancel()
            request.close()
            body_file.close()
        if response is not None:
            response.close()

    async def read_body(self, receive: Any) -> Any:
        """The request body as a file; a body that came in one message (every inference call)
        as an in-memory one, anything longer spooled as Django does."""
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        if not message.get("more_body", False):
            return io.BytesIO(message.get("body", b""))
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (returned open)
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        body_file.write(message.get("body", b""))
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            body_file.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file

    def _security_middleware(self) -> None:
        """Django's own security headers and HTTPS redirect (SecurityMiddleware) and frame
        protection (XFrameOptionsMiddleware), built once from the settings and applied to each
        answer by direct calls: no trip through the middleware chain."""
        self.security = SecurityMiddleware(_no_view)
        self.frames = XFrameOptionsMiddleware(_no_view)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The view's response, without middleware but with the security headers (and the HTTPS
        redirect, if set); a 4xx or 5xx logged as Django logs it."""
        redirect = self.security.process_request(request)
        response: HttpResponseBase = redirect or await self._respond(request)
        # Both only set headers, which a streamed answer has too (the stubs say HttpResponse).
        self.security.process_response(request, cast(HttpResponse, response))
        self.frames.process_response(request, cast(HttpResponse, response))
        if response.status_code >= 400:
            await sync_to_async(log_response, thread_sensitive=False)(
                "%s: %s",
                response.reason_phrase,
                request.path,
                response=cast(Any, response),
                request=request,
            )
        return response

    async def _view_response(self, request: HttpRequest) -> HttpResponseBase:
        match, view = self._route(request)
        response = await view(request, *match.args, **match.kwargs)
        self.check_response(response, match.func)
        render = getattr(response, "render", None)
        if callable(render):  # a template response (DRF's Response is one)
            response = await sync_to_async(render, thread_sensitive=True)()
        return cast(HttpResponseBase, response)

    def _route(self, request: HttpRequest) -> tuple[ResolverMatch, Any]:
        """Where the path resolves, and its view ready to await (atomic if the settings ask, a
        sync view in a thread); remembered per path (a handful of paths take nearly every
        request), unless the path does not resolve."""
        path = request.path_info
        found = self._resolved.get(path)
        if found is None:
            match = self.resolve_request(request)
            view: Any = self.make_view_atomic(match.func)
            if not iscoroutinefunction(view):
                view = sync_to_async(view, thread_sensitive=True)
            found = (match, view)
            if len(self._resolved) < self._RESOLVED_MAX:
                self._resolved[path] = found
        else:
            request.resolver_match = found[0]
        return found

    def _forget_routes(self, **kwargs: Any) -> None:
        self._resolved.clear()
        self._security_middleware()


def _no_view(request: HttpRequest) -> HttpResponseBase:
    raise AssertionError("the security middleware only adds headers here")


def _not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not found"]


def static_app() -> Any:
    """WhiteNoise over collected files, plus the source folders in development; served as ASGI
    outside the middleware chain (WhiteNoise is WSGI-only, so static files take a thread, the
    inference path never does)."""
    app = WhiteNoise(
        _not_found,
        root=str(settings.STATIC_ROOT) if settings.STATIC_ROOT.exists() else None,
        prefix=settings.STATIC_URL,
        autorefresh=settings.DEBUG,
        max_age=None if settings.DEBUG else 3600,
    )
    if settings.DEBUG or not settings.STATIC_ROOT.exists():
        # Development, or nothing collected yet: serve straight from the source folders.
        for finder in finders.get_finders():
            for storage in getattr(finder, "storages", {}).values():
                location = getattr(storage, "location", None)
                if location:
                    app.add_files(str(location), prefix=settings.STATIC_URL + _prefix(storage))
    return WsgiToAsgi(app)  # type: ignore[no-untyped-call]


def _prefix(storage: Any) -> str:
    prefix = getattr(storage, "prefix", None)
    return f"{prefix.strip('/')}/" if prefix else ""


class Router:
    """Send each HTTP request to the handler that suits its path, through the body guard."""

    def __init__(self, full: Any, bare: Any, static: Any) -> None:
        self.full, self.bare, self.static = full, bare, static

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path.startswith(GATEWAY_PREFIXES):
            app = self.bare
        elif path == metrics.PATH:
            app = metrics.endpoint
        elif path.startswith(settings.STATIC_URL):
            app = self.static
        else:
            app = self.full
        await guard_body(app, scope, receive, send)


# --- the body guard -----------------------------------------------------------------------------


async def guard_body(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Run ``app`` with the request body bounded, before any handler reads it:

    - a ``Content-Length`` over ``GATEWAY_MAX_BODY_BYTES`` is answered 413 at once, unread;
    - a body sent without one (chunked) is counted as it arrives and answered 413 the moment it
      passes the limit;
    - the whole body must arrive within ``HTTP_BODY_TIMEOUT_SECONDS`` of the first read, or 408.

    Refusals go out with ``Connection: close`` (the rest of the body is never read), in the
    surface's error envelope on the gateway's paths; the handler then sees a disconnect."""
    limit: int = settings.GATEWAY_MAX_BODY_BYTES
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                await refuse_body(scope, send, errors.PayloadTooLarge(_too_large(limit)))
                return
            break
    received = 0
    done = expired = False
    timer: asyncio.TimerHandle | None = None
    task = asyncio.current_task()
    assert task is not None

    def expire() -> None:
        # One timer per request rather than a timeout per read: it cancels the read in progress.
        nonlocal expired
        expired = True
        task.cancel()

    async def guarded() -> dict[str, Any]:
        nonlocal received, done, timer
        if done:
            return cast(dict[str, Any], await receive())
        if timer is None:
            timer = asyncio.get_running_loop().call_later(
                settings.HTTP_BODY_TIMEOUT_SECONDS, expire
            )
        try:
            message: dict[str, Any] = await receive()
        except asyncio.CancelledError:
            if not expired:
                raise
            task.uncancel()
            done = True
            seconds = settings.HTTP_BODY_TIMEOUT_SECONDS
            err = errors.RequestTimeout(f"The request body did not arrive within {seconds} s.")
            await refuse_body(scope, send, err)
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                timer.cancel()
                done = True
                await refuse_body(scope, send, errors.PayloadTooLarge(_too_large(limit)))
                return {"type": "http.disconnect"}
            if message.get("more_body", False):
                return message
        timer.cancel()
        done = True
        return message

    await app(scope, guarded, send)


def _too_large(limit: int) -> str:
    return f"The request body is over the {limit:,}-byte limit. Send less content."


async def refuse_body(scope: dict[str, Any], send: Any, err: errors.GatewayError) -> None:
    """Answer ``err`` before the body is read, and close the connection."""
    path = scope.get("path", "")
    headers: list[tuple[bytes, bytes]] = [(b"connection", b"close")]
    if path.startswith(GATEWAY_PREFIXES):
        anthropic_version = any(name == b"anthropic-version" for name, _ in scope["headers"])
        surface = errors.surface_for(path, anthropic_version=anthropic_version)
        request_id = new_request_id()
        body = orjson.dumps(errors.body_for(err, surface, request_id))
        headers.append((b"content-type", b"application/json"))
        for name, value in errors.request_id_headers(surface, request_id).items():
            headers.append((name.encode(), value.encode()))
    else:
        body = err.message.encode()
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
