"""Usage rollups: every record counted exactly once however often and however concurrently they
run, and pruning that never deletes a record the rollups do not hold yet."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections
from django.db.models import Max
from django.utils.timezone import now

from accounts.models import Account, ApiKey
from gateway import tasks, usage
from gateway.models import RollupWatermark, UsageRecord, UsageRollup
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "cost_micros", "billed_micros")


def add_records(
    account: Account, keys: list[ApiKey | None], count: int, *, seed: int, days_ago: int = 3
) -> None:
    rng = random.Random(seed)
    at = now()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=uuid.uuid4().hex,
            account=account,
            api_key=rng.choice(keys),
            surface=rng.choice(["openai", "anthropic"]),
            model=rng.choice(["m-one", "m-two"]),
            status=rng.choice([200, 200, 500]),
            input_tokens=rng.randint(0, 999),
            output_tokens=rng.randint(0, 999),
            cached_tokens=rng.randint(0, 9),
            cost_micros=rng.randint(0, 9_999),
            billed_micros=rng.randint(0, 99),
            created_at=at - timedelta(seconds=rng.randint(0, days_ago * 86_400)),
        )
        for _ in range(count)
    )


def rollup_snapshot() -> list[tuple[Any, ...]]:
    return list(
        UsageRollup.objects.order_by(
            "account_id", "granularity", "bucket", "key_id", "model", "surface"
        ).values_list(
            "account_id",
            "granularity",
            "bucket",
            "key_id",
            "model",
            "surface",
            "requests",
            "errors",
            *FIELDS,
        )
    )


def sums_by(granularity: str) -> dict[tuple[Any, ...], tuple[int, ...]]:
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * (2 + len(FIELDS)))
    for r in UsageRecord.objects.all():
        at = r.created_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if granularity == "day":
            at = at.replace(hour=0)
        row = out[(r.account_id, r.api_key_id or 0, r.model, r.surface, at)]
        row[0] += 1
        row[1] += int(r.status >= 400)
        for n, name in enumerate(FIELDS):
            row[2 + n] += getattr(r, name)
    return {k: tuple(v) for k, v in out.items()}


def rollups_by(granularity: str) -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {
        (r.account_id, r.key_id, r.model, r.surface, r.bucket.astimezone(UTC)): (
            r.requests,
            r.errors,
            *(getattr(r, name) for name in FIELDS),
        )
        for r in UsageRollup.objects.filter(granularity=granularity)
    }


def assert_rollups_hold_every_record_once() -> None:
    for granularity in ("hour", "day"):
        assert rollups_by(granularity) == sums_by(granularity), granularity


@pytest.fixture
def two_accounts(db: None) -> dict[str, Any]:
    alice = factories.account()
    a1, _ = factories.api_key(alice)
    a2, _ = factories.api_key(alice)
    charlie = factories.account()
    c1, _ = factories.api_key(charlie)
    return {"alice": alice, "alice_keys": [a1, a2, None], "charlie": charlie, "charlie_keys": [c1]}


def test_it_rolls_every_record_into_hours_and_days_once(two_accounts):
    add_records(two_accounts["alice"], two_accounts["alice_keys"], 400, seed=1)
    add_records(two_accounts["charlie"], two_accounts["charlie_keys"], 100, seed=2)

    assert usage.roll_up(batch_records=150) == 500
    assert_rollups_hold_every_record_once()
    mark = RollupWatermark.objects.get(name=usage.WATERMARK)
    assert mark.last_record_id == UsageRecord.objects.aggregate(top=Max("id"))["top"]


def test_running_it_twice_changes_nothing(two_accounts):
    add_records(two_accounts["alice"], two_accounts["alice_keys"], 200, seed=3)
    tasks.roll_up_usage()
    before = rollup_snapshot()
    mark = RollupWatermark.objects.get()

    assert tasks.roll_up_usage() == 0
    assert rollup_snapshot() == before
    assert RollupWatermark.objects.get().last_record_id == mark.last_record_id


def test_late_records_add_to_the_buckets_they_belong_to(two_accounts):
    add_records(two_accounts["alice"], two_accounts["alice_keys"], 50, seed=4)
    usage.roll_up()
    # Records written after the rollup, for hours already rolled up (a drain that was behind).
    add_records(two_accounts["alice"], two_accounts["alice_keys"], 50, seed=5)
    assert usage.roll_up() == 50
    assert_rollups_hold_every_record_once()


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_count_each_record_once():
    if connection.vendor != "postgresql":
        pytest.skip("in-memory SQLite cannot take writers from two threads; see the process test")
    alice = factories.account()
    key, _ = factories.api_key(alice)
    add_records(alice, [key, None], 600, seed=6)
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                usage.roll_up(batch_records=100)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert_rollups_hold_every_record_once()
    before = rollup_snapshot()
    assert usage.roll_up() == 0
    assert rollup_snapshot() == before


# Run by the process test in its own interpreters, against a database they share.
_CHILD = """
import os, sys, time
import django
django.setup()
from tests.gateway import test_rollups as t
t.child(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
"""


def child(step: str, start_at: float) -> None:
    """One step of the process test, in a child process (records, a rollup run, the checks)."""
    from django.db import transaction

    if step == "seed":
        with transaction.atomic():
            alice = factories.account()
            key, _ = factories.api_key(alice)
            add_records(alice, [key, None], 900, seed=13)
            charlie = factories.account()
            add_records(charlie, [None], 300, seed=14)
    elif step == "roll":
        time.sleep(max(0.0, start_at - time.time()))
        for _ in range(3):
            usage.roll_up(batch_records=97)
    elif step == "check":
        assert UsageRecord.objects.count() == 1200
        assert_rollups_hold_every_record_once()
        before = rollup_snapshot()
        assert usage.roll_up() == 0
        assert rollup_snapshot() == before
        print("rollups exact")


@pytest.mark.django_db(transaction=True)
def test_concurrent_processes_count_each_record_once(tmp_path):
    env = dict(os.environ)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = _database_url()
    else:
        # A file both processes open, as the embedded deployment does (WAL, busy timeout).
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'usage.sqlite3'}"
        env["TF_VAR_DIR"] = str(tmp_path)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )

    def run(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def finish(proc: subprocess.Popen[str]) -> str:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return out

    finish(run("seed"))
    start_at = str(time.time() + 2.0)
    rollers = [run("roll", start_at) for _ in range(3)]
    for proc in rollers:
        finish(proc)
    assert "rollups exact" in finish(run("check"))


def test_pruning_keeps_records_newer_than_the_retention(two_accounts, settings):
    settings.USAGE_RETENTION_DAYS = 30
    alice = two_accounts["alice"]
    add_records(alice, two_accounts["alice_keys"], 20, seed=7, days_ago=3)
    old = now() - timedelta(days=45)
    add_records(alice, two_accounts["alice_keys"], 10, seed=8, days_ago=1)
    newest = list(UsageRecord.objects.order_by("-id").values_list("id", flat=True)[:10])
    UsageRecord.objects.filter(pk__in=newest).update(created_at=old)
    usage.roll_up()
    assert tasks.prune_usage() == 10
    assert UsageRecord.objects.count() == 20
    assert not UsageRecord.objects.filter(created_at__lt=now() - timedelta(days=30)).exists()
    # The rollups still hold what was pruned.
    assert (
        sum(UsageRollup.objects.filter(granularity="day").values_list("requests", flat=True)) == 30
    )


def test_pruning_never_deletes_records_that_are_not_rolled_up(two_accounts, settings):
    settings.USAGE_RETENTION_DAYS = 0
    alice = two_accounts["alice"]
    add_records(alice, two_accounts["alice_keys"], 30, seed=9)
    usage.roll_up()
    add_records(alice, two_accounts["alice_keys"], 12, seed=10)

    assert usage.prune() == 30
    assert UsageRecord.objects.count() == 12
    # Reports stay exact: rollups for the pruned, the tail for the rest.
    rng = usage.period_range("week", at=now())
    rep = usage.report(account_id=alice.pk, start=rng.start, end=rng.end, group_by=("model",))
    assert rep.totals.requests == 42
    assert usage.roll_up() == 12
    assert usage.prune() == 12


def test_it_reads_exactly_while_rollups_commit(two_accounts):
    alice = two_accounts["alice"]
    add_records(alice, two_accounts["alice_keys"], 80, seed=11)
    start = now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = (start - timedelta(days=5), start + timedelta(days=1))
    before = usage.report(account_id=alice.pk, start=rng[0], end=rng[1]).totals
    usage.roll_up(batch_records=7)
    after = usage.report(account_id=alice.pk, start=rng[0], end=rng[1]).totals
    assert before == after
    assert after.requests == 80


# --- a real worker ----------------------------------------------------------------------------


def _database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def _idle(app: Any) -> bool:
    inspector = app.control.inspect(timeout=1.0)
    busy = 0
    for found in (inspector.active(), inspector.reserved(), inspector.scheduled()):
        if found is None:
            return False
        busy += sum(len(tasks_) for tasks_ in found.values())
    return busy == 0


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL"), reason="CELERY_BROKER_URL is not set (CI sets it)"
)
def test_a_real_worker_runs_overlapping_rollups_without_double_counting():
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a database it can share: PostgreSQL")
    from tokenfactory.celery import app

    alice = factories.account()
    key, _ = factories.api_key(alice)
    add_records(alice, [key, None], 3_000, seed=12)
    app.control.purge()
    env = {**os.environ, "DATABASE_URL": _database_url()}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tokenfactory",
            "worker",
            "--concurrency=3",
            "--pool=prefork",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            f"--hostname=rollup-test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.inspect(timeout=1.0).ping():
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker did not come up"
        for _ in range(6):
            tasks.roll_up_usage.delay()
        top = UsageRecord.objects.order_by("-id").values_list("id", flat=True).first()
        while True:
            mark = RollupWatermark.objects.filter(name=usage.WATERMARK).first()
            if mark is not None and mark.last_record_id == top and _idle(app):
                break
            assert time.monotonic() < deadline, "the rollups did not finish"
            time.sleep(0.2)
        assert_rollups_hold_every_record_once()
        before = rollup_snapshot()

        for _ in range(4):
            tasks.roll_up_usage.delay()
        time.sleep(0.5)
        while not _idle(app):
            assert time.monotonic() < deadline + 30
            time.sleep(0.2)
        assert rollup_snapshot() == before
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    assert settings.CELERY_BROKER_URL
