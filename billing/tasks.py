"""Celery tasks of billing: thin doors into billing.webhooks."""

from __future__ import annotations

from celery import shared_task
from django.utils.timezone import now

from billing import webhooks


@shared_task(ignore_result=True)
def end_grace_periods() -> int:
    """Accounts whose grace after a failed payment ran out go back to the Test plan."""
    return webhooks.end_grace(at=now())
