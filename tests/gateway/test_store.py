"""The hot path's multiplexed Redis connection: every caller gets its own reply, in order, even
when callers give up halfway, and a Redis that stops answering fails them with a RedisError
(which admission turns into 503, or fail-open)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway import store
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)")


def test_concurrent_callers_each_get_their_own_reply() -> None:
    async def run() -> list[Any]:
        return await asyncio.gather(*[store.call("ECHO", f"caller {i}") for i in range(300)])

    replies = asyncio.run(run())
    assert replies == [f"caller {i}".encode() for i in range(300)]


def test_a_caller_that_gives_up_does_not_shift_the_others_replies() -> None:
    async def run() -> list[Any]:
        first = asyncio.ensure_future(store.call("ECHO", "gave up"))
        rest = [asyncio.ensure_future(store.call("ECHO", f"kept {i}")) for i in range(50)]
        await asyncio.sleep(0)
        first.cancel()
        return await asyncio.gather(*rest)

    assert asyncio.run(run()) == [f"kept {i}".encode() for i in range(50)]


def test_redis_errors_reach_their_caller_by_kind() -> None:
    async def run() -> None:
        with pytest.raises(NoScriptError):
            await store.call("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await store.call("INCRBY", "tf:test:store", "not a number")
        assert await store.call("EVAL", "return {1, 'two', {3}}", 0) == [1, b"two", [3]]

    asyncio.run(run())


def test_a_redis_that_goes_away_fails_the_waiting_callers_and_the_next_call_reconnects(
    settings: Any,
) -> None:
    from urllib.parse import urlsplit

    target = urlsplit(settings.REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}{target.path}"

        async def run() -> None:
            assert await store.call("PING") == b"PONG"
            waiting = asyncio.ensure_future(store.call("BLPOP", "tf:test:never", 10))
            await asyncio.sleep(0.2)
            proxy.cut()
            with pytest.raises(RedisError):
                await asyncio.wait_for(waiting, 5)
            with pytest.raises(RedisError):
                await store.call("PING")  # nobody listens: refused, at once
            proxy.restore()
            assert await store.call("PING") == b"PONG"

        asyncio.run(run())
    finally:
        proxy.stop()
