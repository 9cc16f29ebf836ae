"""Batches' lives: creating one from its parsed lines, finding and listing them, cancelling,
deleting, and handing them to a runner (gateway/batches/runner.py)."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.timezone import now

from gateway import errors
from gateway.auth import Caller
from gateway.batches import files, parsing, runner
from gateway.errors import ANTHROPIC, OPENAI
from gateway.models import Batch, BatchFile, BatchLine

COMPLETION_WINDOW = "24h"
WINDOW = timedelta(hours=24)
RUN_TASK = "gateway.tasks.run_batch"


def create_openai_batch(
    *,
    caller: Caller,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, Any] | None,
) -> Batch:
    if endpoint not in parsing.OPENAI_ENDPOINTS:
        raise errors.BadRequest(
            f"endpoint '{endpoint}' is not supported for batches; use "
            f"{' or '.join(parsing.OPENAI_ENDPOINTS)}.",
            param="endpoint",
        )
    if completion_window != COMPLETION_WINDOW:
        raise errors.BadRequest(
            f"completion_window must be '{COMPLETION_WINDOW}'.", param="completion_window"
        )
    file = files.get_file(account_id=caller.account_id, file_id=input_file_id)
    if file.purpose != BatchFile.Purpose.BATCH:
        raise errors.BadRequest(
            f"{input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
        )
    text = files.read_file(file).decode("utf-8")
    batch_id = "batch_" + secrets.token_hex(12)
    return _create(
        caller=caller,
        batch_id=batch_id,
        surface=OPENAI,
        endpoint=endpoint,
        lines=parsing.openai_lines(text, batch_id=batch_id, endpoint=endpoint),
        input_file=file,
        metadata=metadata,
    )


def create_anthropic_batch(*, caller: Caller, requests: Any) -> Batch:
    batch_id = "msgbatch_" + secrets.token_hex(12)
    return _create(
        caller=caller,
        batch_id=batch_id,
        surface=ANTHROPIC,
        endpoint=parsing.MESSAGES_ENDPOINT,
        lines=parsing.anthropic_lines(requests, batch_id=batch_id),
        input_file=None,
        metadata=None,
    )


def _create(
    *,
    caller: Caller,
    batch_id: str,
    surface: str,
    endpoint: str,
    lines: list[BatchLine],
    input_file: BatchFile | None,
    metadata: dict[str, Any] | None,
) -> Batch:
    if not lines:
        raise errors.BadRequest("The batch has no requests.")
    created = now()
    with transaction.atomic():
        batch = Batch.objects.create(
            id=batch_id,
            account_id=caller.account_id,
            api_key_id=caller.key_id,
            surface=surface,
            endpoint=endpoint,
            input_file=input_file,
            status=Batch.Status.VALIDATING,
            total_count=len(lines),
            metadata=metadata,
            created_at=created,
            expires_at=created + WINDOW,
        )
        for line in lines:
            line.batch = batch
        BatchLine.objects.bulk_create(lines, batch_size=1000)
        transaction.on_commit(lambda: start(batch_id))
    return batch


def get_batch(*, account_id: int, batch_id: str, surface: str) -> Batch:
    found = (
        Batch.objects.filter(pk=batch_id, account_id=account_id, surface=surface).first()
        if "\x00" not in batch_id
        else None
    )
    if found is None:
        raise errors.NotFound(f"No such batch: {batch_id}", param="batch_id")
    return found


def list_batches(
    *, account_id: int, surface: str, after: str = "", before: str = "", limit: int = 20
) -> tuple[list[Batch], bool]:
    rows = Batch.objects.filter(account_id=account_id, surface=surface)
    newest_first = rows.order_by("-created_at", "-id")
    if before:
        cursor = rows.filter(pk=before).first()
        if cursor is not None:
            older_first = rows.order_by("created_at", "id").filter(
                Q(created_at__gt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__gt=cursor.id)
            )
            found = list(older_first[: limit + 1])
            return list(reversed(found[:limit])), len(found) > limit
    if after:
        cursor = rows.filter(pk=after).first()
        if cursor is not None:
            newest_first = newest_first.filter(
                Q(created_at__lt=cursor.created_at)
                | Q(created_at=cursor.created_at, id__lt=cursor.id)
            )
    found = list(newest_first[: limit + 1])
    return found[:limit], len(found) > limit


def cancel(batch: Batch) -> Batch:
    """Ask the runner to stop: it takes no new line, lets the ones in flight finish, marks the
    rest cancelled and writes the files. Cancelling a finished batch changes nothing."""
    moved = Batch.objects.filter(pk=batch.pk, status__in=runner.ACTIVE).exclude(
        status=Batch.Status.CANCELLING
    )
    if moved.update(status=Batch.Status.CANCELLING, cancelling_at=now()):
        transaction.on_commit(lambda: start(batch.pk))
    batch.refresh_from_db()
    return batch


def delete_batch(batch: Batch) -> None:
    if batch.status in runner.ACTIVE:
        raise errors.BadRequest(
            f"Batch {batch.pk} is still processing; cancel it and wait for it to end first."
        )
    batch.delete()


def is_stalled(batch: Batch) -> bool:
    if batch.status not in runner.ACTIVE:
        return False
    return batch.heartbeat_at is None or batch.heartbeat_at < now() - runner.lease()


def nudge(batch: Batch) -> None:
    """Embedded mode has no worker to resume a batch after a restart: reading one does."""
    if settings.CELERY_TASK_ALWAYS_EAGER and is_stalled(batch):
        start(batch.pk)


def stalled_ids() -> list[str]:
    """Active batches no runner is driving: never started, or their runner went silent."""
    cutoff = now() - runner.lease()
    rows = Batch.objects.filter(status__in=runner.ACTIVE).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff)
    )
    return list(rows.values_list("pk", flat=True))


def overdue_ids() -> list[str]:
    """Active batches past the end of their window (their runner ends them as expired)."""
    return list(
        Batch.objects.filter(status__in=runner.ACTIVE, expires_at__lte=now()).values_list(
            "pk", flat=True
        )
    )


def start(batch_id: str) -> None:
    """Hand the batch to a runner. With a broker that is a Celery worker; without one (the
    embedded default, where ``delay`` would run the whole batch inside this request) it is a
    daemon thread of this process."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        threading.Thread(target=runner.run, args=(batch_id,), daemon=True, name=batch_id).start()
        return
    # By name: gateway.tasks imports this package, not the other way round.
    current_app.send_task(RUN_TASK, args=[batch_id])
