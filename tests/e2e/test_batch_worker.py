"""A batch on a real Celery worker process over the Redis broker: kill -9 the worker mid-batch,
start another, and the batch completes with every line run to one result, one usage record each,
and an exact ledger. Needs CELERY_BROKER_URL and PostgreSQL (a subprocess cannot see an in-memory
SQLite test database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import Account
from billing import ledger
from billing.models import LedgerEntry, Plan
from gateway import metering
from gateway.models import Batch, BatchLine, UsageRecord
from tests import factories

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("CELERY_BROKER_URL")
        or not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="needs CELERY_BROKER_URL and a PostgreSQL DATABASE_URL",
    ),
]

LINES = 24
ROOT = Path(__file__).resolve().parents[2]
# Runs the worker with a short lease and a small pool of concurrent lines, so the test is quick.
WORKER = (
    "import django, os; django.setup(); from django.conf import settings; "
    "settings.BATCH_LEASE_SECONDS = 3; settings.BATCH_CONCURRENCY = 2; "
    "from tokenfactory.celery import app; "
    "app.worker_main(['worker', '-l', 'warning', '--concurrency', '1', '-Q', 'celery'])"
)


def start_worker() -> subprocess.Popen[bytes]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}"
    env = {
        **os.environ,
        "DATABASE_URL": f"{url}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "tokenfactory.settings",
    }
    return subprocess.Popen(
        [sys.executable, "-c", WORKER], cwd=ROOT, env=env, start_new_session=True
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    # The whole process group: the prefork child running the task dies with its parent.
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def counts(batch_id: str) -> tuple[str, int]:
    batch = Batch.objects.get(pk=batch_id)
    return batch.status, batch.completed_count + batch.failed_count


def test_it_resumes_after_kill_9_and_runs_and_bills_every_line_once(live: dict[str, Any]):
    assert not settings.CELERY_TASK_ALWAYS_EAGER
    from tokenfactory.celery import app

    app.control.purge()
    Plan.objects.filter(slug="test").update(
        window_tokens=1,
        rpm_limit=None,
        account_rpm_limit=None,
        tpm_limit=None,
        account_tpm_limit=None,
    )
    acct = factories.account(plan_slug="test")
    _, secret = factories.api_key(acct)
    ledger.credit(account=acct, amount_micros=5_000_000, idempotency_key="worker-topup")
    factories.model("sim-slow", routes=[(live["openai"], "sim-gpt+latency=300")])
    factories.model("sim-slow-claude", routes=[(live["anthropic"], "sim-claude+latency=300")])

    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "sim-slow" if i % 2 else "sim-slow-claude",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": f"[[say: line {i}]]"}],
            },
        }
        for i in range(LINES)
    ]
    client = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=secret)
    data = b"\n".join(orjson.dumps(line) for line in lines)
    uploaded = client.files.create(file=("work.jsonl", data), purpose="batch")

    first = start_worker()
    try:
        created = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while counts(created.id)[1] < 6:
            assert time.monotonic() < deadline, "the first worker never got going"
            time.sleep(0.05)
    finally:
        kill(first)
    status, done = counts(created.id)
    assert status == "in_progress" and done < LINES

    second = start_worker()
    try:
        deadline = time.monotonic() + 90
        while True:
            batch = client.batches.retrieve(created.id)
            if batch.status == "completed":
                break
            assert time.monotonic() < deadline, (
                f"not resumed: {batch.status} {batch.request_counts}"
            )
            time.sleep(0.2)
    finally:
        kill(second)

    assert batch.request_counts.completed == LINES and batch.request_counts.failed == 0
    assert batch.output_file_id is not None
    out = [orjson.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(LINES))
    for line in out:
        said = line["response"]["body"]["choices"][0]["message"]["content"]
        assert said == f"line {line['custom_id'][1:]}"
    rows = BatchLine.objects.filter(batch_id=created.id)
    assert set(rows.values_list("status", flat=True)) == {"succeeded"}

    metering.drain()
    records = list(UsageRecord.objects.filter(batch_id=created.id))
    assert sorted(r.request_id for r in records) == sorted(
        rows.values_list("request_id", flat=True)
    )
    billed = sum(r.billed_micros for r in records)
    assert billed > 0
    charges = LedgerEntry.objects.filter(account=acct, kind=LedgerEntry.Kind.USAGE)
    assert charges.count() == len([r for r in records if r.billed_micros])
    assert sum(-c.amount_micros for c in charges) == billed
    assert Account.objects.get(pk=acct.pk).balance_micros == 5_000_000 - billed
