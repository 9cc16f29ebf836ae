"""What an error looks like to each SDK: typed gateway errors, and one function per surface that
builds every error body (OpenAI style on /openai, Anthropic style on /anthropic)."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

OPENAI = "openai"
ANTHROPIC = "anthropic"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
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


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "server_error"

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
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class InsufficientBalance(GatewayError):
    status, type, code = 402, "insufficient_quota", "insufficient_quota"


class Forbidden(GatewayError):
    status, type, code = 403, "permission_denied", "forbidden"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class UnknownModel(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class RateLimited(GatewayError):
    status, type, code = 429, "requests", "rate_limit_exceeded"


class TokenBudgetExceeded(GatewayError):
    status, type, code = 429, "tokens", "token_budget_exceeded"


class UpstreamFailed(GatewayError):
    """The upstream could not serve the request (after retries and fallbacks)."""

    status, type, code = 502, "server_error", "upstream_error"


class ModelUnavailable(GatewayError):
    status, type, code = 503, "server_error", "model_unavailable"


class LimitsUnavailable(GatewayError):
    """The shared limits store cannot be reached, and the gateway fails closed."""

    status, type, code = 503, "server_error", "service_unavailable"


class UpstreamRejected(GatewayError):
    """The upstream refused the request itself (a 4xx about the request): passed to the caller."""

    type, code = "invalid_request_error", None


def openai_body(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    }


def anthropic_body(err: GatewayError, request_id: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    return {
        "type": "error",
        "error": {"type": kind, "message": err.message},
        "request_id": request_id,
    }


def body_for(err: GatewayError, surface: str, request_id: str) -> dict[str, Any]:
    return anthropic_body(err, request_id) if surface == ANTHROPIC else openai_body(err)


def response(err: GatewayError, surface: str, request_id: str) -> HttpResponse:
    resp = HttpResponse(
        orjson.dumps(body_for(err, surface, request_id)),
        status=err.status,
        content_type="application/json",
    )
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
