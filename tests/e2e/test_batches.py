"""Batches through the official SDKs against the running gateway: OpenAI Files + Batches and
Anthropic Message Batches, cross-protocol lines, bad lines, cancellation, half-price usage records
and an exact ledger."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import orjson
import pytest

from accounts.models import Account
from billing import ledger, money
from billing.models import LedgerEntry, Plan
from gateway import metering
from gateway.models import BatchLine, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

IN_PRICE, OUT_PRICE = 1_000_000, 2_000_000  # the factories' default prices per 1M tokens


@pytest.fixture(autouse=True)
def _runner_in_process(settings: Any) -> None:
    # These tests drive batches on this process's runner thread even when a broker is configured;
    # test_batch_worker.py covers the Celery worker.
    settings.CELERY_TASK_ALWAYS_EAGER = True


def jsonl(items: list[Any]) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else orjson.dumps(i) for i in items) + b"\n"


def chat_line(custom_id: str, model: str, text: str, url: str = "/v1/chat/completions") -> Any:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {
            "model": model,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": f"[[say: {text}]]"}],
        },
    }


def oai(live: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=live["secret"])


def wait_openai(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.1)


def lines_of(client: openai.OpenAI, file_id: str | None) -> dict[str, Any]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    found = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    return {str(line["custom_id"]): line for line in found}


def half_price(record: UsageRecord) -> int:
    return money.request_cost(
        input_tokens=record.input_tokens,
        cached_tokens=record.cached_tokens,
        output_tokens=record.output_tokens,
        input_price_micros=IN_PRICE,
        output_price_micros=OUT_PRICE,
        price_factor_percent=50,
    )


def test_it_runs_an_openai_batch_across_protocols_and_reports_bad_lines(live):
    client = oai(live)
    deep = chat_line("deep", "sim-gpt", "eight")
    nested: dict[str, Any] = {}
    for _ in range(240):  # past the pipeline's 200 levels, within what orjson writes
        nested = {"a": nested}
    deep["body"]["metadata"] = nested
    data = jsonl(
        [
            chat_line("gpt", "sim-gpt", "one two three"),
            chat_line("claude", "sim-claude", "four five"),
            b'{"custom_id": "broken", "method": "POST", ',
            chat_line("nomodel", "no-such-model", "six"),
            chat_line("wrongurl", "sim-gpt", "seven", url="/v1/embeddings"),
            deep,
        ]
    )
    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(data)
    assert client.files.retrieve(uploaded.id).filename == "input.jsonl"
    assert uploaded.id in [f.id for f in client.files.list()]

    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert created.id.startswith("batch_") and created.request_counts.total == 6
    batch = wait_openai(client, created.id)
    assert batch.status == "completed"
    assert batch.request_counts.completed == 2 and batch.request_counts.failed == 4
    assert batch.metadata == {"job": "nightly"}

    out = lines_of(client, batch.output_file_id)
    assert set(out) == {"gpt", "claude"}
    for custom_id, said in (("gpt", "one two three"), ("claude", "four five")):
        response = out[custom_id]["response"]
        assert response["status_code"] == 200 and out[custom_id]["error"] is None
        assert response["body"]["object"] == "chat.completion"
        assert response["body"]["choices"][0]["message"]["content"] == said
    assert out["claude"]["response"]["body"]["model"] == "sim-claude"

    errs = lines_of(client, batch.error_file_id)
    assert set(errs) == {"None", "nomodel", "wrongurl", "deep"}
    assert "Line 3 is not valid JSON" in errs["None"]["response"]["body"]["error"]["message"]
    missing = errs["nomodel"]["response"]
    assert missing["status_code"] == 404
    assert "'no-such-model' does not exist" in missing["body"]["error"]["message"]
    wrong = errs["wrongurl"]["response"]["body"]["error"]
    assert wrong["code"] == "invalid_url" and "'/v1/chat/completions'" in wrong["message"]
    too_deep = errs["deep"]["response"]["body"]["error"]
    assert too_deep["code"] == "invalid_body"
    assert "nested more than 200 levels" in too_deep["message"]

    metering.drain()
    records = {r.request_id: r for r in UsageRecord.objects.filter(batch_id=batch.id)}
    assert len(records) == 6
    served = [r for r in records.values() if r.status == 200]
    assert len(served) == 2
    for record in served:
        assert record.cost_micros == half_price(record) > 0
    assert {r.model for r in served} == {"sim-gpt", "sim-claude"}

    assert client.batches.list().data[0].id == batch.id
    client.files.delete(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_it_runs_an_anthropic_batch_on_both_protocols(live):
    client = anthropic.Anthropic(base_url=f"{live['url']}/anthropic", api_key=live["secret"])

    def params(model: str, text: str) -> Any:
        return {
            "model": model,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": f"[[say: {text}]]"}],
        }

    created = client.messages.batches.create(
        requests=[
            {"custom_id": "a", "params": params("sim-gpt", "alpha beta")},
            {"custom_id": "b", "params": params("sim-claude", "gamma")},
            {"custom_id": "c", "params": params("missing-model", "delta")},
        ]
    )
    assert created.id.startswith("msgbatch_")
    deadline = time.monotonic() + 30
    batch = client.messages.batches.retrieve(created.id)
    while batch.processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
        batch = client.messages.batches.retrieve(created.id)
    assert batch.request_counts.succeeded == 2 and batch.request_counts.errored == 1
    assert batch.results_url and batch.ended_at is not None

    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert results["a"].type == "succeeded" and results["b"].type == "succeeded"
    assert results["a"].message.content[0].text == "alpha beta"
    assert results["a"].message.model == "sim-gpt"
    assert results["b"].message.content[0].text == "gamma"
    assert results["c"].type == "errored"
    assert "'missing-model' does not exist" in results["c"].error.error.message
    assert created.id in [b.id for b in client.messages.batches.list()]

    metering.drain()
    records = list(UsageRecord.objects.filter(batch_id=created.id))
    assert len(records) == 3
    for record in records:
        if record.status == 200:
            assert record.cost_micros == half_price(record) > 0


def test_it_bills_past_the_window_at_half_price_without_counting_rpm(live):
    Plan.objects.filter(slug="test").update(
        window_tokens=1, rpm_limit=1, tpm_limit=None, account_tpm_limit=None
    )
    acct = factories.account(plan_slug="test")
    _, secret = factories.api_key(acct)
    ledger.credit(account=acct, amount_micros=1_000_000, idempotency_key="batch-topup")
    client = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=secret)
    data = jsonl([chat_line(f"r{i}", "sim-gpt", f"word {i}") for i in range(4)])
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_openai(client, created.id)
    # An RPM of 1 would refuse three of these if batch lines counted against it.
    assert batch.request_counts.completed == 4 and batch.error_file_id is None

    metering.drain()
    records = list(UsageRecord.objects.filter(batch_id=batch.id))
    assert len(records) == 4
    billed = 0
    for record in records:
        assert record.cost_micros == half_price(record)
        assert record.billed_micros == (0 if record.in_window else record.cost_micros)
        billed += record.billed_micros
    assert billed > 0
    charges = LedgerEntry.objects.filter(account=acct, kind=LedgerEntry.Kind.USAGE)
    assert sum(-c.amount_micros for c in charges) == billed
    assert charges.count() == len([r for r in records if r.billed_micros])
    acct = Account.objects.get(pk=acct.pk)
    assert acct.balance_micros == 1_000_000 - billed


def test_it_cancels_a_running_batch_promptly(live, settings):
    settings.BATCH_CONCURRENCY = 2
    factories.model("sim-slow", routes=[(live["openai"], "sim-gpt+latency=400")])
    client = oai(live)
    data = jsonl([chat_line(f"s{i}", "sim-slow", "slow") for i in range(20)])
    uploaded = client.files.create(file=("slow.jsonl", data), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 20
    while client.batches.retrieve(created.id).request_counts.completed < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    started = time.monotonic()
    batch = wait_openai(client, created.id)
    assert batch.status == "cancelled" and time.monotonic() - started < 5
    assert 2 <= batch.request_counts.completed < 20
    out = lines_of(client, batch.output_file_id)
    errs = lines_of(client, batch.error_file_id)
    assert len(out) + len(errs) == 20 and not set(out) & set(errs)
    assert {e["error"]["code"] for e in errs.values()} == {"batch_cancelled"}
    statuses = set(BatchLine.objects.filter(batch_id=batch.id).values_list("status", flat=True))
    assert statuses == {"succeeded", "cancelled"}
    metering.drain()
    assert UsageRecord.objects.filter(batch_id=batch.id).count() == len(out)
