"""Both official SDKs against the running gateway, in front of the simulator over a socket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests import factories

pytestmark = pytest.mark.e2e

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
# A 1x1 PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501


def oai(live: dict[str, Any], **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], **kwargs)


def ant(live: dict[str, Any], **kwargs: Any) -> anthropic.Anthropic:
    kwargs.setdefault("max_retries", 0)
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=live["secret"], **kwargs
    )


def sim_stats(live: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(f"{live['sim']}/_sim/stats").json()


def sim_reset(live: dict[str, Any]) -> None:
    httpx.post(f"{live['sim']}/_sim/reset")


MODELS = ["sim-gpt", "sim-claude"]


@pytest.mark.parametrize("model", MODELS)
def test_it_answers_the_openai_sdk_with_the_upstreams_text_and_usage(live, model):
    sim_reset(live)
    client = oai(live)
    done = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "[[say: Hello, world! All good.]]"}]
    )
    assert done.choices[0].message.content == "Hello, world! All good."
    assert done.choices[0].finish_reason == "stop"
    assert done.model == model
    stats = sim_stats(live)
    assert done.usage.prompt_tokens == stats["input_tokens"]
    assert done.usage.completion_tokens == stats["output_tokens"]

    sim_reset(live)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "[[say: Hello, world! All good.]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world! All good."
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    usage = chunks[-1].usage
    stats = sim_stats(live)
    assert usage.prompt_tokens == stats["input_tokens"]
    assert usage.completion_tokens == stats["output_tokens"] == 7
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("model", MODELS)
def test_it_answers_the_anthropic_sdk_with_the_upstreams_text_and_usage(live, model):
    sim_reset(live)
    client = ant(live)
    message = client.messages.create(
        model=model,
        max_tokens=200,
        system="You are terse.",
        messages=[{"role": "user", "content": "[[say: Hello, world! All good.]]"}],
    )
    assert message.content[0].text == "Hello, world! All good."
    assert message.stop_reason == "end_turn"
    assert message.model == model
    stats = sim_stats(live)
    assert message.usage.input_tokens == stats["input_tokens"]
    assert message.usage.output_tokens == stats["output_tokens"]

    sim_reset(live)
    with client.messages.stream(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "[[say: Hello, world! All good.]]"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Hello, world! All good."
    assert len(pieces) > 1, "the answer must arrive in pieces, not buffered whole"
    assert final.stop_reason == "end_turn"
    stats = sim_stats(live)
    assert final.usage.output_tokens == stats["output_tokens"] == 7
    assert final.usage.input_tokens == stats["input_tokens"]


def test_it_keeps_streaming_chunk_by_chunk(live):
    """The first token reaches the client long before the last one is generated."""
    client = oai(live)
    factories.model("sim-slow", routes=[(live["openai"], "sim-slow+tps=20+tokens=10")])
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="sim-slow", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    assert arrivals[-1] - arrivals[0] > 0.3


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_it_round_trips_a_tool_call_on_the_openai_surface(live, model, stream):
    client = oai(live)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Use get_weather for London please."}
    ]
    if stream:
        with client.chat.completions.stream(
            model=model, messages=messages, tools=[WEATHER_OPENAI]
        ) as s:
            first = s.get_final_completion()
    else:
        first = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER_OPENAI]
        )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments.replace(" ", "") == '{"city":"London"}'
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    final = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_OPENAI])
    assert final.choices[0].message.content.startswith("The tool returned: Sunny, 21 C")
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_it_round_trips_a_tool_call_on_the_anthropic_surface(live, model, stream):
    client = ant(live)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Use get_weather for London please."}
    ]
    if stream:
        with client.messages.stream(
            model=model, max_tokens=300, messages=messages, tools=[WEATHER_ANTHROPIC]
        ) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(
            model=model, max_tokens=300, messages=messages, tools=[WEATHER_ANTHROPIC]
        )
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather"
    assert use.input == {"city": "London"}
    messages.append(
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}
    )
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}],
        }
    )
    final = client.messages.create(
        model=model, max_tokens=300, messages=messages, tools=[WEATHER_ANTHROPIC]
    )
    assert final.content[0].text.startswith("The tool returned: Sunny, 21 C")
    assert final.stop_reason == "end_turn"


@pytest.mark.parametrize("model", MODELS)
def test_it_passes_images_by_base64_and_by_url_on_both_surfaces(live, model):
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is in these?"},
    ]
    reply = oai(live).chat.completions.create(
        model=model, messages=[{"role": "user", "content": parts}]
    )
    assert "2 image" in reply.choices[0].message.content

    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is in these?"},
    ]
    message = ant(live).messages.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": blocks}]
    )
    assert "2 image" in message.content[0].text


def test_it_refuses_a_bad_key_with_401_on_both_surfaces(live):
    bad = "tf-prod-" + "x" * 40
    with pytest.raises(openai.AuthenticationError) as exc:
        openai.OpenAI(
            base_url=f"{live['url']}/openai/v1/", api_key=bad, max_retries=0
        ).models.list()
    assert exc.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as aexc:
        anthropic.Anthropic(
            base_url=f"{live['url']}/anthropic/", api_key=bad, max_retries=0
        ).messages.create(
            model="sim-claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert aexc.value.status_code == 401
    assert aexc.value.body["error"]["type"] == "authentication_error"


def test_it_answers_an_unknown_model_with_404(live):
    with pytest.raises(openai.NotFoundError) as exc:
        oai(live).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        ant(live).messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def test_it_answers_malformed_json_with_400_in_each_envelope(live):
    headers = {"authorization": f"Bearer {live['secret']}", "content-type": "application/json"}
    r = httpx.post(
        f"{live['url']}/openai/v1/chat/completions", content=b"{not json", headers=headers
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{live['url']}/anthropic/v1/messages", content=b"[1, 2", headers=headers)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert r.headers["request-id"] == body["request_id"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "sim-gpt", "messages": "hello"}, "messages"),
        ({"model": 42, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
            "stream",
        ),
        (
            {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5},
            "max_tokens",
        ),
    ],
)
def test_it_answers_wrong_types_with_400_naming_the_field(live, payload, param):
    r = httpx.post(
        f"{live['url']}/openai/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {live['secret']}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_it_requires_max_tokens_on_the_anthropic_surface(live):
    r = httpx.post(
        f"{live['url']}/anthropic/v1/messages",
        json={"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": live["secret"], "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 400
    assert "max_tokens" in r.json()["error"]["message"]


def test_it_refuses_a_body_over_the_size_limit_with_413(live, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 10_000
    big = "x" * 20_000
    with pytest.raises(openai.APIStatusError) as exc:
        oai(live).chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": big}]
        )
    assert exc.value.status_code == 413
    with pytest.raises(anthropic.APIStatusError) as aexc:
        ant(live).messages.create(
            model="sim-gpt", max_tokens=5, messages=[{"role": "user", "content": big}]
        )
    assert aexc.value.status_code == 413


def test_it_retries_an_upstream_500_on_the_fallback_route(live):
    factories.model(
        "sim-flaky",
        routes=[(live["openai"], "sim-gpt+status=500"), (live["anthropic"], "sim-claude")],
    )
    reply = oai(live).chat.completions.create(
        model="sim-flaky", messages=[{"role": "user", "content": "[[say: served by the fallback]]"}]
    )
    assert reply.choices[0].message.content == "served by the fallback"
    with ant(live).messages.stream(
        model="sim-flaky",
        max_tokens=50,
        messages=[{"role": "user", "content": "[[say: again fine]]"}],
    ) as s:
        assert s.get_final_text() == "again fine"


def test_it_reports_an_upstream_429_as_503_model_unavailable_with_retry_after(live):
    """The upstream limiting *us* is not one of the caller's limits (their headers show room):
    the model is unavailable for now, and retry-after says when to try again."""
    factories.model("sim-busy", routes=[(live["openai"], "sim-gpt+status=429+retry_after=1")])
    with pytest.raises(openai.InternalServerError) as exc:
        oai(live).chat.completions.create(
            model="sim-busy", messages=[{"role": "user", "content": "hi"}]
        )
    assert (exc.value.status_code, exc.value.code) == (503, "model_unavailable")
    assert exc.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.InternalServerError) as aexc:
        ant(live).messages.create(
            model="sim-busy", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert aexc.value.status_code == 503


def test_it_never_shows_an_upstream_auth_failure_as_the_callers_bad_key(live):
    factories.model("sim-badcreds", routes=[(live["openai"], "sim-gpt+status=401")])
    with pytest.raises(openai.APIStatusError) as exc:
        oai(live).chat.completions.create(
            model="sim-badcreds", messages=[{"role": "user", "content": "hi"}]
        )
    assert (exc.value.status_code, exc.value.code) == (503, "model_unavailable")


@pytest.mark.parametrize("model", MODELS)
def test_it_turns_an_upstream_drop_mid_stream_into_an_error_event(live, model):
    upstream = live["openai"] if model == "sim-gpt" else live["anthropic"]
    factories.model(f"{model}-drop", routes=[(upstream, f"{model}+drop=3+tokens=20")])
    with pytest.raises(openai.APIError):
        for _ in oai(live).chat.completions.create(
            model=f"{model}-drop", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    with (
        pytest.raises(anthropic.APIStatusError),
        ant(live).messages.stream(
            model=f"{model}-drop", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as s,
    ):
        s.get_final_message()


@pytest.mark.parametrize("model", MODELS)
def test_it_cancels_the_upstream_when_the_client_hangs_up(live, gateway_server, model):
    upstream = live["openai"] if model == "sim-gpt" else live["anthropic"]
    factories.model(f"{model}-long", routes=[(upstream, f"{model}+tps=50+tokens=400")])

    async def tasks() -> int:
        return len(asyncio.all_tasks())

    baseline = gateway_server.call(tasks())
    sim_reset(live)
    with httpx.stream(
        "POST",
        f"{live['url']}/openai/v1/chat/completions",
        json={
            "model": f"{model}-long",
            "messages": [{"role": "user", "content": "go"}],
            "stream": True,
        },
        headers={"authorization": f"Bearer {live['secret']}"},
    ) as r:
        for i, _ in enumerate(r.iter_raw()):
            if i >= 3:
                break
    time.sleep(0.6)
    served = sim_stats(live)["output_tokens"]
    time.sleep(0.4)
    assert sim_stats(live)["output_tokens"] == served, (
        "the upstream kept generating after the hang-up"
    )
    assert served < 100
    deadline = time.monotonic() + 3
    while gateway_server.call(tasks()) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway_server.call(tasks()) <= baseline


def test_it_sends_request_ids_on_both_surfaces(live):
    r = oai(live).chat.completions.with_raw_response.create(
        model="sim-gpt", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.headers["x-request-id"].startswith("req_")
    a = ant(live).messages.with_raw_response.create(
        model="sim-gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert a.headers["request-id"] == a.headers["x-request-id"]


@pytest.mark.parametrize("forwards_beta", [True, False])
def test_it_forwards_anthropic_version_and_beta_to_an_anthropic_upstream(live, forwards_beta):
    """anthropic-version is the protocol's; anthropic-beta goes only to a provider that names it
    in forward_headers (the Anthropic preset does)."""
    provider = live["anthropic"]
    provider.forward_headers = ["x-sim-options", "anthropic-beta"] if forwards_beta else []
    provider.save()
    factories.model("sim-echo", routes=[(provider, "sim-claude+echo_headers=1")])
    raw = ant(live).messages.with_raw_response.create(
        model="sim-echo",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert raw.http_response.status_code == 200
    received = sim_stats(live)["last_headers"]
    assert received["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    if forwards_beta:
        assert received["anthropic-beta"] == "prompt-caching-2024-07-31"
    else:
        assert "anthropic-beta" not in received
    assert live["secret"] not in json.dumps(received)


def test_it_lists_models_in_each_surfaces_format(live):
    ids = [m.id for m in oai(live).models.list()]
    assert "sim-gpt" in ids and "sim-claude" in ids
    page = ant(live).models.list(limit=1)
    assert page.data[0].type == "model"
    assert page.has_more is True
    assert page.first_id == page.data[0].id


def test_it_counts_tokens_on_the_anthropic_surface(live):
    count = ant(live).messages.count_tokens(
        model="sim-gpt", messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert count.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_a_stream_ends_at_its_protocol_end_and_keeps_the_upstream_connection(live, model):
    # The upstream holds its body open for 1.5 s after its last event ([DONE] / message_stop).
    upstream = live["openai"] if model == "sim-gpt" else live["anthropic"]
    factories.model(f"{model}-linger", routes=[(upstream, f"{model}+linger=1500+tokens=5")])
    sim_reset(live)
    headers = {"authorization": f"Bearer {live['secret']}", "anthropic-version": "2023-06-01"}
    messages = [{"role": "user", "content": "hi"}]
    for path, last in (
        ("/openai/v1/chat/completions", b"data: [DONE]\n\n"),
        ("/anthropic/v1/messages", b'"type":"message_stop"}\n\n'),
    ):
        body = {"model": f"{model}-linger", "messages": messages, "max_tokens": 50, "stream": True}
        started = time.monotonic()
        with httpx.stream("POST", live["url"] + path, json=body, headers=headers) as r:
            received = b"".join(r.iter_raw())  # to the end of the caller's body
        elapsed = time.monotonic() - started
        assert r.status_code == 200 and received.endswith(last), received[-200:]
        assert elapsed < 1.0, f"{path}: the caller waited {elapsed:.2f} s for the upstream"
    # Once the upstream ends its bodies, the connections are back in the pool: the next requests
    # reuse them rather than open new ones.
    time.sleep(1.8)
    for _ in range(3):
        oai(live).chat.completions.create(model=model, messages=messages)
    assert sim_stats(live)["connections"] <= 2
