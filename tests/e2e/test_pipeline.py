"""One request pipeline (gateway/exchange.py) behind every inference path: whatever ends a request
after admission (a client hanging up, an upstream failing) releases its reservation and leaves
exactly one usage record; count_tokens and the media endpoints fall back to a second route; a batch
line is recorded like the same direct call."""

from __future__ import annotations

import io
import struct
import time
import wave
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from billing import ledger
from gateway import limits, metering, tokens
from gateway.models import CatalogModel, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

TOP_UP = 1_000_000
HANG_UP_AFTER_S = 0.4
SLOW = {"x-sim-options": "latency=1500"}


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters).order_by("created_at"))


def wav_bytes(seconds: float, rate: int = 8_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"".join(struct.pack("<h", 0) for _ in range(int(seconds * rate))))
    return out.getvalue()


@pytest.fixture
def funded(live: dict[str, Any]) -> dict[str, Any]:
    """The live account with a balance, and the media models (one route each)."""
    tokens.count_text("warm")  # the tokenizer loads once, slowly: not inside a timed request
    up = live["openai"]
    unit_priced = {"input_price_micros": None, "output_price_micros": None}
    factories.model(
        "sim-embed",
        routes=[(up, "sim-embed")],
        kind=CatalogModel.Kind.EMBEDDING,
        input_price_micros=20_000,
        output_price_micros=0,
    )
    factories.model(
        "sim-whisper",
        routes=[(up, "sim-whisper")],
        kind=CatalogModel.Kind.TRANSCRIPTION,
        unit=CatalogModel.Unit.SECONDS,
        unit_price_micros=100,
        **unit_priced,
    )
    factories.model(
        "sim-image",
        routes=[(up, "sim-image")],
        kind=CatalogModel.Kind.IMAGE,
        unit=CatalogModel.Unit.IMAGES,
        unit_price_micros=40_000,
        **unit_priced,
    )
    # A plan with a token window, so the reservation is there to see (the live account's has none).
    acct = factories.account(owner=factories.UserFactory.create(), plan_slug="pro")
    ledger.credit(account=acct, amount_micros=TOP_UP, idempotency_key="topup-pipe")
    _, secret = factories.api_key(acct)
    return {**live, "account": acct, "secret": secret}


def wait_until_settled(account_id: int, endpoint: str) -> UsageRecord:
    """The one usage record of a request, once the gateway has settled it."""
    deadline = time.monotonic() + 10
    while True:
        found = records(account_id=account_id, endpoint=endpoint)
        window = limits.window_state(account_id)
        if found and (window is None or window["reserved"] == 0):
            time.sleep(0.2)  # a second record would have arrived by now
            (record,) = records(account_id=account_id, endpoint=endpoint)
            return record
        assert time.monotonic() < deadline, f"{endpoint}: still reserved {window}, {found}"
        time.sleep(0.05)


_JSON_CALLS = {
    "chat": (
        "/openai/v1/chat/completions",
        {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
    ),
    "messages": (
        "/anthropic/v1/messages",
        {"model": "sim-claude", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
    ),
    "responses": ("/openai/v1/responses", {"model": "sim-gpt", "input": "hi"}),
    "embeddings": ("/openai/v1/embeddings", {"model": "sim-embed", "input": "hi there"}),
    "images": ("/openai/v1/images/generations", {"model": "sim-image", "prompt": "a cat"}),
    "completions": ("/openai/v1/completions", {"model": "sim-gpt", "prompt": "hi"}),
}


@pytest.mark.parametrize("endpoint", list(_JSON_CALLS))
def test_it_releases_the_reservation_and_records_once_when_the_client_hangs_up(
    funded: dict[str, Any], endpoint: str
) -> None:
    path, body = _JSON_CALLS[endpoint]
    headers = {**SLOW, "authorization": f"Bearer {funded['secret']}"}
    if endpoint == "messages":
        headers["anthropic-version"] = "2023-06-01"
    with pytest.raises(httpx.TimeoutException):
        httpx.post(funded["url"] + path, json=body, headers=headers, timeout=HANG_UP_AFTER_S)
    recorded = "chat" if endpoint == "messages" else endpoint
    record = wait_until_settled(funded["account"].pk, recorded)
    assert (record.status, record.error_code) == (499, "client_disconnected")
    assert record.billed_micros == 0 and record.route
    assert limits.live_balance(funded["account"].pk) in (None, TOP_UP)


def test_it_releases_a_transcription_whose_client_hangs_up(funded: dict[str, Any]) -> None:
    headers = {**SLOW, "authorization": f"Bearer {funded['secret']}"}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            funded["url"] + "/openai/v1/audio/transcriptions",
            data={"model": "sim-whisper"},
            files={"file": ("a.wav", wav_bytes(2.0), "audio/wav")},
            headers=headers,
            timeout=HANG_UP_AFTER_S,
        )
    record = wait_until_settled(funded["account"].pk, "transcriptions")
    assert (record.status, record.error_code) == (499, "client_disconnected")
    assert limits.live_balance(funded["account"].pk) in (None, TOP_UP)


def test_it_releases_the_reservation_when_a_stream_breaks(funded: dict[str, Any]) -> None:
    client = openai.OpenAI(
        base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"], max_retries=0
    )
    stream = client.chat.completions.create(
        model="sim-gpt",
        messages=[{"role": "user", "content": "tell me a long story"}],
        stream=True,
        extra_headers={"x-sim-options": "drop=5,tokens=40"},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    record = wait_until_settled(funded["account"].pk, "chat")
    assert (record.status, record.error_code) == (503, "model_unavailable")


@pytest.mark.parametrize("model", ["sim-instruct", "sim-gpt", "sim-claude"])
def test_it_records_a_broken_completions_stream_once(funded: dict[str, Any], model: str) -> None:
    factories.model("sim-instruct", routes=[(funded["openai"], "sim-instruct")])
    client = openai.OpenAI(
        base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"], max_retries=0
    )
    stream = client.completions.create(
        model=model,
        prompt="tell me a long story",
        max_tokens=40,
        stream=True,
        extra_headers={"x-sim-options": "drop=5,tokens=40"},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    record = wait_until_settled(funded["account"].pk, "completions")
    assert (record.status, record.error_code) == (503, "model_unavailable")
    assert record.output_tokens > 0 and record.is_estimate


def test_it_releases_the_reservation_when_a_responses_stream_breaks(funded: dict[str, Any]) -> None:
    client = openai.OpenAI(
        base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"], max_retries=0
    )
    events = client.responses.create(
        model="sim-gpt",
        input="tell me a long story",
        stream=True,
        extra_headers={"x-sim-options": "drop=5,tokens=40"},
    )
    kinds = [event.type for event in events]
    assert kinds[-1] in ("response.failed", "error")
    record = wait_until_settled(funded["account"].pk, "responses")
    assert (record.status, record.error_code) == (503, "model_unavailable")
    assert record.output_tokens > 0 and record.is_estimate


# --- fallback --------------------------------------------------------------------------------


def test_count_tokens_falls_back_to_the_second_route(live: dict[str, Any]) -> None:
    up = live["anthropic"]
    factories.model("sim-two", routes=[(up, "sim-claude+status=500"), (up, "sim-claude")])
    body = {
        "model": "sim-two",
        "system": "You are terse. " * 30,
        "messages": [{"role": "user", "content": "count me, please " * 20}],
    }
    direct = httpx.post(
        live["sim"] + "/v1/messages/count_tokens",
        json=dict(body, model="sim-claude"),
        headers={"anthropic-version": "2023-06-01"},
    ).json()["input_tokens"]
    assert direct != tokens.count_request(body)  # so the estimate cannot pass for the answer
    answer = httpx.post(
        live["url"] + "/anthropic/v1/messages/count_tokens",
        json=body,
        headers={"x-api-key": live["secret"], "anthropic-version": "2023-06-01"},
    )
    assert answer.status_code == 200
    assert answer.json() == {"input_tokens": direct}
    assert "x-request-id" in answer.headers and "request-id" in answer.headers


def test_a_media_endpoint_falls_back_to_the_second_route(funded: dict[str, Any]) -> None:
    up = funded["openai"]
    factories.model(
        "sim-image-2",
        routes=[(up, "sim-image+status=503"), (up, "sim-image")],
        kind=CatalogModel.Kind.IMAGE,
        unit=CatalogModel.Unit.IMAGES,
        unit_price_micros=40_000,
        input_price_micros=None,
        output_price_micros=None,
    )
    client = openai.OpenAI(
        base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"], max_retries=0
    )
    done = client.images.generate(model="sim-image-2", prompt="A server farm")
    assert len(done.data) == 1
    (record,) = records(endpoint="images")
    assert (record.status, record.route) == (200, f"{up.slug}:sim-image")
    assert record.cost_micros == 40_000


# --- batch lines -----------------------------------------------------------------------------


def test_a_batch_line_is_recorded_like_the_same_direct_call(
    live: dict[str, Any], settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client = openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=live["secret"])
    body = {
        "model": "sim-claude",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "[[say: the same words twice]]"}],
    }
    client.chat.completions.create(**body)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    upload = client.files.create(file=("in.jsonl", orjson.dumps(line)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    found = {("batch" if r.batch_id else "direct"): r for r in records(endpoint="chat")}
    direct, queued = found["direct"], found["batch"]
    same = (
        "surface",
        "endpoint",
        "model",
        "route",
        "status",
        "error_code",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "is_estimate",
        "stream",
        "in_window",
        "api_key_id",
    )
    assert {f: getattr(queued, f) for f in same} == {f: getattr(direct, f) for f in same}
    assert queued.batch_id == batch.id
    assert queued.ttft_ms is not None and queued.latency_ms >= queued.ttft_ms
    assert queued.cost_micros == -(-direct.cost_micros * 50 // 100)


def test_a_batch_line_whose_upstream_fails_releases_its_reservation(
    funded: dict[str, Any], settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    factories.model("sim-broken", routes=[(funded["openai"], "sim-gpt+status=500")])
    client = openai.OpenAI(base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"])
    body = {"model": "sim-broken", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    upload = client.files.create(file=("in.jsonl", orjson.dumps(line)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    record = wait_until_settled(funded["account"].pk, "chat")
    assert (record.status, record.error_code, record.batch_id) == (
        503,
        "model_unavailable",
        batch.id,
    )
    assert record.route == f"{funded['openai'].slug}:sim-gpt+status=500"
    assert record.cost_micros == record.billed_micros == 0
    assert limits.live_balance(funded["account"].pk) in (None, TOP_UP)


# --- upstream error bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surface", "status", "expected"),
    [("openai", 500, 503), ("anthropic", 503, 503), ("openai", 400, 503), ("anthropic", 404, 503)],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_error_page_is_logged_never_echoed(
    live: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    surface: str,
    status: int,
    expected: int,
    stream: bool,
) -> None:
    """A mistaken provider URL (an internal service's HTML error page) tells the caller the status
    and a short, safe message; the body goes to the operator's log, truncated."""
    upstream = "sim-gpt" if surface == "openai" else "sim-claude"
    model = f"sim-page-{status}"
    factories.model(model, routes=[(live[surface], f"{upstream}+status={status}+error_page=1")])
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    path = "/openai/v1/chat/completions" if surface == "openai" else "/anthropic/v1/messages"
    headers = {"authorization": f"Bearer {live['secret']}", "anthropic-version": "2023-06-01"}
    with caplog.at_level("WARNING", logger="tokenfactory.upstream"):
        answer = httpx.post(live["url"] + path, json=body, headers=headers, timeout=30)
    assert answer.status_code == expected
    text = answer.text
    assert "hunter2" not in text and "<html" not in text and "admin-console" not in text
    message = answer.json()["error"]["message"]
    assert f"HTTP {status}" in message and len(message) < 300
    logged = [r for r in caplog.records if r.name == "tokenfactory.upstream"]
    assert logged and "hunter2" in logged[-1].getMessage()
    assert getattr(logged[-1], "upstream_status", None) == status


# --- streams whose upstream reports no usage -------------------------------------------------


@pytest.mark.parametrize("client_surface", ["openai", "anthropic"])
@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
def test_a_stream_without_upstream_usage_is_estimated_and_recorded_as_served(
    funded: dict[str, Any], client_surface: str, upstream: str
) -> None:
    """Nothing is served at $0: a stream that ends normally without usage (an Anthropic upstream
    that leaves it out, an OpenAI one that ignores stream_options.include_usage) is a 200 billed
    on our token count, marked as an estimate; never a 499 or a free 200."""
    upstream_model = "sim-gpt" if upstream == "openai" else "sim-claude"
    factories.model("sim-quiet", routes=[(funded[upstream], f"{upstream_model}+usage=none")])
    say = [{"role": "user", "content": "[[say: one two three four five]]"}]
    if client_surface == "openai":
        client = openai.OpenAI(
            base_url=f"{funded['url']}/openai/v1/", api_key=funded["secret"], max_retries=0
        )
        chunks = client.chat.completions.create(
            model="sim-quiet",
            messages=say,
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        aclient = anthropic.Anthropic(
            base_url=f"{funded['url']}/anthropic", api_key=funded["secret"], max_retries=0
        )
        with aclient.messages.stream(model="sim-quiet", max_tokens=50, messages=say) as stream:
            text = "".join(stream.text_stream)
    assert text == "one two three four five"
    record = wait_until_settled(funded["account"].pk, "chat")
    assert (record.status, record.error_code) == (200, "")
    assert record.is_estimate
    assert record.input_tokens > 0 and record.output_tokens >= tokens.count_text(text) > 0
    assert record.cost_micros > 0
