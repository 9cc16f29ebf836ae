"""GET /v1/usage: totals and buckets equal the sum of the usage records in every grouping, before
and after the rollups run; bad parameters are 400s that name the parameter; a key sees only its
own account."""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import openai
import pytest
from django.conf import settings
from django.test import Client
from django.utils.timezone import now

from accounts.models import Account, ApiKey
from gateway import auth, metering, tasks, usage
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

GROUPINGS: list[tuple[str, ...]] = [
    (),
    ("model",),
    ("key",),
    ("day",),
    ("surface",),
    ("model", "day"),
    ("key", "surface"),
    ("day", "surface", "model"),
    ("model", "key", "day", "surface"),
    ("member", "surface"),
]
SUMS = ("input_tokens", "output_tokens", "cached_tokens", "cost_micros", "billed_micros")


def make_record(
    account: Account,
    key: ApiKey | None,
    *,
    created_at: datetime,
    model: str = "m-one",
    surface: str = "openai",
    status: int = 200,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cached_tokens: int = 0,
    cost_micros: int = 100,
    billed_micros: int = 0,
) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=uuid.uuid4().hex,
        account=account,
        api_key=key,
        surface=surface,
        model=model,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cost_micros=cost_micros,
        billed_micros=billed_micros,
        created_at=created_at,
    )


def random_records(account: Account, keys: list[ApiKey | None], count: int, seed: int) -> None:
    rng = random.Random(seed)
    at = now()
    for _ in range(count):
        make_record(
            account,
            rng.choice(keys),
            created_at=at - timedelta(seconds=rng.randint(0, 5 * 86_400)),
            model=rng.choice(["m-one", "m-two", "m-three"]),
            surface=rng.choice(["openai", "anthropic"]),
            status=rng.choice([200, 200, 200, 400, 429, 502]),
            input_tokens=rng.randint(0, 5_000),
            output_tokens=rng.randint(0, 2_000),
            cached_tokens=rng.randint(0, 100),
            cost_micros=rng.randint(0, 50_000),
            billed_micros=rng.choice([0, rng.randint(0, 50_000)]),
        )


def expected(account: Account, group_by: tuple[str, ...], start: datetime, end: datetime) -> Any:
    """The sums straight from the usage records, grouped in Python."""
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("requests", "errors", *SUMS), 0)
    )
    records = UsageRecord.objects.filter(account=account, created_at__gte=start, created_at__lt=end)
    for r in records.select_related("api_key"):
        dims = {
            "model": r.model,
            "key": r.api_key_id or 0,
            "member": (r.api_key.created_by_id or 0) if r.api_key else 0,
            "day": r.created_at.astimezone(UTC).date().isoformat(),
            "surface": r.surface,
        }
        ident = tuple(dims[g] for g in group_by)
        row = out[ident]
        row["requests"] += 1
        row["errors"] += int(r.status >= 400)
        for name in SUMS:
            row[name] += getattr(r, name)
    return dict(out)


def got(body: dict[str, Any], group_by: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, int]]:
    names = {
        "model": "model",
        "key": "key_id",
        "member": "member_id",
        "day": "day",
        "surface": "surface",
    }
    found = {}
    for bucket in body["buckets"]:
        ident = tuple(bucket[names[g]] for g in group_by)
        assert ident not in found, f"two buckets for {ident}"
        found[ident] = {k: bucket[k] for k in ("requests", "errors", *SUMS)}
    return found


def total_of(rows: dict[tuple[Any, ...], dict[str, int]]) -> dict[str, int]:
    totals = dict.fromkeys(("requests", "errors", *SUMS), 0)
    for row in rows.values():
        for k in totals:
            totals[k] += row[k]
    return totals


def get_usage(secret: str, path: str = "/v1/usage", **params: Any) -> Any:
    return Client().get(path, params, HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def owner_setup() -> dict[str, Any]:
    acct = factories.account()
    # Alpha was made by the owner (its member); beta by a script (no member).
    owner = acct.memberships.get().user
    key_a, secret = factories.api_key(acct, name="alpha", created_by=owner)
    key_b, _ = factories.api_key(acct, name="beta")
    return {"account": acct, "keys": [key_a, key_b], "secret": secret}


def _range() -> tuple[str, str, datetime, datetime]:
    today = now().astimezone(UTC).date()
    first = today - timedelta(days=6)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return first.isoformat(), today.isoformat(), start, end


def assert_matches_records(secret: str, account: Account, **extra: Any) -> None:
    first, last, start, end = _range()
    for group_by in GROUPINGS:
        params = {"start": first, "end": last, **extra}
        if group_by:
            params["group_by"] = ",".join(group_by)
        response = get_usage(secret, **params)
        assert response.status_code == 200, response.content
        body = response.json()
        want = expected(account, group_by, start, end)
        have = got(body, group_by)
        if group_by:
            assert have == want, group_by
        assert {k: body["totals"][k] for k in total_of(want)} == total_of(want), group_by


def test_it_sums_the_usage_records_in_every_grouping_before_and_after_rollups(owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    random_records(acct, [*keys, None], 300, seed=6)

    assert_matches_records(secret, acct)
    assert tasks.roll_up_usage() == 300
    assert_matches_records(secret, acct)

    # Records that land after their hour was rolled up (a slow drain) still count, once.
    random_records(acct, keys, 40, seed=7)
    assert_matches_records(secret, acct)
    tasks.roll_up_usage()
    assert_matches_records(secret, acct)
    assert tasks.roll_up_usage() == 0
    assert_matches_records(secret, acct)


def test_it_filters_by_surface_key_and_model(owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    random_records(acct, keys, 120, seed=11)
    usage.roll_up()
    random_records(acct, keys, 30, seed=12)
    first, last, _, _ = _range()

    body = get_usage(secret, start=first, end=last, surface="anthropic").json()
    records = UsageRecord.objects.filter(account=acct, surface="anthropic")
    assert body["totals"]["requests"] == records.count()
    assert body["totals"]["input_tokens"] == sum(r.input_tokens for r in records)

    body = get_usage(secret, start=first, end=last, key=str(keys[1].pk), group_by="key").json()
    assert [b["key_id"] for b in body["buckets"]] == [keys[1].pk]
    assert body["buckets"][0]["key_name"] == "beta"
    assert body["totals"]["requests"] == UsageRecord.objects.filter(api_key=keys[1]).count()

    body = get_usage(secret, start=first, end=last, key="current").json()
    assert body["key_id"] == keys[0].pk
    assert body["totals"]["requests"] == UsageRecord.objects.filter(api_key=keys[0]).count()

    body = get_usage(secret, start=first, end=last, model="m-two", group_by="model").json()
    assert [b["model"] for b in body["buckets"]] == ["m-two"]
    assert body["totals"]["cost_micros"] == sum(
        r.cost_micros for r in UsageRecord.objects.filter(model="m-two")
    )


def test_it_reports_named_periods(owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    at = now()
    make_record(acct, keys[0], created_at=at - timedelta(minutes=1), input_tokens=7)
    make_record(acct, keys[0], created_at=at - timedelta(days=40), input_tokens=1000)
    usage.roll_up()

    day = get_usage(secret, period="day").json()
    assert day["period"] == "day"
    assert day["totals"]["input_tokens"] == 7
    month = get_usage(secret).json()
    assert month["period"] == "month"
    assert month["start"].startswith(at.astimezone(UTC).strftime("%Y-%m-01T00:00:00"))
    assert month["totals"]["input_tokens"] == 7
    week = get_usage(secret, period="week", surface="all").json()
    assert week["totals"]["requests"] == 1


def test_it_answers_on_the_hour_ranges_from_hourly_rollups(owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    hour = now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    make_record(acct, keys[0], created_at=hour + timedelta(minutes=5), output_tokens=3)
    make_record(acct, keys[0], created_at=hour + timedelta(minutes=65), output_tokens=30)
    usage.roll_up()
    start = hour.strftime("%Y-%m-%dT%H:00:00Z")
    end = (hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:00:00Z")
    body = get_usage(secret, start=start, end=end).json()
    assert body["totals"]["output_tokens"] == 3


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"period": "year"}, "period"),
        ({"surface": "gemini"}, "surface"),
        ({"group_by": "model,colour"}, "group_by"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2025-02-01", "end": "2025-01-01"}, "end"),
        ({"end": "2025-01-01"}, "start"),
        ({"period": "day", "start": "2025-01-01"}, "period"),
        ({"start": "2025-01-01T10:30:00Z"}, "start"),
        ({"start": "2020-01-01", "end": "2025-01-01"}, "end"),
        ({"key": "nope"}, "key"),
        ({"key": "999999"}, "key"),
        ({"model": "gpt\x00"}, "model"),
        ({"model": "m" * 201}, "model"),
    ],
)
def test_it_refuses_bad_parameters_with_a_400_naming_them(owner_setup, params, param):
    response = get_usage(owner_setup["secret"], **params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == "bad_request"
    assert param in error["message"] or "period" in error["message"]


def test_it_needs_a_valid_key():
    response = Client().get("/v1/usage")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    response = Client().get("/v1/usage", HTTP_AUTHORIZATION="Bearer tf-prod-not-a-real-key")
    assert response.status_code == 401
    assert "Invalid API key" in response.json()["error"]["message"]


def test_it_shows_a_key_only_its_own_accounts_usage(owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    stranger = factories.account()
    their_key, their_secret = factories.api_key(stranger)
    make_record(acct, keys[0], created_at=now(), input_tokens=11)
    make_record(stranger, their_key, created_at=now(), input_tokens=99_999)

    mine = get_usage(secret, group_by="key").json()
    assert mine["totals"]["input_tokens"] == 11
    assert {b["key_id"] for b in mine["buckets"]} == {keys[0].pk}
    theirs = get_usage(their_secret).json()
    assert theirs["totals"]["input_tokens"] == 99_999
    # Naming another account's key is refused, not answered.
    response = get_usage(their_secret, key=str(keys[0].pk))
    assert response.status_code == 400


def test_it_is_served_under_all_three_prefixes_and_documented(gateway_server, owner_setup):
    acct, keys, secret = owner_setup["account"], owner_setup["keys"], owner_setup["secret"]
    make_record(acct, keys[0], created_at=now(), input_tokens=5)
    for path in ("/v1/usage", "/openai/v1/usage", "/anthropic/v1/usage"):
        response = httpx.get(
            f"{gateway_server.url}{path}",
            params={"period": "month", "surface": "all"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert response.status_code == 200, (path, response.text)
        assert response.json()["totals"]["input_tokens"] == 5
    # The Anthropic SDK's header works too.
    response = httpx.get(f"{gateway_server.url}/anthropic/v1/usage", headers={"x-api-key": secret})
    assert response.json()["totals"]["requests"] == 1

    schema = httpx.get(f"{gateway_server.url}/v1/openapi.json").json()
    assert schema["info"]["title"] == "Token Factory API"
    operation = schema["paths"]["/v1/usage"]["get"]
    params = {p["name"] for p in operation["parameters"]}
    assert {"period", "start", "end", "surface", "group_by", "key", "model"} <= params
    assert "400" in operation["responses"]
    docs = httpx.get(f"{gateway_server.url}/v1/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()


# --- real traffic -----------------------------------------------------------------------------


def wait_for_records(count: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        metering.drain()
        found = UsageRecord.objects.count()
        if found >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.e2e
def test_it_matches_the_records_of_random_traffic_through_the_gateway(live):
    rng = random.Random(42)
    oai = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], max_retries=0)
    ant = anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=live["secret"], max_retries=0
    )
    second_key, second_secret = factories.api_key(live["account"], name="second")
    oai_second = openai.OpenAI(base_url=f"{live['url']}/v1/", api_key=second_secret, max_retries=0)
    sent = 0
    for n in range(24):
        model = rng.choice(["sim-gpt", "sim-claude", "no-such-model"])
        words = " ".join(["word"] * rng.randint(1, 40))
        try:
            if n % 3 == 0:
                ant.messages.create(
                    model=model,
                    max_tokens=rng.randint(5, 60),
                    messages=[{"role": "user", "content": words}],
                )
            else:
                client = oai if n % 3 == 1 else oai_second
                client.chat.completions.create(
                    model=model,
                    max_tokens=rng.randint(5, 60),
                    messages=[{"role": "user", "content": words}],
                )
        except (openai.APIStatusError, anthropic.APIStatusError):
            pass
        sent += 1
        if n == 11:
            # Half the traffic is rolled up mid-way.
            assert wait_for_records(sent) == sent
            usage.roll_up()
    assert wait_for_records(sent) == sent
    acct = live["account"]
    assert UsageRecord.objects.filter(account=acct, status__gte=400).exists()
    assert UsageRecord.objects.filter(api_key=second_key).exists()

    def check() -> None:
        first, last, start, end = _range()
        for group_by in GROUPINGS:
            params: dict[str, Any] = {"start": first, "end": last}
            if group_by:
                params["group_by"] = ",".join(group_by)
            response = httpx.get(
                f"{live['url']}/v1/usage",
                params=params,
                headers={"Authorization": f"Bearer {live['secret']}"},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            want = expected(acct, group_by, start, end)
            if group_by:
                assert got(body, group_by) == want, group_by
            assert {k: body["totals"][k] for k in total_of(want)} == total_of(want)
        assert body["totals"]["requests"] == sent

    check()
    usage.roll_up()
    check()


def test_every_grouping_is_exercised():
    assert {g for grouping in GROUPINGS for g in grouping} == set(usage.GROUPS)


# --- the dashboard page reads the same report ------------------------------------------------


def test_the_usage_page_needs_someone_signed_in():
    response = Client().get("/usage/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert Client().get("/usage/export.csv").status_code == 302


def test_the_usage_page_and_its_csv_show_only_the_accounts_own_usage(alice, charlie):
    mine = alice.accounts.get()
    key, _ = factories.api_key(mine, name="backend")
    theirs = charlie.accounts.get()
    their_key, _ = factories.api_key(theirs, name="theirs")
    random_records(mine, [key], 25, seed=21)
    random_records(theirs, [their_key], 25, seed=22)
    usage.roll_up()
    random_records(mine, [key, None], 5, seed=23)
    week = usage.period_range("week", at=now())
    want = UsageRecord.objects.filter(
        account=mine, created_at__gte=week.start, created_at__lt=week.end
    )

    client = Client()
    client.force_login(alice)
    page = client.get("/usage/", {"period": "week"})
    assert page.status_code == 200
    assert page.context["totals"].requests == want.count()
    assert page.context["totals"].input_tokens == sum(r.input_tokens for r in want)
    assert b"theirs" not in page.content
    assert b'id="usage-data"' in page.content
    assert b"vendor/chart.js/chart.umd.min.js" in page.content

    export = client.get("/usage/export.csv", {"period": "week"})
    assert export.status_code == 200
    assert export["Content-Type"].startswith("text/csv")
    lines = export.content.decode().strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert sum(int(r["requests"]) for r in rows) == want.count()
    assert sum(int(r["cost_micros"]) for r in rows) == sum(r.cost_micros for r in want)
    assert {r["key_name"] for r in rows} <= {"backend", ""}

    # Another account's key id in the filter is ignored, never shown.
    page = client.get("/usage/", {"period": "week", "key": str(their_key.pk)})
    assert page.context["filters"].key_id is None


@pytest.mark.skipif(not settings.REDIS_URL, reason="the change counter other processes bump")
def test_usage_checks_the_keys_change_counter(client: Client) -> None:
    """Issue #16: /v1/usage skipped the key-change check that admission does, so a key revoked on
    another process kept reading usage here for up to the key cache's lifetime."""
    import redis

    acct = factories.account()
    key, secret = factories.api_key(acct)
    headers = {"authorization": f"Bearer {secret}"}
    assert client.get("/v1/usage", headers=headers).status_code == 200  # now cached here
    # Another process revokes it: the row and the shared counter change, this cache does not.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=now())
    redis.Redis.from_url(settings.REDIS_URL).incr(auth.CHANGE_PREFIX + key.key_hash)
    refused = client.get("/v1/usage", headers=headers)
    assert refused.status_code == 401
    assert client.get("/openai/v1/usage", headers=headers).status_code == 401


def test_it_groups_and_filters_by_member_and_a_developers_key_reads_only_its_makers_usage():
    from accounts.models import Membership

    owner = factories.UserFactory.create(email="olga@example.com")
    account = factories.account(owner=owner)
    dev = factories.UserFactory.create(email="dev@example.com")
    Membership.objects.create(user=dev, account=account, role=Membership.Role.DEVELOPER)
    owners_key, owners_secret = factories.api_key(account, name="olga's", created_by=owner)
    devs_key, devs_secret = factories.api_key(account, name="dev's", created_by=dev)
    scripts_key, _ = factories.api_key(account, name="script's")
    at = now() - timedelta(minutes=5)
    for key, tokens in ((owners_key, 10), (devs_key, 20), (devs_key, 20), (scripts_key, 40)):
        make_record(account, key, created_at=at, input_tokens=tokens)

    body = get_usage(owners_secret, period="day", group_by="member").json()
    by_member = {b["member_email"]: b["input_tokens"] for b in body["buckets"]}
    assert by_member == {"olga@example.com": 10, "dev@example.com": 40, "": 40}
    assert body["group_by"] == ["member"]
    body = get_usage(owners_secret, period="day", member="DEV@example.com").json()
    assert body["totals"]["input_tokens"] == 40 and body["member_id"] == dev.pk
    body = get_usage(owners_secret, period="day", group_by="member,key").json()
    assert {(b["member_email"], b["key_name"]) for b in body["buckets"]} == {
        ("olga@example.com", "olga's"),
        ("dev@example.com", "dev's"),
        ("", "script's"),
    }

    # A developer's key reads its maker's usage only, however it asks.
    body = get_usage(devs_secret, period="day").json()
    assert body["totals"]["input_tokens"] == 40
    assert (
        get_usage(devs_secret, period="day", member="olga@example.com").json()["totals"][
            "input_tokens"
        ]
        == 0
    )
    refused = get_usage(devs_secret, period="day", key=str(owners_key.pk))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "key"
    unknown = get_usage(owners_secret, period="day", member="nobody@example.com")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "member"
    bad = get_usage(owners_secret, period="day", group_by="members")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
