"""Celery tasks of the gateway: thin doors into metering."""

from __future__ import annotations

from celery import shared_task

from gateway import metering


@shared_task(ignore_result=True)
def drain_usage() -> int:
    """Move buffered usage records into the database (idempotent; safe to overlap)."""
    return metering.drain()
