"""Flushing usage records: exactly once, charged once, and one bad record never blocks the rest."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import orjson
import pytest
from django.conf import settings

from billing.models import LedgerEntry
from gateway import metering
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def record(account_id: int, request_id: str, **extra: Any) -> metering.UsageRecord:
    values: dict[str, Any] = {
        "request_id": request_id,
        "account_id": account_id,
        "key_id": None,
        "surface": "openai",
        "model": "sim-gpt",
        "status": 200,
        "input_tokens": 10,
        "output_tokens": 5,
        "created_at_ms": int(time.time() * 1000),
        **extra,
    }
    return metering.UsageRecord(**values)


def test_a_replayed_record_is_written_and_charged_once() -> None:
    acct = factories.account(balance_micros=1_000_000)
    r = record(acct.pk, "req_once", billed_micros=700, cost_micros=700, in_window=False)
    assert metering.flush([r]) == 1
    metering.flush([r])
    assert UsageRecord.objects.filter(request_id="req_once").count() == 1
    charges = LedgerEntry.objects.filter(account=acct, kind="usage")
    assert [c.amount_micros for c in charges] == [-700]


def test_a_record_for_a_vanished_account_is_parked_and_the_others_land() -> None:
    acct = factories.account()
    key, _ = factories.api_key(acct)
    good = record(acct.pk, "req_good", key_id=key.pk)
    lost_key = record(acct.pk, "req_lost_key", key_id=987_654)
    orphan = record(987_654, "req_orphan")
    assert metering.flush([orphan, good, lost_key]) == 2
    found = {r.request_id: r for r in UsageRecord.objects.all()}
    assert set(found) == {"req_good", "req_lost_key"}
    assert found["req_good"].api_key_id == key.pk
    assert found["req_lost_key"].api_key_id is None


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)")
async def test_a_dead_processes_reservation_is_released_once_and_recorded() -> None:
    """A gateway killed mid-request leaves its reservation in Redis; the reaper gives the window
    back, records the request as lost (nothing billed), and never does it twice."""
    from asgiref.sync import sync_to_async

    from gateway import auth, catalog, limits

    @sync_to_async
    def setup() -> tuple[Any, str]:
        acct = factories.account(plan_slug="pro")
        _, secret = factories.api_key(acct)
        factories.model("sim-reap")
        return acct, secret

    acct, secret = await setup()
    caller = await auth.authenticate(secret)
    assert caller is not None
    model = (await catalog.snapshot()).models["sim-reap"]
    await limits.admit(
        caller,
        model,
        input_tokens=100,
        max_output_tokens=900,
        request_id="req_dead",
        surface="anthropic",
    )
    before = limits.window_state(acct.pk)
    assert before is not None and before["reserved"] == 1000
    assert await sync_to_async(limits.reap_abandoned)(older_than_ms=0) == 1
    assert await sync_to_async(limits.reap_abandoned)(older_than_ms=0) == 0
    after = limits.window_state(acct.pk)
    assert after is not None and after["reserved"] == 0
    await sync_to_async(metering.drain)()
    lost = await UsageRecord.objects.aget(request_id="req_dead")
    assert (lost.status, lost.error_code, lost.billed_micros, lost.surface) == (
        499,
        "gateway_lost",
        0,
        "anthropic",
    )


def test_a_buffered_record_holds_its_own_length_not_the_encoders_buffer() -> None:
    # orjson hands back its ~8 KB working buffer whatever the output's length; a backlog of
    # records behind a busy event loop must cost what the records weigh.
    record = orjson.dumps({"request_id": "req_" + "0" * 24, "model": "gpt-4o", "note": "x" * 300})
    metering.discard_local()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            metering.enqueue_local(orjson.dumps(orjson.loads(record)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        metering.discard_local()
    assert held < 1000 * 2 * len(record), f"{held // 1000} bytes per {len(record)}-byte record"


def test_every_field_of_a_record_is_written_to_its_column_by_name() -> None:
    """The INSERT names each record field's column: a field or column added to one side only
    fails here, not as a silently shifted row."""
    import dataclasses

    from gateway.models import UsageRecord as Row

    fields = {f.name for f in dataclasses.fields(metering.UsageRecord)}
    columns = {f.attname for f in Row._meta.concrete_fields} - {"id"}
    assert set(metering._COLUMNS) == fields
    assert set(metering._COLUMNS.values()) == columns

    acct = factories.account()
    key, _ = factories.api_key(acct)
    r = record(
        acct.pk,
        "req_by_name",
        key_id=key.pk,
        route="sim:sim-gpt",
        error_code="",
        cached_tokens=3,
        reasoning_tokens=2,
        cost_micros=17,
        billed_micros=11,
        in_window=False,
        latency_ms=42,
        ttft_ms=7,
        stream=True,
        batch_id="batch_x",
        endpoint="responses",
        created_at_ms=1_700_000_000_123,
    )
    metering.flush([r])
    row = Row.objects.get(request_id="req_by_name")
    assert (row.api_key_id, row.route, row.cached_tokens, row.reasoning_tokens) == (
        key.pk,
        "sim:sim-gpt",
        3,
        2,
    )
    assert (row.cost_micros, row.billed_micros, row.in_window, row.latency_ms) == (
        17,
        11,
        False,
        42,
    )
    assert (row.ttft_ms, row.stream, row.batch_id, row.endpoint) == (
        7,
        True,
        "batch_x",
        "responses",
    )
    assert int(row.created_at.timestamp() * 1000) == 1_700_000_000_123
