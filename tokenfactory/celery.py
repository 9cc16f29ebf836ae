"""The Celery app: configured from Django settings (CELERY_*), schedules for periodic work."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")

app = Celery("tokenfactory")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "drain-usage": {"task": "gateway.tasks.drain_usage", "schedule": 2.0},
}
