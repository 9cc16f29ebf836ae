"""The upstream simulator over a socket: both official SDKs and raw HTTP pointed straight at it."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.simulator import engine
from gateway.simulator.app import build_app
from tests.conftest import ServerThread

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501
SAY = [{"role": "user", "content": "[[say: Hello, world! All good.]]"}]


def rid() -> str:
    return f"req_{uuid.uuid4().hex}"


def oai(sim: ServerThread) -> Any:
    """An OpenAI client on the simulator (typed Any: the tests pass plain dicts as params)."""
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="anything", max_retries=0)


def ant(sim: ServerThread) -> Any:
    return anthropic.Anthropic(base_url=sim.url, api_key="anything", max_retries=0)


def served(sim: ServerThread, request_id: str) -> dict[str, int]:
    return httpx.get(f"{sim.url}/_sim/stats").json()["by_request"][request_id]


def sse_events(body: str) -> list[tuple[str | None, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                raw = line.removeprefix("data: ")
                data = raw if raw == "[DONE]" else orjson.loads(raw)
        events.append((name, data))
    return events


# --- the tokenizer and the reply rules ----------------------------------------------------------


def test_it_counts_words_and_punctuation_each_with_its_leading_whitespace():
    pieces = engine.tokenize("Hello, world! All good.")
    assert pieces == ["Hello", ",", " world", "!", " All", " good", "."]
    assert "".join(engine.tokenize("  spaced  out\ttext. ")) == "  spaced  out\ttext. "


def test_it_writes_pseudo_text_of_the_exact_length_asked_for():
    for count in (1, 2, 7, 24, 100):
        tokens = engine.pseudo_tokens(b"seed", count)
        assert engine.count_tokens("".join(tokens)) == count
    assert engine.pseudo_tokens(b"seed", 24) == engine.pseudo_tokens(b"seed", 24)
    assert engine.pseudo_tokens(b"seed", 24) != engine.pseudo_tokens(b"other", 24)


def test_it_seeds_a_reply_by_what_the_conversation_means_not_how_it_is_spelled():
    said = [{"role": "user", "content": "Tell me about the sea"}]
    blocks = [{"role": "user", "content": [{"type": "text", "text": "Tell me about the sea"}]}]
    marked = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Tell me about the sea", "cache_control": {"type": "x"}}
            ],
        }
    ]
    seed = engine.conversation_seed(messages=said, system="Be brief.")
    assert seed == engine.conversation_seed(
        messages=blocks, system=[{"type": "text", "text": "Be brief."}]
    )
    assert seed == engine.conversation_seed(messages=marked, system="Be brief.")
    assert seed == engine.conversation_seed(
        messages=[{"role": "system", "content": "Be brief."}, *said]
    )
    assert seed == engine.conversation_seed(
        messages=[{"role": "developer", "content": "Be brief."}, *said]
    )
    assert seed != engine.conversation_seed(messages=said)
    assert seed != engine.conversation_seed(
        messages=[{"role": "user", "content": "Tell me about the lake"}], system="Be brief."
    )


# --- OpenAI chat completions --------------------------------------------------------------------


def test_it_answers_the_openai_sdk_with_the_said_text_and_matching_usage(simulator):
    request_id = rid()
    done = oai(simulator).chat.completions.create(
        model="sim-gpt", messages=SAY, extra_headers={"x-request-id": request_id}
    )
    assert done.choices[0].message.content == "Hello, world! All good."
    assert done.choices[0].finish_reason == "stop"
    assert done.model == "sim-gpt"
    assert done.usage.completion_tokens == 7
    assert served(simulator, request_id) == {
        "input_tokens": done.usage.prompt_tokens,
        "output_tokens": 7,
    }


def test_it_streams_one_chunk_per_token_and_usage_only_when_asked(simulator):
    request_id = rid()
    chunks = list(
        oai(simulator).chat.completions.create(
            model="sim-gpt",
            messages=SAY,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": request_id},
        )
    )
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert [c for c in contents if c] == ["Hello", ",", " world", "!", " All", " good", "."]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 7
    assert len({c.id for c in chunks}) == 1
    assert served(simulator, request_id)["input_tokens"] == chunks[-1].usage.prompt_tokens

    plain = list(oai(simulator).chat.completions.create(model="sim-gpt", messages=SAY, stream=True))
    assert all(c.choices and c.usage is None for c in plain)


def test_it_answers_the_same_prompt_the_same_way_and_stops_at_max_tokens(simulator):
    client = oai(simulator)
    messages = [{"role": "user", "content": "Tell me something."}]
    first = client.chat.completions.create(model="sim-gpt", messages=messages)
    again = client.chat.completions.create(model="sim-gpt", messages=messages)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.completion_tokens == engine.DEFAULT_REPLY_TOKENS
    capped = client.chat.completions.create(
        model="sim-gpt", messages=messages, max_completion_tokens=5
    )
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage.completion_tokens == 5
    assert first.choices[0].message.content.startswith(capped.choices[0].message.content)


def test_it_calls_a_tool_the_prompt_names_and_reads_back_its_result(simulator):
    client = oai(simulator)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Use get_weather for London please."}
    ]
    with client.chat.completions.stream(
        model="sim-gpt", messages=messages, tools=[WEATHER_OPENAI]
    ) as stream:
        streamed = stream.get_final_completion()
    done = client.chat.completions.create(
        model="sim-gpt", messages=messages, tools=[WEATHER_OPENAI]
    )
    for completion in (streamed, done):
        assert completion.choices[0].finish_reason == "tool_calls"
        call = completion.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert orjson.loads(call.function.arguments) == {"city": "London"}
    messages.append(done.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    final = client.chat.completions.create(
        model="sim-gpt", messages=messages, tools=[WEATHER_OPENAI]
    )
    assert final.choices[0].message.content == "The tool returned: Sunny, 21 C."


def test_a_call_directive_makes_it_call_that_tool_with_those_arguments(simulator):
    # The way a test drives an agent (Claude Code, Codex) through a real task: the prompt says
    # which offered tool to call and with what; an unknown tool or bad JSON is ignored.
    prompt = (
        'Do it. [[call: nope {"x": 1}]] [[call: get_weather {"city": "Paris", "days": [1, 2]}]]'
    )
    done = oai(simulator).chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": prompt}], tools=[WEATHER_OPENAI]
    )
    call = done.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris", "days": [1, 2]}
    message = ant(simulator).messages.create(
        model="sim-claude",
        max_tokens=300,
        messages=[{"role": "user", "content": prompt}],
        tools=[WEATHER_ANTHROPIC],
    )
    used = [block for block in message.content if block.type == "tool_use"]
    assert used[0].name == "get_weather"
    assert used[0].input == {"city": "Paris", "days": [1, 2]}


def test_it_sees_images_and_reasons_when_asked(simulator):
    client = oai(simulator)
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is in these?"},
    ]
    seen = client.chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": parts}]
    )
    assert seen.choices[0].message.content.startswith("I see 2 images. ")

    chunks = list(
        client.chat.completions.create(
            model="sim-R1",
            messages=[{"role": "user", "content": "Think first."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    reasoning = [
        getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices
    ]
    assert len([r for r in reasoning if r]) == engine.REASONING_TOKENS
    usage = chunks[-1].usage
    assert usage.completion_tokens_details.reasoning_tokens == engine.REASONING_TOKENS
    assert usage.completion_tokens == engine.REASONING_TOKENS + engine.DEFAULT_REPLY_TOKENS


# --- Anthropic messages -------------------------------------------------------------------------


def test_it_answers_the_anthropic_sdk_whole_and_streamed(simulator):
    client = ant(simulator)
    request_id = rid()
    message = client.messages.create(
        model="sim-claude",
        max_tokens=200,
        system="You are terse.",
        messages=SAY,
        extra_headers={"x-request-id": request_id},
    )
    assert message.content[0].text == "Hello, world! All good."
    assert message.stop_reason == "end_turn"
    assert message.model == "sim-claude"
    assert message.usage.output_tokens == 7
    assert served(simulator, request_id) == {
        "input_tokens": message.usage.input_tokens,
        "output_tokens": 7,
    }
    counted = client.messages.count_tokens(
        model="sim-claude", system="You are terse.", messages=SAY
    )
    assert counted.input_tokens == message.usage.input_tokens

    with client.messages.stream(model="sim-claude", max_tokens=200, messages=SAY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hello", ",", " world", "!", " All", " good", "."]
    assert final.usage.output_tokens == 7


def test_it_streams_thinking_then_text_in_the_anthropic_event_order(simulator):
    r = httpx.post(
        f"{simulator.url}/v1/messages",
        json={
            "model": "sim-claude",
            "max_tokens": 100,
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "[[say: Fine.]]"}],
        },
    )
    names = [name for name, _ in sse_events(r.text)]
    thinking = ["content_block_delta"] * (engine.REASONING_TOKENS + 1)  # + the signature
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *thinking,
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    events = dict(sse_events(r.text))
    assert events["message_delta"]["usage"]["output_tokens"] == engine.REASONING_TOKENS + 2
    assert events["message_delta"]["delta"]["stop_reason"] == "end_turn"


def test_it_uses_a_tool_and_reads_the_result_on_the_anthropic_side(simulator):
    client = ant(simulator)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Use get_weather for London please."}
    ]
    with client.messages.stream(
        model="sim-claude", max_tokens=300, messages=messages, tools=[WEATHER_ANTHROPIC]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert (use.name, use.input) == ("get_weather", {"city": "London"})
    messages.append({"role": "assistant", "content": [b.model_dump() for b in first.content]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}],
        }
    )
    final = client.messages.create(
        model="sim-claude", max_tokens=300, messages=messages, tools=[WEATHER_ANTHROPIC]
    )
    assert final.content[0].text == "The tool returned: Sunny, 21 C."

    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "text", "text": "What is this?"},
    ]
    seen = client.messages.create(
        model="sim-claude", max_tokens=100, messages=[{"role": "user", "content": blocks}]
    )
    assert seen.content[0].text.startswith("I see 1 image. ")


# --- knobs and faults ---------------------------------------------------------------------------


def test_it_fails_with_the_asked_status_in_each_protocols_envelope(simulator):
    with pytest.raises(openai.RateLimitError) as exc:
        oai(simulator).chat.completions.create(
            model="sim-gpt+status=429+retry_after=3", messages=SAY
        )
    assert exc.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.InternalServerError):
        oai(simulator).chat.completions.create(
            model="sim-gpt", messages=SAY, extra_headers={"x-sim-options": "status=500"}
        )
    with pytest.raises(anthropic.APIStatusError) as aexc:
        ant(simulator).messages.create(model="sim-claude+status=529", max_tokens=10, messages=SAY)
    assert aexc.value.status_code == 529
    assert aexc.value.type == "overloaded_error"


def test_it_fails_every_nth_request_to_a_model(simulator):
    model = f"sim-gpt-{uuid.uuid4().hex[:6]}+fail_every=3"
    outcomes = []
    for _ in range(6):
        r = httpx.post(
            f"{simulator.url}/v1/chat/completions", json={"model": model, "messages": SAY}
        )
        outcomes.append(r.status_code)
    assert outcomes == [200, 200, 500, 200, 200, 500]


def test_it_sends_exactly_the_tokens_knob_and_leaves_usage_out_when_told(simulator):
    done = oai(simulator).chat.completions.create(
        model="sim-gpt+tokens=11+usage=none", messages=[{"role": "user", "content": "hi"}]
    )
    assert done.usage is None
    assert engine.count_tokens(done.choices[0].message.content) == 11
    message = ant(simulator).messages.create(
        model="sim-claude+tokens=40", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.usage.output_tokens == 40


def test_it_drops_a_stream_after_n_tokens_with_no_terminator(simulator):
    request_id = rid()
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            f"{simulator.url}/v1/chat/completions",
            json={"model": "sim-gpt+drop=3+tokens=20", "messages": SAY, "stream": True},
            headers={"x-request-id": request_id},
        ) as r,
    ):
        for chunk in r.iter_raw():
            received += chunk
    assert b"[DONE]" not in received and b'finish_reason":"stop' not in received
    assert served(simulator, request_id)["output_tokens"] == 3


def test_it_stops_generating_when_the_client_hangs_up(simulator):
    request_id = rid()
    with httpx.stream(
        "POST",
        f"{simulator.url}/v1/messages",
        json={
            "model": "sim-claude+tps=50+tokens=400",
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
        },
        headers={"x-request-id": request_id},
    ) as r:
        for i, _ in enumerate(r.iter_raw()):
            if i >= 5:
                break
    time.sleep(0.3)
    after_hang_up = served(simulator, request_id)["output_tokens"]
    time.sleep(0.4)
    assert served(simulator, request_id)["output_tokens"] == after_hang_up < 50


def test_it_paces_streams_and_delays_first_bytes(simulator):
    started = time.monotonic()
    arrivals = []
    for chunk in oai(simulator).chat.completions.create(
        model="sim-gpt+tps=20+tokens=10+ttft=200",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    assert arrivals[0] >= 0.2
    assert 0.4 <= arrivals[-1] - arrivals[0] < 2

    started = time.monotonic()
    oai(simulator).chat.completions.create(model="sim-gpt+latency=150+slow=100", messages=SAY)
    assert time.monotonic() - started >= 0.25


def test_it_echoes_the_headers_it_received(simulator):
    raw = ant(simulator).messages.with_raw_response.create(
        model="sim-claude+echo_headers=1",
        max_tokens=10,
        messages=SAY,
        extra_headers={
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "prompt-caching-2024-07-31",
        },
    )
    received = orjson.loads(raw.headers["x-sim-received-headers"])
    assert received["anthropic-version"] == "2023-06-01"
    assert received["anthropic-beta"] == "prompt-caching-2024-07-31"
    # Credentials are echoed too, so a test can tell when a gateway leaks its caller's key.
    assert "anything" in raw.headers["x-sim-received-headers"]
    assert raw.parse().model == "sim-claude"


def test_it_refuses_bad_requests_with_400_in_each_envelope(simulator):
    r = httpx.post(f"{simulator.url}/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{simulator.url}/v1/messages", content=b"[1, 2")
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["request_id"] == r.headers["request-id"]
    r = httpx.post(f"{simulator.url}/v1/chat/completions", json={"model": 42, "messages": []})
    assert r.json()["error"]["param"] == "model"
    r = httpx.post(
        f"{simulator.url}/v1/chat/completions", json={"model": "sim-gpt+nope=1", "messages": SAY}
    )
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = httpx.post(f"{simulator.url}/v1/messages", json={"model": "sim-claude", "messages": SAY})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


def test_it_refuses_other_keys_when_one_is_configured():
    sim = ServerThread(build_app(api_key="sim-secret")).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            oai(sim).chat.completions.create(model="sim-gpt", messages=SAY)
        with pytest.raises(anthropic.AuthenticationError) as exc:
            ant(sim).messages.create(model="sim-claude", max_tokens=5, messages=SAY)
        assert exc.value.type == "authentication_error"
        client: Any = anthropic.Anthropic(base_url=sim.url, api_key="sim-secret", max_retries=0)
        assert client.messages.create(model="sim-claude", max_tokens=50, messages=SAY).content
    finally:
        sim.stop()


def test_it_counts_everything_it_served_until_reset():
    sim = ServerThread(build_app()).start()
    try:
        oai(sim).chat.completions.create(model="sim-gpt", messages=SAY)
        ant(sim).messages.create(model="sim-claude", max_tokens=50, messages=SAY)
        stats = httpx.get(f"{sim.url}/_sim/stats").json()
        assert stats["requests"] == 2
        assert stats["output_tokens"] == 14
        assert set(stats["by_model"]) == {"sim-gpt", "sim-claude"}
        httpx.post(f"{sim.url}/_sim/reset")
        stats = httpx.get(f"{sim.url}/_sim/stats").json()
        assert (stats["requests"], stats["input_tokens"], stats["by_model"]) == (0, 0, {})
    finally:
        sim.stop()


# --- embeddings, audio, images, models ----------------------------------------------------------


def test_it_embeds_text_as_deterministic_unit_vectors(simulator):
    client = oai(simulator)
    small = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"])
    assert [len(d.embedding) for d in small.data] == [1536, 1536]
    assert small.usage.prompt_tokens == 4
    assert abs(sum(v * v for v in small.data[0].embedding) - 1) < 1e-4
    again = client.embeddings.create(model="text-embedding-3-small", input="a cat", dimensions=64)
    assert len(again.data[0].embedding) == 64
    raw = httpx.post(
        f"{simulator.url}/v1/embeddings",
        json={"model": "text-embedding-3-large", "input": "a cat", "encoding_format": "float"},
    ).json()
    assert len(raw["data"][0]["embedding"]) == 3072


def test_it_speaks_transcribes_and_draws(simulator):
    client = oai(simulator)
    short = client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi", response_format="wav"
    ).content
    long = client.audio.speech.create(
        model="tts-1", voice="alloy", input="hi " * 20, response_format="wav"
    ).content
    assert short[:4] == b"RIFF" and short[8:12] == b"WAVE"
    assert struct.unpack("<I", short[4:8])[0] == len(short) - 8
    assert len(long) > len(short)
    assert client.audio.speech.create(model="tts-1", voice="alloy", input="hi").content[:2] == (
        b"\xff\xfb"
    )

    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", long))
    assert (
        text.text
        and text.text
        == client.audio.transcriptions.create(model="whisper-1", file=("b.wav", long)).text
    )
    plain = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", long), response_format="text"
    )
    assert plain == text.text
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", long), response_format="verbose_json"
    )
    assert verbose.duration > 0 and verbose.segments

    image = client.images.generate(model="sim-image", prompt="a cat", response_format="b64_json")
    assert base64.b64decode(image.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_lists_models_in_each_protocols_format(simulator):
    assert "sim-gpt" in [m.id for m in oai(simulator).models.list()]
    page = ant(simulator).models.list()
    assert page.data[0].type == "model"


async def test_it_completes_the_asgi_lifespan():
    app = build_app()
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app({"type": "lifespan"}, receive, send), 2)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_simulator_imports_nothing_of_the_project_outside_itself():
    # In a fresh interpreter: what serving the simulator loads, apart from the package it sits in.
    code = (
        "import sys, gateway.simulator.server, gateway.simulator.app\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [
        name
        for name in loaded
        if name.split(".")[0] in ("gateway", "tokenfactory", "accounts", "billing", "django")
        and name != "gateway"
        and not name.startswith("gateway.simulator")
    ]
    assert ours == []
