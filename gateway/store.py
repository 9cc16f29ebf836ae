"""The hot path's shared store: one asyncio Redis client per event loop, or None when the
platform runs embedded (no REDIS_URL) and every limit lives in this process."""

from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)
_sync_client: redis.Redis | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def client() -> aioredis.Redis | None:
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        found = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
            max_connections=256,
        )
        _clients[loop] = found
    return found


def sync_client() -> redis.Redis | None:
    """For workers, commands and views that run outside an event loop."""
    global _sync_client
    if not settings.REDIS_URL:
        return None
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    return _sync_client
