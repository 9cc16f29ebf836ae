"""The live meter over Channels: a signed-in dashboard receives its account's window, balance and
requests this minute on connect and again each time metering writes records."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from gateway import metering, usage
from gateway.models import UsageRecord
from tests import factories
from tokenfactory.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(plan_slug: str = "test", balance_micros: int = 0) -> dict[str, Any]:
    user = factories.UserFactory.create()
    acct = factories.account(owner=user, plan_slug=plan_slug, balance_micros=balance_micros)
    key, _ = factories.api_key(acct)
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    return {"account": acct, "key": key, "cookie": cookie}


def socket(cookie: str | None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/meter/", headers=headers)


def record(account_id: int, key_id: int, **fields: Any) -> metering.UsageRecord:
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "account_id": account_id,
        "key_id": key_id,
        "surface": "openai",
        "model": "sim-gpt",
        "status": 200,
        "input_tokens": 120,
        "output_tokens": 30,
        "cost_micros": 150,
        "billed_micros": 0,
        "created_at_ms": int(time.time() * 1000),
        **fields,
    }
    return metering.UsageRecord(**values)


async def test_it_sends_the_state_on_connect_and_an_update_after_a_request_is_metered():
    alice = await sync_to_async(signed_in)(balance_micros=5_000_000)
    acct = alice["account"]
    ws = socket(alice["cookie"])
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_json_from(timeout=5)
    assert first["type"] == "meter"
    assert first["requests_this_minute"] == 0
    assert first["balance_micros"] == 5_000_000
    assert first["balance"] == "$5.00"

    assert await sync_to_async(metering.flush)([record(acct.pk, alice["key"].pk)]) == 1
    update = await ws.receive_json_from(timeout=5)
    assert update["account_id"] == acct.pk
    assert update["requests_this_minute"] == 1

    await sync_to_async(metering.flush)(
        [record(acct.pk, alice["key"].pk), record(acct.pk, alice["key"].pk)]
    )
    update = await ws.receive_json_from(timeout=5)
    assert update["requests_this_minute"] == 3
    await ws.disconnect()


async def test_it_shows_the_window_remaining_on_a_plan_with_a_window():
    alice = await sync_to_async(signed_in)(plan_slug="test")
    plan = await sync_to_async(lambda: alice["account"].plan)()
    ws = socket(alice["cookie"])
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_json_from(timeout=5)
    assert first["window_tokens"] == plan.window_tokens
    if plan.window_tokens is not None:
        assert first["window_remaining_tokens"] == plan.window_tokens
    await ws.disconnect()


async def test_it_pushes_nothing_about_other_accounts():
    alice = await sync_to_async(signed_in)()
    charlie = await sync_to_async(signed_in)()
    ws = socket(charlie["cookie"])
    connected, _ = await ws.connect()
    assert connected
    await ws.receive_json_from(timeout=5)

    await sync_to_async(metering.flush)([record(alice["account"].pk, alice["key"].pk)])
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()


async def test_a_flush_works_out_only_the_meters_somebody_has_open():
    alice = await sync_to_async(signed_in)()
    acct_id = alice["account"].pk
    watched = sync_to_async(usage.watched_meters)
    assert await watched([acct_id]) == []
    first, second = socket(alice["cookie"]), socket(alice["cookie"])
    for ws in (first, second):
        connected, _ = await ws.connect()
        assert connected
        await ws.receive_json_from(timeout=5)
    assert await watched([acct_id]) == [acct_id]
    await first.disconnect()
    # The other tab still watches, and still receives.
    assert await watched([acct_id]) == [acct_id]
    await sync_to_async(metering.flush)([record(acct_id, alice["key"].pk)])
    assert (await second.receive_json_from(timeout=5))["requests_this_minute"] == 1
    await second.disconnect()
    assert await watched([acct_id]) == []


async def test_it_refuses_a_socket_without_a_session():
    ws = socket(None)
    connected, code = await ws.connect()
    assert not connected
    assert code == 4401


def test_metering_still_writes_when_the_channel_layer_is_broken(settings):
    alice = signed_in()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Nothing listens on port 1: every push fails.
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    assert metering.flush([record(alice["account"].pk, alice["key"].pk)]) == 1
    assert UsageRecord.objects.filter(account=alice["account"]).count() == 1


def test_watcher_counts_survive_many_open_meters():
    # One open dashboard per account, for more accounts than a default local cache keeps.
    ids = range(10_000, 10_600)
    try:
        for account_id in ids:
            usage.watch_meter(account_id, opened=True)
        assert usage.watched_meters(ids) == list(ids)
    finally:
        for account_id in ids:
            usage.watch_meter(account_id, opened=False)
    assert usage.watched_meters(ids) == []


def _signed_in_client() -> dict[str, Any]:
    user = factories.UserFactory.create()
    factories.account(owner=user)
    client = Client()
    client.force_login(user)
    return {
        "user": user,
        "client": client,
        "cookie": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


async def _opened(cookie: str) -> WebsocketCommunicator:
    ws = socket(cookie)
    connected, _ = await ws.connect()
    assert connected
    await ws.receive_json_from(timeout=5)
    return ws


async def _closed_with(ws: WebsocketCommunicator) -> int | None:
    message = await ws.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message.get("code")


async def test_a_meter_closes_when_its_session_logs_out():
    """Issue #16: a live meter stayed subscribed after its session logged out."""
    alice = await sync_to_async(_signed_in_client)()
    other = Client()
    await sync_to_async(other.force_login)(alice["user"])
    ws = await _opened(alice["cookie"])
    elsewhere = await _opened(other.cookies[settings.SESSION_COOKIE_NAME].value)
    response = await sync_to_async(alice["client"].post)("/logout/")
    assert response.status_code == 302
    assert await _closed_with(ws) == 4401
    # The person's other session (another browser) is still signed in: its meter stays.
    assert await elsewhere.receive_nothing(timeout=0.3)
    await elsewhere.disconnect()


async def test_a_meter_closes_when_the_password_changes_elsewhere():
    alice = await sync_to_async(_signed_in_client)()
    ws = await _opened(alice["cookie"])
    other = Client()
    await sync_to_async(other.force_login)(alice["user"])  # a log-in elsewhere leaves it open
    assert await ws.receive_nothing(timeout=0.3)
    response = await sync_to_async(other.post)(
        "/password/change/",
        {
            "old_password": "correct horse battery",
            "new_password1": "a brand new pass phrase",
            "new_password2": "a brand new pass phrase",
        },
    )
    assert response.status_code == 302
    assert await _closed_with(ws) == 4401


async def test_a_meter_closes_when_the_person_is_deactivated():
    alice = await sync_to_async(_signed_in_client)()
    ws = await _opened(alice["cookie"])
    user = alice["user"]
    user.is_active = False
    await sync_to_async(user.save)(update_fields=["is_active"])
    assert await _closed_with(ws) == 4401


async def test_it_follows_the_organisation_the_session_switched_to():
    def two_organisations() -> dict[str, Any]:
        from accounts.models import Membership

        user = factories.UserFactory.create()
        first = factories.account(owner=user, balance_micros=1_000_000)
        second = factories.account(balance_micros=7_000_000)
        Membership.objects.create(user=user, account=second, role=Membership.Role.VIEWER)
        client = Client()
        client.force_login(user)
        assert client.post("/org/switch/", {"account": second.pk}).status_code == 302
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        return {"first": first, "second": second, "cookie": cookie}

    world = await sync_to_async(two_organisations)()
    ws = socket(world["cookie"])
    connected, _ = await ws.connect()
    assert connected
    state = await ws.receive_json_from(timeout=5)
    assert state["balance_micros"] == 7_000_000
    await ws.disconnect()
