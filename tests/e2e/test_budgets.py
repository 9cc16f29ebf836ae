"""Monthly spend caps through the running gateway on Redis: a member's cap and a key's hold under
many concurrent requests on both surfaces, the refusals are 402 in each surface's envelope and
cost nothing, a new month starts afresh, and the month's spend survives Redis losing it."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis
import time_machine
from django.conf import settings
from django.db.models import Sum

from accounts import budgets
from accounts.models import Account, ApiKey, Membership, User
from billing import money
from billing.models import Plan
from gateway import limits, metering
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e
on_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)")


@pytest.fixture(params=["redis", "embedded"])
def mode(request: pytest.FixtureRequest, settings: Any) -> str:
    """Redis (production), or the embedded in-process limiter (one process, no Redis)."""
    if request.param == "embedded":
        settings.REDIS_URL = ""
    elif not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (CI sets it)")
    limits.reset_memory()
    return str(request.param)


def _team() -> tuple[Account, User, Membership]:
    """An organisation on an unthrottled plan with a large token window, and a developer in it."""
    Plan.objects.filter(slug="test").update(
        window_tokens=10_000_000,
        rpm_limit=None,
        tpm_limit=None,
        account_rpm_limit=None,
        account_tpm_limit=None,
    )
    acct = factories.account(plan_slug="test", balance_micros=5_000_000)
    dev = factories.UserFactory.create()
    member = Membership.objects.create(user=dev, account=acct, role=Membership.Role.DEVELOPER)
    return acct, dev, member


def _key(acct: Account, by: User, name: str) -> tuple[ApiKey, str]:
    return factories.api_key(acct, name=name, created_by=by)


def _settled(acct: Account, count: int, timeout: float = 30.0) -> list[UsageRecord]:
    deadline = time.monotonic() + timeout
    while True:
        metering.drain()
        found = list(UsageRecord.objects.filter(account=acct))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def _burst(url: str, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    """All of ``calls`` (surface, secret) at once: a small chat request each."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=len(calls)), timeout=30) as c:

        async def one(surface: str, secret: str) -> httpx.Response:
            if surface == "openai":
                return await c.post(
                    f"{url}/openai/v1/chat/completions",
                    json={
                        "model": "sim-gpt",
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 5,
                    },
                    headers={"authorization": f"Bearer {secret}"},
                )
            return await c.post(
                f"{url}/anthropic/v1/messages",
                json={
                    "model": "sim-claude",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 5,
                },
                headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
            )

        return await asyncio.gather(*[one(s, k) for s, k in calls])


def _spent(**filters: Any) -> int:
    return int(UsageRecord.objects.filter(**filters).aggregate(s=Sum("cost_micros"))["s"] or 0)


@on_redis
def test_it_holds_a_members_cap_exactly_under_concurrent_requests_on_both_surfaces(live):
    acct, dev, member = _team()
    _, openai_secret = _key(acct, dev, "openai key")
    _, anthropic_secret = _key(acct, dev, "anthropic key")
    budgets.set_member_budget(membership=member, budget_micros=400)
    calls = [("openai", openai_secret), ("anthropic", anthropic_secret)] * 40
    responses = asyncio.run(_burst(live["url"], calls))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 402}, statuses
    records = _settled(acct, len(calls))
    admitted = [r for r in records if r.status == 200]
    refused = [r for r in records if r.status == 402]
    assert len(admitted) == statuses.count(200) and len(refused) == statuses.count(402)
    # Never past the cap, and nothing charged for a refusal.
    spent = sum(r.cost_micros for r in admitted)
    assert 0 < spent <= 400
    assert all(r.cost_micros == 0 and r.billed_micros == 0 for r in refused)
    # Refusals were for the cap, not for nothing: a request is refused only when what is spent
    # and held plus its own ceiling passes the cap, and each admitted request holds at most the
    # largest ceiling, so at least cap // that ceiling were admitted however the burst overlapped.
    ceilings = [
        money.from_dollars(m.group(1))
        for r in responses
        if r.status_code == 402
        and (m := re.search(r"could cost up to \$([0-9.]+)", r.text)) is not None
    ]
    assert len(ceilings) == len(refused)
    assert len(admitted) >= 400 // max(ceilings) >= 1
    acct.refresh_from_db()
    assert acct.balance_micros == 5_000_000
    # The live month spend is exactly what the records say, with nothing still held.
    live_spend = limits.budget_state("member", member.pk)
    assert live_spend is not None
    assert (live_spend["spent"], live_spend["reserved"]) == (spent, 0)

    openai_refusal = next(
        r
        for r, (s, _) in zip(responses, calls, strict=True)
        if s == "openai" and r.status_code == 402
    )
    body = openai_refusal.json()["error"]
    assert (body["type"], body["code"]) == ("insufficient_quota", "monthly_budget_exceeded")
    assert "member who created this key" in body["message"]
    assert "$0.0004" in body["message"] and "resets on" in body["message"]
    assert openai_refusal.headers["x-should-retry"] == "false"
    anthropic_refusal = next(
        r
        for r, (s, _) in zip(responses, calls, strict=True)
        if s == "anthropic" and r.status_code == 402
    )
    body = anthropic_refusal.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert body["error"]["code"] == "monthly_budget_exceeded"
    assert anthropic_refusal.headers["request-id"]

    # Raising the member's cap reaches the gateway at once: every key they made is reloaded.
    budgets.set_member_budget(membership=member, budget_micros=1_000_000)
    again = anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=anthropic_secret, max_retries=0
    ).messages.create(
        model="sim-claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert again.content


def test_it_refuses_a_key_over_its_cap_through_both_sdks_and_leaves_other_keys_alone(live, mode):
    acct, dev, _ = _team()
    capped, capped_secret = _key(acct, dev, "capped")
    _, free_secret = _key(acct, dev, "uncapped")
    budgets.set_key_budget(key=capped, budget_micros=400)
    o = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=capped_secret, max_retries=2)
    a = anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=capped_secret, max_retries=2
    )
    msg = [{"role": "user", "content": "hi"}]
    served = 0
    with pytest.raises(openai.APIStatusError) as refused:
        for _ in range(40):
            o.chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)
            served += 1
    assert refused.value.status_code == 402
    assert refused.value.code == "monthly_budget_exceeded"
    assert "this key's monthly budget is $0.0004" in refused.value.message
    with pytest.raises(anthropic.APIStatusError) as refused_a:
        a.messages.create(model="sim-claude", max_tokens=5, messages=msg)
    assert refused_a.value.status_code == 402
    assert refused_a.value.body["error"]["type"] == "billing_error"
    assert 0 < served < 40
    # Another key of the same member has no cap of its own, and the member has none.
    openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=free_secret, max_retries=0
    ).chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)
    _settled(acct, served + 3)
    assert _spent(api_key=capped) <= 400

    # Raising the cap reaches the gateway at once (the key's cached record is reloaded).
    budgets.set_key_budget(key=capped, budget_micros=10_000)
    o.chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)


def test_a_new_month_starts_afresh(live, mode):
    acct, dev, member = _team()
    _, secret = _key(acct, dev, "monthly")
    budgets.set_member_budget(membership=member, budget_micros=300)
    client = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=secret, max_retries=0)
    msg = [{"role": "user", "content": "hi"}]
    now = datetime.now(UTC)
    last_day = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    with time_machine.travel(last_day.timestamp() - 120, tick=True):
        with pytest.raises(openai.APIStatusError) as refused:
            for _ in range(40):
                client.chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)
        assert refused.value.status_code == 402
    with time_machine.travel(last_day.timestamp() + 60, tick=True):
        fresh = client.chat.completions.with_raw_response.create(
            model="sim-gpt", messages=msg, max_tokens=5
        )
        assert fresh.http_response.status_code == 200
    state = limits.budget_state("member", member.pk)
    assert state is not None and state["month"] == int(last_day.timestamp() * 1000)


def test_the_months_spend_survives_redis_losing_it(live, mode):
    acct, dev, member = _team()
    key, secret = _key(acct, dev, "survivor")
    budgets.set_member_budget(membership=member, budget_micros=300)
    budgets.set_key_budget(key=key, budget_micros=1_000)
    client = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=secret, max_retries=0)
    msg = [{"role": "user", "content": "hi"}]
    served = 0
    with pytest.raises(openai.APIStatusError):
        for _ in range(40):
            client.chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)
            served += 1
    records = _settled(acct, served + 1)
    spent = sum(r.cost_micros for r in records)
    before = limits.budget_state("key", key.pk)
    assert before is not None and before["spent"] == spent

    # Redis loses the live spend (a restart without persistence, a FLUSHDB of these keys).
    names = (limits.budget_key("key", key.pk), limits.budget_key("member", member.pk))
    if mode == "redis":
        assert redis.Redis.from_url(settings.REDIS_URL).delete(*names) == 2
    else:  # the embedded limiter's process restarted
        for name in names:
            del limits._memory.spend[name]
    with pytest.raises(openai.APIStatusError) as still:
        client.chat.completions.create(model="sim-gpt", messages=msg, max_tokens=5)
    assert still.value.status_code == 402
    rebuilt = limits.budget_state("key", key.pk)
    assert rebuilt is not None and (rebuilt["spent"], rebuilt["reserved"]) == (spent, 0)
    member_state = limits.budget_state("member", member.pk)
    assert member_state is not None and member_state["spent"] == spent
    # The Budgets page's numbers come from the same records.
    lines = {line.id: line for line in budgets.overview(account=acct).keys}
    assert lines[key.pk].spent_micros == spent
