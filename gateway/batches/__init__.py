"""Batches of either surface: files in, each line run in the background through the same request
pipeline as live traffic (gateway/exchange.py), results out.

- ``files``: batch input and output files (``BatchFile`` storage)
- ``parsing``: the input lines of both APIs
- ``lifecycle``: creating, finding, cancelling and starting batches
- ``runner``: the lease-holding runner that drives a batch's lines
- ``output``: the result lines in each surface's format

The names below are the package's public face (views, tasks, pages and admin use them).
"""

from __future__ import annotations

from gateway.batches.files import (
    MAX_FILE_BYTES,
    MAX_FILE_LINES,
    create_file,
    delete_file,
    get_file,
    list_files,
    read_file,
)
from gateway.batches.lifecycle import (
    COMPLETION_WINDOW,
    WINDOW,
    cancel,
    create_anthropic_batch,
    create_openai_batch,
    delete_batch,
    get_batch,
    is_stalled,
    list_batches,
    nudge,
    overdue_ids,
    stalled_ids,
    start,
)
from gateway.batches.output import anthropic_line, openai_line
from gateway.batches.parsing import (
    CHAT_ENDPOINT,
    EMBEDDINGS_ENDPOINT,
    MAX_ANTHROPIC_REQUESTS,
    MESSAGES_ENDPOINT,
    OPENAI_ENDPOINTS,
    line_request_id,
)
from gateway.batches.runner import ACTIVE, BATCH_PRICE_PERCENT, run

__all__ = [
    "ACTIVE",
    "BATCH_PRICE_PERCENT",
    "CHAT_ENDPOINT",
    "COMPLETION_WINDOW",
    "EMBEDDINGS_ENDPOINT",
    "MAX_ANTHROPIC_REQUESTS",
    "MAX_FILE_BYTES",
    "MAX_FILE_LINES",
    "MESSAGES_ENDPOINT",
    "OPENAI_ENDPOINTS",
    "WINDOW",
    "anthropic_line",
    "cancel",
    "create_anthropic_batch",
    "create_file",
    "create_openai_batch",
    "delete_batch",
    "delete_file",
    "get_batch",
    "get_file",
    "is_stalled",
    "line_request_id",
    "list_batches",
    "list_files",
    "nudge",
    "openai_line",
    "overdue_ids",
    "read_file",
    "run",
    "stalled_ids",
    "start",
]
