"""Token Factory: the project package (settings, URLs, ASGI and Celery apps)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
