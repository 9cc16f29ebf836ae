"""A batch's results in each surface's format: the OpenAI output and error files, the Anthropic
results file, one JSON line per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway import errors
from gateway.batches import files
from gateway.errors import OPENAI
from gateway.models import Batch, BatchLine


def write_files(batch: Batch, rows: Sequence[BatchLine]) -> None:
    """Set ``batch``'s output (and, for OpenAI, error) file from its lines (not saved)."""
    if batch.surface == OPENAI:
        batch.output_file = files.write_output(
            batch,
            "output",
            (openai_line(r) for r in rows if r.status == BatchLine.Status.SUCCEEDED),
        )
        batch.error_file = files.write_output(
            batch, "error", (openai_line(r) for r in rows if r.status != BatchLine.Status.SUCCEEDED)
        )
    else:
        batch.output_file = files.write_output(batch, "results", (anthropic_line(r) for r in rows))


_UNRUN = {
    BatchLine.Status.CANCELLED: ("batch_cancelled", "The batch was cancelled before this ran."),
    BatchLine.Status.EXPIRED: ("batch_expired", "The batch expired before this request ran."),
}


def openai_line(line: BatchLine) -> dict[str, Any]:
    out: dict[str, Any] = {"id": line.request_id, "custom_id": line.custom_id or None}
    if line.status == BatchLine.Status.SUCCEEDED:
        out["response"] = {"status_code": 200, "request_id": line.request_id, "body": line.result}
        out["error"] = None
    elif line.status in _UNRUN:
        code, message = _UNRUN[BatchLine.Status(line.status)]
        out["response"] = None
        out["error"] = {"code": code, "message": message}
    else:
        error = line.error or {}
        out["response"] = {
            "status_code": error.get("status") or 500,
            "request_id": line.request_id,
            "body": errors.openai_line_body(error),
        }
        out["error"] = None
    return out


def anthropic_line(line: BatchLine) -> dict[str, Any]:
    result: dict[str, Any]
    if line.status == BatchLine.Status.SUCCEEDED:
        result = {"type": "succeeded", "message": line.result}
    elif line.status == BatchLine.Status.CANCELLED:
        result = {"type": "canceled"}
    elif line.status == BatchLine.Status.EXPIRED:
        result = {"type": "expired"}
    else:
        result = {
            "type": "errored",
            "error": errors.anthropic_line_body(line.error or {}, line.request_id),
        }
    return {"custom_id": line.custom_id, "result": result}
