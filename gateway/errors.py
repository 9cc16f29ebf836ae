"""What an error looks like to each SDK: typed gateway errors, and the one place every error body
is built (OpenAI style on /openai and in the dashboard's API, Anthropic style on /anthropic, SSE
error frames, batch-line errors) and every request-id header is set.

A leaf: it imports nothing from the gateway's runtime, so any app (accounts' DRF handler) may use
it."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse
from django.views import defaults

OPENAI = "openai"
ANTHROPIC = "anthropic"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def surface_for(path: str, *, anthropic_version: bool = False) -> str:
    """The surface whose envelope an answer on ``path`` uses before any view has seen it: the
    Anthropic one under /anthropic/ and /v1/messages, and for the shared paths (/v1/models) when
    the caller sent ``anthropic-version`` (only the Anthropic SDK does); OpenAI's otherwise."""
    bare = path.lstrip("/")
    if bare.startswith(("anthropic/", "v1/messages")):
        return ANTHROPIC
    if anthropic_version and bare.startswith("v1/models"):
        return ANTHROPIC
    return OPENAI


class GatewayError(Exception):
    """An error with its answer: ``status``, the OpenAI ``type`` and the ``code`` from the error
    table every surface shares (docs/api.md: 400 bad_request, 401 unauthorized, 403 forbidden,
    429 rate_limit_exceeded / token_budget_exceeded, 500 server_error, 503 model_unavailable).
    ``limit`` names the limit a 429 hit."""

    status = 500
    type = "server_error"
    code: str | None = "server_error"
    limit: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
            if code is None and self.__class__ is GatewayError:
                code = _CODES.get(status)
        if code is not None:
            self.code = code
        self.retry_after = retry_after


# The table's code for each status, where a status alone decides it.
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    500: "server_error",
    503: "model_unavailable",
}


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "invalid_request_error", "unauthorized"


class InsufficientBalance(GatewayError):
    status, type, code = 402, "insufficient_quota", "insufficient_quota"


class BudgetExceeded(InsufficientBalance):
    """A monthly spend cap (the key's, or the member's who made it) cannot hold the request."""

    code = "monthly_budget_exceeded"


class Forbidden(GatewayError):
    status, type, code = 403, "permission_denied", "forbidden"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class UnknownModel(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class RequestTimeout(GatewayError):
    status, type, code = 408, "invalid_request_error", "request_timeout"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


# The limits a 429 names (``limit`` in both envelopes), and OpenAI's ``type`` for each: "requests"
# or "tokens", as OpenAI's own rate-limit errors say.
RPM, TPM, ACCOUNT_RPM, ACCOUNT_TPM, TOKEN_WINDOW = (
    "rpm",
    "tpm",
    "account_rpm",
    "account_tpm",
    "token_window",
)
_LIMIT_TYPES = {RPM: "requests", ACCOUNT_RPM: "requests", TPM: "tokens", ACCOUNT_TPM: "tokens"}


class RateLimited(GatewayError):
    """A per-minute limit: the key's or the account's requests (``rpm``, ``account_rpm``) or
    tokens (``tpm``, ``account_tpm``)."""

    status, type, code = 429, "requests", "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: int | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.limit = limit
        self.type = _LIMIT_TYPES[limit]


class TokenBudgetExceeded(GatewayError):
    """The plan's token window cannot cover the request and the balance is empty."""

    status, type, code, limit = 429, "tokens", "token_budget_exceeded", TOKEN_WINDOW


class ModelUnavailable(GatewayError):
    """The model cannot be served right now: no upstream answered (after retries and
    fallbacks), it has no route for this endpoint, or the gateway cannot admit anything."""

    status, type, code = 503, "server_error", "model_unavailable"


class UpstreamTimeout(ModelUnavailable):
    """The upstream took the request and did not answer in time: not retried (it may still be
    working on it), never blamed on the caller, and answered as the table's 503."""


class UpstreamFailed(ModelUnavailable):
    """The upstream could not serve the request (after retries and fallbacks)."""


class UpstreamNotFound(UpstreamFailed):
    """The upstream answered 404 for a model or path of ours: a route to fix (or, for legacy
    completions, an upstream that serves the model only as chat)."""


class LimitsUnavailable(ModelUnavailable):
    """The shared limits store cannot be reached, and the gateway fails closed."""


class UpstreamRejected(GatewayError):
    """The upstream refused the request itself (a 4xx about the request): passed to the caller
    with the table's code for its status."""

    type = "invalid_request_error"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message, status=status, code=_CODES.get(status, "bad_request"))


def envelope(*, message: str, type: str, param: str | None, code: str | None) -> dict[str, Any]:
    """The OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def openai_body(err: GatewayError) -> dict[str, Any]:
    body = envelope(message=err.message, type=err.type, param=err.param, code=err.code)
    if err.limit is not None:
        body["error"]["limit"] = err.limit
    return body


def anthropic_body(err: GatewayError, request_id: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    error: dict[str, Any] = {"type": kind, "message": err.message}
    # The table's code and a 429's limit, as extra fields (the SDK reads ``type`` and
    # ``message`` and keeps the rest in ``body``).
    if err.code is not None:
        error["code"] = err.code
    if err.limit is not None:
        error["limit"] = err.limit
    return {"type": "error", "error": error, "request_id": request_id}


def body_for(err: GatewayError, surface: str, request_id: str) -> dict[str, Any]:
    return anthropic_body(err, request_id) if surface == ANTHROPIC else openai_body(err)


def request_id_headers(surface: str, request_id: str) -> dict[str, str]:
    """``x-request-id`` on every answer, and ``request-id`` too on the Anthropic surface (its SDK
    reads that one)."""
    if surface == ANTHROPIC:
        return {"x-request-id": request_id, "request-id": request_id}
    return {"x-request-id": request_id}


def json_response(data: Any, surface: str, request_id: str, *, status: int = 200) -> HttpResponse:
    """A JSON answer with the request-id headers."""
    resp = HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
    for name, value in request_id_headers(surface, request_id).items():
        resp[name] = value
    return resp


def response(err: GatewayError, surface: str, request_id: str) -> HttpResponse:
    """The error answer in ``surface``'s envelope, with its status and request-id headers."""
    resp = json_response(body_for(err, surface, request_id), surface, request_id, status=err.status)
    if err.retry_after is not None:
        resp["retry-after"] = str(err.retry_after)
    if err.status == 402:
        # OpenAI's SDK retries some statuses unless told not to; topping up is the only remedy.
        resp["x-should-retry"] = "false"
    return resp


def stream_frame(err: GatewayError, surface: str, request_id: str) -> bytes:
    """The in-band error for a stream whose 200 status is already sent."""
    if surface == ANTHROPIC:
        data = orjson.dumps(anthropic_body(err, request_id))
        return b"event: error\ndata: " + data + b"\n\n"
    return b"data: " + orjson.dumps(openai_body(err)) + b"\n\n"


# --- Django's 404 and 500 (tokenfactory/urls.py's handler404 and handler500) ------------------

API_PREFIXES = ("/openai/", "/anthropic/", "/v1/")


def _api_surface(request: HttpRequest) -> str | None:
    if not request.path.startswith(API_PREFIXES):
        return None
    return surface_for(request.path, anthropic_version="anthropic-version" in request.headers)


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A 404 with DEBUG off: JSON in the surface's envelope on the API paths, the branded page
    elsewhere."""
    surface = _api_surface(request)
    if surface is None:
        return defaults.page_not_found(request, exception)
    err = NotFound(f"Invalid URL ({request.method} {request.path})")
    return response(err, surface, _request_id())


def server_error(request: HttpRequest) -> HttpResponse:
    """A 500 with DEBUG off (the error is logged by Django): JSON in the surface's envelope on
    the API paths, the branded page elsewhere."""
    surface = _api_surface(request)
    if surface is None:
        return defaults.server_error(request)
    err = GatewayError("The server hit an error and has logged it. Try again in a moment.")
    return response(err, surface, _request_id())


# --- batch lines ------------------------------------------------------------------------------
# A line's error is stored as {"status", "type", "code", "message", "param"} and written out in
# its surface's envelope when the batch's results are.


def line_error(err: GatewayError) -> dict[str, Any]:
    return {
        "status": err.status,
        "type": err.type,
        "code": err.code,
        "message": err.message,
        "param": err.param,
    }


def invalid_line(
    code: str, message: str, *, status: int = 400, param: str | None = None
) -> dict[str, Any]:
    """The stored error of an input line that cannot run."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"status": status, "type": kind, "code": code, "message": message, "param": param}


def openai_line_body(error: dict[str, Any]) -> dict[str, Any]:
    return envelope(
        message=error.get("message", "The request failed."),
        type=error.get("type", "server_error"),
        param=error.get("param"),
        code=error.get("code"),
    )


def anthropic_line_body(error: dict[str, Any], request_id: str) -> dict[str, Any]:
    err = GatewayError(
        error.get("message", "The request failed."),
        status=error.get("status") or 500,
        code=error.get("code"),
    )
    return anthropic_body(err, request_id)
