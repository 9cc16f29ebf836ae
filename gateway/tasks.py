"""Celery tasks of the gateway: thin doors into metering and usage."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from gateway import batches, metering, usage


@shared_task(ignore_result=True)
def drain_usage() -> int:
    """Move buffered usage records into the database (idempotent; safe to overlap)."""
    return metering.drain()


@shared_task(ignore_result=True)
def roll_up_usage() -> int:
    """Add new usage records to the hourly and daily rollups (idempotent; safe to overlap)."""
    return usage.roll_up()


@shared_task(ignore_result=True)
def prune_usage() -> int:
    """Delete rolled-up usage records older than USAGE_RETENTION_DAYS."""
    return usage.prune()


# --- batches (see gateway/batches.py) ------------------------------------------------------------


@shared_task(ignore_result=True, acks_late=True)
def run_batch(batch_id: str) -> None:
    """Drive one batch to its end; a no-op while another live runner holds it."""
    batches.run(batch_id)


@shared_task(ignore_result=True)
def expire_batches() -> int:
    """End batches past their 24-hour window (their runner marks the unrun lines expired)."""
    found = batches.overdue_ids()
    for batch_id in found:
        run_batch.delay(batch_id)
    return len(found)


@shared_task(ignore_result=True)
def resume_batches() -> int:
    """Hand batches whose runner went silent (a killed worker) to a live worker."""
    found = batches.stalled_ids()
    for batch_id in found:
        run_batch.delay(batch_id)
    return len(found)


@worker_ready.connect
def _resume_batches_after_restart(**_: object) -> None:
    # Once the lease of a runner that died with the last worker has lapsed, resume its batches.
    lease_s = int(getattr(settings, "BATCH_LEASE_SECONDS", 30))
    resume_batches.apply_async(countdown=lease_s + 1)
