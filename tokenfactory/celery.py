"""The Celery app: configured from Django settings (CELERY_*), schedules for periodic work."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")

app = Celery("tokenfactory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "drain-usage": {"task": "gateway.tasks.drain_usage", "schedule": 2.0},
    "expire-batches": {"task": "gateway.tasks.expire_batches", "schedule": 60.0},
    "resume-batches": {"task": "gateway.tasks.resume_batches", "schedule": 60.0},
    "end-grace-periods": {"task": "billing.tasks.end_grace_periods", "schedule": 3600.0},
    "roll-up-usage": {"task": "gateway.tasks.roll_up_usage", "schedule": 60.0},
    "prune-usage": {"task": "gateway.tasks.prune_usage", "schedule": crontab(minute=17, hour=3)},
}
