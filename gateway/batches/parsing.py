"""Batch input of both APIs: the lines of an OpenAI batch input file and the requests of an
Anthropic Message Batch, each becoming a ``BatchLine`` (a line that cannot run keeps its error)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway import errors, exchange
from gateway.models import BatchLine

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
MESSAGES_ENDPOINT = "/v1/messages"
OPENAI_ENDPOINTS = (CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT)
MAX_ANTHROPIC_REQUESTS = 100_000


def line_request_id(batch_id: str, index: int) -> str:
    return f"batch_req_{batch_id}_{index}"


def _parse_openai_line(
    raw: str, number: int, endpoint: str
) -> tuple[str, Any, dict[str, Any] | None]:
    """(custom_id, body, error) for one input line; a line that cannot run keeps its error."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = f"Line {number} is not valid JSON: {exc}."
        return "", None, errors.invalid_line("invalid_json", message)
    if not isinstance(item, dict):
        return (
            "",
            None,
            errors.invalid_line("invalid_request", f"Line {number} is not a JSON object."),
        )
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        message = f"Line {number} has no 'custom_id' string."
        return "", None, errors.invalid_line("missing_custom_id", message, param="custom_id")
    url = item.get("url")
    if url != endpoint:
        message = (
            f"Line {number} ('{custom_id}') has url {url!r}, but this batch's endpoint is "
            f"'{endpoint}'; every line must use the batch's endpoint."
        )
        return custom_id, None, errors.invalid_line("invalid_url", message, param="url")
    method = item.get("method", "POST")
    if method != "POST":
        message = f"Line {number} ('{custom_id}') has method {method!r}; only POST is supported."
        return custom_id, None, errors.invalid_line("invalid_method", message, param="method")
    body = item.get("body")
    if not isinstance(body, dict):
        message = f"Line {number} ('{custom_id}') has no 'body' object."
        return custom_id, None, errors.invalid_line("invalid_body", message, param="body")
    depth_error = _too_deep(body, raw.encode())
    if depth_error:
        message = f"Line {number} ('{custom_id}'): {depth_error}"
        return custom_id, None, errors.invalid_line("invalid_body", message, param="body")
    return custom_id, body, None


def _too_deep(body: dict[str, Any], raw: bytes = b"") -> str:
    """The pipeline's nesting check, at creation: a line too deep to send upstream fails there,
    costing nothing, instead of when the batch reaches it."""
    try:
        exchange.check_depth(body, raw)
    except errors.GatewayError as exc:
        return exc.message
    return ""


def openai_lines(text: str, *, batch_id: str, endpoint: str) -> list[BatchLine]:
    """One line per non-blank input line; a repeated custom_id fails its line."""
    lines: list[BatchLine] = []
    seen: set[str] = set()
    number = 0
    for raw in text.splitlines():
        number += 1
        if not raw.strip():
            continue
        custom_id, body, error = _parse_openai_line(raw, number, endpoint)
        if error is None and custom_id in seen:
            message = f"Line {number} repeats custom_id '{custom_id}'; custom_ids must be unique."
            error = errors.invalid_line("duplicate_custom_id", message, param="custom_id")
        seen.add(custom_id)
        index = len(lines)
        lines.append(
            BatchLine(
                index=index,
                custom_id=custom_id[:200],
                request_id=line_request_id(batch_id, index),
                body=body,
                error=error,
            )
        )
    return lines


def anthropic_lines(requests: Any, *, batch_id: str) -> list[BatchLine]:
    """One line per request; a request without a unique custom_id refuses the whole batch (as
    Anthropic does), one without a 'params' object fails its line."""
    if not isinstance(requests, list) or not requests:
        raise errors.BadRequest("'requests' must be a non-empty array.", param="requests")
    if len(requests) > MAX_ANTHROPIC_REQUESTS:
        raise errors.BadRequest(
            f"A batch holds at most {MAX_ANTHROPIC_REQUESTS:,} requests.", param="requests"
        )
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            raise errors.BadRequest(
                f"requests[{index}].custom_id: Field required", param=f"requests[{index}]"
            )
        if custom_id in seen:
            raise errors.BadRequest(
                f"requests[{index}]: custom_id '{custom_id}' is not unique within the batch.",
                param=f"requests[{index}].custom_id",
            )
        seen.add(custom_id)
        params = item.get("params")
        error = None
        if not isinstance(params, dict):
            message = f"'{custom_id}': 'params' must be an object."
            error = errors.invalid_line("invalid_body", message)
            params = None
        elif depth_error := _too_deep(params):
            error = errors.invalid_line("invalid_body", f"'{custom_id}': {depth_error}")
            params = None
        lines.append(
            BatchLine(
                index=index,
                custom_id=custom_id[:200],
                request_id=line_request_id(batch_id, index),
                body=params,
                error=error,
            )
        )
    return lines
