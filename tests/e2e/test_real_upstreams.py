"""Real servers' quirks, played by the simulator (knobs in a provider's base URL, like a server's
fixed behaviour): which headers go upstream, whose fault an upstream 400 is, usage counted by
the upstream's own tokenizer when a stream comes without it, the output-limit field, no retry
once the upstream may have started, and which stop sequence ended an answer. Both SDKs, over
HTTP, against the simulator over a socket."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from django.test import Client

from gateway import metering, usage
from gateway.models import Provider, Route, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

SAY = "[[say: the quiet river stone over the bright water and the long road home]]"
MESSAGES = [{"role": "user", "content": SAY}]
ANSWER = "the quiet river stone over the bright water and the long road home"


def oai(live: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], max_retries=0
    )


def ant(live: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=live["secret"], max_retries=0
    )


def sim(live: dict[str, Any], path: str) -> dict[str, Any]:
    if path == "reset":
        return httpx.post(f"{live['sim']}/_sim/reset").json()
    return httpx.get(f"{live['sim']}/_sim/stats").json()


def quirky(live: dict[str, Any], slug: str, knobs: str, **fields: Any) -> Provider:
    """An OpenAI-protocol provider in front of the simulator with ``knobs`` as its fixed quirks."""
    prefix = f"/knobs/{knobs}" if knobs else ""
    defaults: dict[str, Any] = {
        "name": slug,
        "protocol": "openai",
        "base_url": f"{live['sim']}{prefix}/v1",
        "api_key": "sim-key",
        **fields,
    }
    provider, _ = Provider.objects.update_or_create(slug=slug, defaults=defaults)
    return provider


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters).order_by("created_at"))


def last_record(live: dict[str, Any], model: str) -> UsageRecord:
    deadline = time.monotonic() + 10
    while True:
        found = records(account_id=live["account"].pk, model=model)
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no usage record for {model}"
        time.sleep(0.05)


# --- 1. headers, and whose fault an upstream 400 is -------------------------------------------


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
def test_a_server_that_rejects_our_request_ids_serves_when_none_is_sent(
    live: dict[str, Any], surface: str
) -> None:
    """llama-cpp-python refuses any x-request-id that is not a UUID; a provider with no
    request_id_header sends none, and the request is served."""
    factories.model("q-ids", routes=[(quirky(live, "q-ids", "uuid_ids=1"), "sim-gpt")])
    if surface == "openai":
        reply = oai(live).chat.completions.create(model="q-ids", messages=MESSAGES)
        assert reply.choices[0].message.content == ANSWER
    else:
        message = ant(live).messages.create(model="q-ids", max_tokens=100, messages=MESSAGES)
        assert message.content[0].text == ANSWER
    assert "x-request-id" not in sim(live, "stats")["last_headers"]


@pytest.mark.parametrize("surface", ["openai", "anthropic"])
def test_an_upstream_400_about_our_headers_is_not_the_callers_fault(
    live: dict[str, Any], surface: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream refuses our request id (400, plain text): the caller gets the table's 503
    model_unavailable, never invalid_request_error; the operator's log has the upstream's body."""
    provider = quirky(live, "q-ids-sent", "uuid_ids=1", request_id_header="x-request-id")
    factories.model("q-ids-sent", routes=[(provider, "sim-gpt")])
    failure: openai.APIStatusError | anthropic.APIStatusError
    with caplog.at_level("WARNING", logger="tokenfactory.upstream"):
        if surface == "openai":
            with pytest.raises(openai.APIStatusError) as caught:
                oai(live).chat.completions.create(model="q-ids-sent", messages=MESSAGES)
            failure = caught.value
            assert isinstance(failure.body, dict)
            assert (failure.body["type"], failure.body["code"]) == (
                "server_error",
                "model_unavailable",
            )
        else:
            with pytest.raises(anthropic.APIStatusError) as caught_a:
                ant(live).messages.create(model="q-ids-sent", max_tokens=10, messages=MESSAGES)
            failure = caught_a.value
            assert isinstance(failure.body, dict)
            assert failure.body["error"]["type"] == "overloaded_error"
    assert failure.status_code == 503
    assert "HTTP 400" in str(failure)
    logged = [r.getMessage() for r in caplog.records if r.name == "tokenfactory.upstream"]
    assert any("Invalid UUID in request header X-Request-ID" in m for m in logged)
    record = last_record(live, "q-ids-sent")
    assert (record.status, record.error_code, record.billed_micros) == (
        503,
        "model_unavailable",
        0,
    )


def test_a_route_whose_upstream_refuses_our_request_falls_back_to_the_next(
    live: dict[str, Any],
) -> None:
    refusing = quirky(live, "q-refuse", "uuid_ids=1", request_id_header="x-request-id")
    fine = quirky(live, "q-fine", "uuid_ids=1")
    factories.model("q-fallback", routes=[(refusing, "sim-gpt"), (fine, "sim-gpt")])
    reply = oai(live).chat.completions.create(model="q-fallback", messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER
    assert last_record(live, "q-fallback").route == "q-fine:sim-gpt"


def test_an_upstream_400_about_the_callers_content_is_still_theirs(live: dict[str, Any]) -> None:
    """The protocol's own JSON error, about the request body: invalid_request_error, 400."""
    factories.model("q-400", routes=[(quirky(live, "q-400", "status=400"), "sim-gpt")])
    with pytest.raises(openai.BadRequestError) as caught:
        oai(live).chat.completions.create(model="q-400", messages=MESSAGES)
    assert caught.value.body["type"] == "invalid_request_error"


def test_only_the_headers_a_provider_names_go_upstream(live: dict[str, Any]) -> None:
    """Client headers only in forward_headers, fixed extra_headers always, the key in the
    provider's auth style; our request id only in request_id_header."""
    provider = quirky(
        live,
        "q-headers",
        "",
        auth_style="api-key",
        forward_headers=["x-team"],
        extra_headers={"X-Org": "acme"},
        request_id_header="x-correlation-id",
    )
    factories.model("q-headers", routes=[(provider, "sim-gpt")])
    raw = oai(live).chat.completions.with_raw_response.create(
        model="q-headers",
        messages=MESSAGES,
        extra_headers={"x-team": "blue", "x-sim-options": "status=500", "x-other": "no"},
    )
    assert raw.http_response.status_code == 200  # x-sim-options was not forwarded
    got = sim(live, "stats")["last_headers"]
    assert got["x-team"] == "blue" and got["x-org"] == "acme" and got["api-key"] == "sim-key"
    assert got["x-correlation-id"] == raw.http_response.headers["x-request-id"]
    assert "authorization" not in got and "x-request-id" not in got
    assert "x-other" not in got and "x-sim-options" not in got


# --- 2. usage when the upstream sends none ------------------------------------------------------


def _stream_usage_openai(live: dict[str, Any], model: str) -> tuple[str, Any]:
    chunks = list(
        oai(live).chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and not chunks[-1].choices
    return text, chunks[-1].usage


@pytest.mark.parametrize("kind", ["vllm", "llama-cpp-python"])
def test_a_stream_without_usage_is_counted_by_the_upstreams_tokenizer(
    live: dict[str, Any], kind: str
) -> None:
    """The server ignores include_usage and counts with another tokenizer; the provider names
    its tokenizer endpoint: every surface gets the usage it asks for, equal to the server's own
    count (its non-stream usage for the same request), recorded as served (200) and counted by
    ``tokenizer:<kind>``."""
    provider = quirky(
        live,
        f"q-tok-{kind}",
        "stream_usage=0,tokenizer=alt",
        tokenizer=kind,
        reports_stream_usage=True,
    )
    model = f"q-tok-{kind}"
    factories.model(model, routes=[(provider, "sim-gpt")])
    truth = oai(live).chat.completions.create(model=model, messages=MESSAGES).usage
    assert truth is not None
    assert last_record(live, model).counted_by == "upstream"

    text, usage = _stream_usage_openai(live, model)
    assert text == ANSWER
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        truth.prompt_tokens,
        truth.completion_tokens,
    )
    record = last_record(live, model)
    assert (record.status, record.error_code, record.counted_by) == (200, "", f"tokenizer:{kind}")
    assert (record.input_tokens, record.output_tokens) == (
        truth.prompt_tokens,
        truth.completion_tokens,
    )
    assert not record.is_estimate and record.cost_micros > 0

    with ant(live).messages.stream(model=model, max_tokens=100, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == truth.completion_tokens
    assert final.usage.input_tokens == truth.prompt_tokens
    assert last_record(live, model).counted_by == f"tokenizer:{kind}"

    events = list(oai(live).responses.create(model=model, input=SAY, stream=True))
    completed = [e for e in events if e.type == "response.completed"]
    assert completed and completed[0].response.usage is not None
    assert completed[0].response.usage.output_tokens == truth.completion_tokens
    assert completed[0].response.usage.input_tokens == truth.prompt_tokens
    record = last_record(live, model)
    assert (record.endpoint, record.status, record.counted_by) == (
        "responses",
        200,
        f"tokenizer:{kind}",
    )


def test_a_stream_without_usage_and_no_tokenizer_is_estimated(live: dict[str, Any]) -> None:
    provider = quirky(live, "q-est", "stream_usage=0", reports_stream_usage=False)
    factories.model("q-est", routes=[(provider, "sim-gpt")])
    text, usage = _stream_usage_openai(live, "q-est")
    assert text == ANSWER and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    record = last_record(live, "q-est")
    assert (record.status, record.counted_by, record.is_estimate) == (200, "estimate", True)
    assert record.output_tokens == usage.completion_tokens


def test_an_unreachable_tokenizer_falls_back_to_the_estimate_quickly(live: dict[str, Any]) -> None:
    provider = quirky(
        live,
        "q-tok-down",
        "stream_usage=0",
        tokenizer="vllm",
        tokenizer_url="http://127.0.0.1:9/tokenize",
    )
    factories.model("q-tok-down", routes=[(provider, "sim-gpt")])
    started = time.monotonic()
    _, usage = _stream_usage_openai(live, "q-tok-down")
    assert time.monotonic() - started < 2.5
    assert usage.completion_tokens > 0
    assert last_record(live, "q-tok-down").counted_by == "estimate"


# --- 3. the output limit's field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "capped"), [("max_tokens", True), ("both", True), ("max_completion_tokens", False)]
)
def test_the_output_limit_goes_in_the_providers_field(
    live: dict[str, Any], field: str, capped: bool
) -> None:
    """A server that ignores max_completion_tokens generates to its own length unless the limit
    is in max_tokens: on chat (sent as max_completion_tokens), Responses (max_output_tokens) and
    the Anthropic surface (max_tokens), all translated to the provider's field."""
    model = f"q-limit-{field}"
    provider = quirky(live, model, "ignore_mct=1,tokens=60", output_limit_field=field)
    factories.model(model, routes=[(provider, "sim-gpt")])
    chat = oai(live).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=5
    )
    response = oai(live).responses.create(model=model, input="hi", max_output_tokens=5)
    message = ant(live).messages.create(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.usage is not None and response.usage is not None
    counts = [
        chat.usage.completion_tokens,
        response.usage.output_tokens,
        message.usage.output_tokens,
    ]
    assert counts == ([5, 5, 5] if capped else [60, 60, 60])
    assert message.stop_reason == ("max_tokens" if capped else "end_turn")


# --- 4. no retry once the upstream may have started ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_first_byte_timeout_is_not_retried_and_the_route_sets_it(
    live: dict[str, Any], stream: bool
) -> None:
    """The upstream takes the request and generates slowly: after the route's first-byte timeout
    (which overrides the provider's) the caller gets a 504, the upstream saw ONE request, and the
    abandoned attempt's record names the route."""
    provider = quirky(live, "q-slow", "", first_byte_timeout_ms=30_000)
    factories.model("q-slow", routes=[(provider, "sim-gpt+gen_tps=10+tokens=40+ttft=3000")])
    Route.objects.filter(provider=provider).update(first_byte_timeout_ms=400)
    sim(live, "reset")
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        oai(live).chat.completions.create(
            model="q-slow", messages=[{"role": "user", "content": "hi"}], stream=stream
        )
    assert time.monotonic() - started < 2.5
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "model_unavailable"
    time.sleep(0.3)
    assert sim(live, "stats")["by_model"]["sim-gpt"]["requests"] == 1
    record = last_record(live, "q-slow")
    assert (record.status, record.error_code) == (503, "model_unavailable")
    assert record.route == "q-slow:sim-gpt+gen_tps=10+tokens=40+ttft=3000"
    assert record.billed_micros == 0


def test_a_connect_failure_goes_to_the_next_route(live: dict[str, Any]) -> None:
    down, _ = Provider.objects.update_or_create(
        slug="q-down",
        defaults={"name": "q-down", "protocol": "openai", "base_url": "http://127.0.0.1:9/v1"},
    )
    factories.model("q-down", routes=[(down, "sim-gpt"), (quirky(live, "q-up", ""), "sim-gpt")])
    reply = oai(live).chat.completions.create(model="q-down", messages=MESSAGES)
    assert reply.choices[0].message.content == ANSWER
    assert last_record(live, "q-down").route == "q-up:sim-gpt"


# --- 5. stop sequences --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_from_an_openai_upstream_is_named_on_the_anthropic_surface(
    live: dict[str, Any], stream: bool
) -> None:
    """The server stops at the caller's stop string, leaves it out of the text and names it
    (vLLM's stop_reason): stop_reason stop_sequence, stop_sequence which one."""
    factories.model("q-stop", routes=[(quirky(live, "q-stop", ""), "sim-gpt")])
    kwargs: dict[str, Any] = {
        "model": "q-stop",
        "max_tokens": 100,
        "messages": MESSAGES,
        "stop_sequences": ["zebra", "bright"],
    }
    if stream:
        with ant(live).messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = ant(live).messages.create(**kwargs)
    assert message.content[0].text == "the quiet river stone over the "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "bright")

    plain = ant(live).messages.create(model="q-stop", max_tokens=100, messages=MESSAGES)
    assert (plain.stop_reason, plain.stop_sequence) == ("end_turn", None)


def test_usage_reports_say_how_many_requests_the_gateway_counted(live: dict[str, Any]) -> None:
    """/v1/usage rows and the CSV export carry the requests counted by the upstream's tokenizer
    and those estimated, before and after the records are rolled up."""
    counted = quirky(live, "q-count", "stream_usage=0,tokenizer=alt", tokenizer="vllm")
    guessed = quirky(live, "q-guess", "stream_usage=0")
    factories.model("q-count", routes=[(counted, "sim-gpt")])
    factories.model("q-guess", routes=[(guessed, "sim-gpt")])
    _stream_usage_openai(live, "q-count")
    _stream_usage_openai(live, "q-guess")
    oai(live).chat.completions.create(model="q-guess", messages=MESSAGES)  # reported: neither
    assert len(records(account_id=live["account"].pk)) == 3

    def report() -> dict[str, Any]:
        answer = httpx.get(
            f"{live['url']}/v1/usage",
            params={"period": "day", "group_by": "model"},
            headers={"authorization": f"Bearer {live['secret']}"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    for rolled in (False, True):
        if rolled:
            usage.roll_up()
        found = report()
        assert found["totals"]["tokenizer_counted_requests"] == 1
        assert found["totals"]["estimated_requests"] == 1
        rows = {b["model"]: b for b in found["buckets"]}
        assert rows["q-count"]["tokenizer_counted_requests"] == 1
        assert (rows["q-guess"]["estimated_requests"], rows["q-guess"]["requests"]) == (1, 2)

    client = Client()
    client.force_login(live["owner"])
    lines = list(
        csv.DictReader(
            io.StringIO(client.get("/usage/export.csv", {"period": "day"}).content.decode())
        )
    )
    by_model = {row["model"]: row for row in lines}
    assert by_model["q-count"]["tokenizer_counted_requests"] == "1"
    assert by_model["q-guess"]["estimated_requests"] == "1"


def test_a_non_streamed_answer_without_usage_is_counted_by_the_tokenizer(
    live: dict[str, Any],
) -> None:
    honest = quirky(live, "q-honest", "tokenizer=alt")
    silent = quirky(live, "q-silent", "usage=none,tokenizer=alt", tokenizer="llama-cpp-python")
    factories.model("q-honest", routes=[(honest, "sim-gpt")])
    factories.model("q-silent", routes=[(silent, "sim-gpt")])
    truth = oai(live).chat.completions.create(model="q-honest", messages=MESSAGES).usage
    got = oai(live).chat.completions.create(model="q-silent", messages=MESSAGES).usage
    assert truth is not None and got is not None
    assert (got.prompt_tokens, got.completion_tokens) == (
        truth.prompt_tokens,
        truth.completion_tokens,
    )
    message = ant(live).messages.create(model="q-silent", max_tokens=100, messages=MESSAGES)
    assert message.usage.output_tokens == truth.completion_tokens
    assert last_record(live, "q-silent").counted_by == "tokenizer:llama-cpp-python"
