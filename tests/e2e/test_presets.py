"""Every provider preset against a recording of that provider's documented wire format
(tests/recordings/<preset>/): a loopback upstream replays the recorded answers, and the request
the gateway sent it (path, query, credentials, body fields) is compared with the documented one,
through the real gateway with the official SDKs, streamed and not. Then the operator's commands
(addprovider, importmodels, checkproviders) against the loopback upstream and the simulator."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
from django.core.management import call_command

from gateway import presets, providers, provisioning
from gateway.models import CatalogModel, Provider, Route
from tests import factories
from tests.conftest import ServerThread, free_port
from tests.upstream_replay import Replay, sigv4_signature_valid

pytestmark = pytest.mark.e2e

AWS_KEY = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ServerThread, Replay]]:
    app = Replay()
    server = ServerThread(app).start()
    yield server, app
    server.stop()


@pytest.fixture
def replay(upstream: tuple[ServerThread, Replay]) -> Replay:
    server, app = upstream
    app.requests.clear()
    app.override = None
    app.events = None
    app.url = server.url
    return app


def _provider(replay: Replay, key: str) -> Provider:
    preset = presets.PRESETS[key]
    replay.preset = key
    path = urlsplit(preset.base_url).path if "{" not in preset.base_url else ""
    provider = provisioning.add_provider(
        preset=key,
        base_url=replay.url + path,
        slug=f"up-{key.replace('.', '-')}",
        region="us-east-1",
    )
    provider.api_key = AWS_KEY if key == "bedrock" else f"sk-test-{key}"
    provider.save(update_fields=["api_key"])
    return provider


def _oai(live: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], max_retries=0
    )


def _ant(live: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic/", api_key=live["secret"], max_retries=0
    )


def _limit_field(preset: presets.Preset) -> str:
    if providers.wire_protocol(preset.protocol) != "openai" or preset.output_limit_field == "both":
        return "max_tokens"
    return str(preset.output_limit_field)


def _check_credentials(sent: dict[str, Any], key: str, expected: list[str] | None) -> None:
    headers = sent["headers"]
    if expected is None:
        assert "authorization" not in headers and "api-key" not in headers
        return
    name, template = expected
    if key == "bedrock":
        value = headers["authorization"]
        assert value.startswith(template)
        assert "/us-east-1/bedrock/aws4_request" in value
        signed = value.split("SignedHeaders=")[1].split(",")[0].split(";")
        assert {"host", "x-amz-date", "content-type"} <= set(signed)
        assert sigv4_signature_valid(sent, secret_key=AWS_KEY.split(":")[1])
        return
    assert headers[name] == template.format(key=f"sk-test-{key}")
    if name != "authorization":
        assert "authorization" not in headers  # Azure: the key only in api-key


def _check_body(sent: dict[str, Any], preset: presets.Preset, model: str, *, stream: bool) -> None:
    body = sent["body"]
    wire = providers.wire_protocol(preset.protocol)
    if preset.protocol == "bedrock":
        assert "model" not in body  # the model id is in the path
        assert body["inferenceConfig"] == {"maxTokens": 7}
        assert body["system"] == [{"text": "Be brief."}]
        assert body["messages"] == [{"role": "user", "content": [{"text": "Hi"}]}]
        return
    assert body["model"] == model
    if wire == "anthropic":
        assert body["max_tokens"] == 7
        assert body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
        return
    field = _limit_field(preset)
    assert body[field] == 7
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    if stream:
        assert body["stream"] is True
        if preset.reports_stream_usage:
            assert body["stream_options"]["include_usage"] is True


@pytest.mark.parametrize("key", sorted(presets.PRESETS))
def test_each_preset_speaks_its_providers_documented_wire_format(
    live: dict[str, Any], replay: Replay, key: str
) -> None:
    preset = presets.PRESETS[key]
    provider = _provider(replay, key)
    recording = replay.load(key, "chat.json")
    expected = recording["request"]
    upstream_model = recording["upstream_model"]
    factories.model(f"m-{key}", routes=[(provider, upstream_model)])
    client = _oai(live)
    limit = {_limit_field(preset): 7}

    done = client.chat.completions.create(model=f"m-{key}", messages=MESSAGES, **limit)

    assert done.choices[0].message.content == "Hello there."
    assert done.model == f"m-{key}"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (12, 3)
    sent = replay.requests[-1]
    assert (sent["method"], sent["path"], sent["query"]) == (
        expected["method"],
        expected["path"],
        expected["query"],
    )
    _check_credentials(sent, key, expected["auth"])
    _check_body(sent, preset, upstream_model, stream=False)

    chunks = list(
        client.chat.completions.create(
            model=f"m-{key}",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **limit,
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = [c.usage for c in chunks if c.usage]
    recorded = replay.load(key, "stream.json" if key == "bedrock" else "stream.txt")
    if key == "bedrock" or "usage" in recorded:
        assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(12, 3)]
    else:
        # This server reports no stream usage: the client still gets one usage chunk, counted
        # (here estimated: the recording has no tokenizer endpoint to ask).
        assert len(usage) == 1 and usage[0].completion_tokens > 0 and usage[0].prompt_tokens > 0
    stream_path = replay.load(key, "stream.json")["path"] if key == "bedrock" else expected["path"]
    # The stream's request (a tokenizer call may follow it).
    sent = [r for r in replay.requests if r["path"] == stream_path][-1]
    assert (sent["path"], sent["query"]) == (stream_path, expected["query"])
    _check_credentials(sent, key, expected["auth"])
    _check_body(sent, preset, upstream_model, stream=True)


@pytest.mark.parametrize("key", ["anthropic", "bedrock"])
def test_anthropic_shaped_presets_serve_the_anthropic_sdk_streamed(
    live: dict[str, Any], replay: Replay, key: str
) -> None:
    provider = _provider(replay, key)
    factories.model(
        f"m-{key}", routes=[(provider, replay.load(key, "chat.json")["upstream_model"])]
    )

    with _ant(live).messages.stream(
        model=f"m-{key}",
        max_tokens=7,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hi"}],
    ) as stream:
        final = stream.get_final_message()

    assert final.content[0].text == "Hello there."
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 3)
    assert final.stop_reason == "end_turn"


def test_bedrock_translates_tools_tool_results_and_images_both_ways(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "us.anthropic.claude-3-5-haiku-20241022-v1:0")])
    tools = [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather where this photo was taken?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Lyon"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": "rain", "is_error": False}
            ],
        },
    ]

    done = _ant(live).messages.create(
        model="m-bedrock", max_tokens=300, tools=tools, messages=messages, stop_sequences=["###"]
    )

    assert done.stop_reason == "tool_use"
    assert [b.type for b in done.content] == ["text", "tool_use"]
    assert done.content[1].name == "get_weather" and done.content[1].input == {"city": "Paris"}
    assert (done.usage.input_tokens, done.usage.cache_read_input_tokens) == (380, 100)
    body = replay.requests[-1]["body"]
    assert body["toolConfig"]["tools"][0]["toolSpec"] == {
        "name": "get_weather",
        "description": "Weather in a city",
        "inputSchema": {"json": tools[0]["input_schema"]},
    }
    assert body["inferenceConfig"] == {"maxTokens": 300, "stopSequences": ["###"]}
    assert body["additionalModelResponseFieldPaths"] == ["/stop_sequence"]
    first, second, third = body["messages"]
    assert first["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert second["content"] == [
        {"toolUse": {"toolUseId": "tu_1", "name": "get_weather", "input": {"city": "Lyon"}}}
    ]
    assert third["content"] == [
        {"toolResult": {"toolUseId": "tu_1", "content": [{"text": "rain"}]}}
    ]

    chunks = list(
        _oai(live).chat.completions.create(
            model="m-bedrock",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": tools[0]["input_schema"]},
                }
            ],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert (
        calls[0].function.name == "get_weather" and calls[0].id == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    )
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage] == [
        (380, 52)
    ]


def test_a_bedrock_key_that_is_not_access_key_and_secret_is_the_gateways_problem(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    Provider.objects.filter(pk=provider.pk).update(api_key="not-a-pair")
    factories.model("m-bedrock", routes=[(provider, "anthropic.claude-v2")])

    with pytest.raises(openai.APIStatusError) as caught:
        _oai(live).chat.completions.create(model="m-bedrock", messages=MESSAGES, max_tokens=7)

    assert (caught.value.status_code, caught.value.code) == (503, "model_unavailable")
    assert "credentials" in caught.value.message
    assert replay.requests == []


def test_a_bedrock_stream_exception_reaches_the_caller_as_the_surfaces_error_event(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "anthropic.claude-v2")])
    replay.events = [
        ["messageStart", {"role": "assistant"}],
        ["contentBlockDelta", {"delta": {"text": "Hel"}, "contentBlockIndex": 0}],
        ["throttlingException", {"message": "Too many tokens, please wait."}],
    ]

    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        _ant(live).messages.stream(
            model="m-bedrock", max_tokens=7, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass

    assert "Too many tokens" in str(caught.value)
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_a_bedrock_refusal_is_the_callers_error_with_bedrocks_message(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "anthropic.claude-v2")])

    with pytest.raises(openai.BadRequestError) as caught:
        _oai(live).chat.completions.create(
            model="m-bedrock",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                    ],
                }
            ],
        )

    assert "Bedrock does not fetch image URLs" in caught.value.message
    assert replay.requests == []


def test_bedrock_thinking_streams_as_anthropic_thinking_blocks(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "us.anthropic.claude-sonnet-4-20250514-v1:0")])
    replay.events = [
        ["messageStart", {"role": "assistant"}],
        [
            "contentBlockDelta",
            {"delta": {"reasoningContent": {"text": "2+2 "}}, "contentBlockIndex": 0},
        ],
        [
            "contentBlockDelta",
            {"delta": {"reasoningContent": {"text": "is 4."}}, "contentBlockIndex": 0},
        ],
        [
            "contentBlockDelta",
            {"delta": {"reasoningContent": {"signature": "EqQBCkYI"}}, "contentBlockIndex": 0},
        ],
        ["contentBlockStop", {"contentBlockIndex": 0}],
        ["contentBlockDelta", {"delta": {"text": "4"}, "contentBlockIndex": 1}],
        ["contentBlockStop", {"contentBlockIndex": 1}],
        ["messageStop", {"stopReason": "end_turn"}],
        ["metadata", {"usage": {"inputTokens": 40, "outputTokens": 30, "totalTokens": 70}}],
    ]

    with _ant(live).messages.stream(
        model="m-bedrock",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "2+2?"}],
    ) as stream:
        final = stream.get_final_message()

    assert [b.type for b in final.content] == ["thinking", "text"]
    assert (final.content[0].thinking, final.content[0].signature) == ("2+2 is 4.", "EqQBCkYI")
    assert final.content[1].text == "4"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 30)
    body = replay.requests[-1]["body"]
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    }


def test_bedrock_reports_which_stop_sequence_ended_the_text(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "anthropic.claude-3-haiku-20240307-v1:0")])
    replay.override = {
        "output": {"message": {"role": "assistant", "content": [{"text": "one, two, "}]}},
        "stopReason": "end_turn",
        "additionalModelResponseFields": {"stop_sequence": "three"},
        "usage": {"inputTokens": 9, "outputTokens": 5, "totalTokens": 14},
    }

    done = _ant(live).messages.create(
        model="m-bedrock",
        max_tokens=50,
        stop_sequences=["three"],
        messages=[{"role": "user", "content": "Count"}],
    )

    assert (done.stop_reason, done.stop_sequence) == ("stop_sequence", "three")
    assert replay.requests[-1]["body"]["additionalModelResponseFieldPaths"] == ["/stop_sequence"]


def test_the_responses_api_runs_on_a_bedrock_route(live: dict[str, Any], replay: Replay) -> None:
    provider = _provider(replay, "bedrock")
    factories.model("m-bedrock", routes=[(provider, "us.anthropic.claude-3-5-haiku-20241022-v1:0")])

    done = _oai(live).responses.create(model="m-bedrock", input="Hi", max_output_tokens=7)

    assert done.output_text == "Hello there."
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 3)
    assert replay.requests[-1]["body"]["inferenceConfig"]["maxTokens"] == 7


# --- the operator's commands --------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=io.StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_addprovider_prints_the_slug_of_a_provider_filled_from_the_preset(
    live: dict[str, Any],
) -> None:
    code, out = _run(
        "addprovider",
        "--preset",
        "llama-cpp-python",
        "--base-url",
        "http://127.0.0.1:8000/v1",
        "--api-key-env",
        "LLAMA_KEY",
    )

    assert (code, out.strip()) == (0, "llama-cpp-python")
    made = Provider.objects.get(slug="llama-cpp-python")
    assert (made.api_key_env, made.reports_stream_usage, made.tokenizer) == (
        "LLAMA_KEY",
        False,
        "llama-cpp-python",
    )
    assert made.tokenizer_url == "http://127.0.0.1:8000/extras/tokenize/count"
    assert made.request_id_header == ""  # it refuses ids that are not UUIDs


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("openai", ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]),
        ("anthropic", ["claude-3-5-haiku-20241022", "claude-sonnet-4-20250514"]),
        ("gemini", ["gemini-2.0-flash", "gemini-2.5-pro"]),
        ("ollama", ["llama3.2:1b", "qwen2.5:0.5b"]),
        ("bedrock", ["anthropic.claude-3-5-haiku-20241022-v1:0"]),
    ],
)
def test_importmodels_reads_the_upstreams_list_and_prices_from_a_table(
    live: dict[str, Any], replay: Replay, tmp_path: Any, key: str, expected: list[str]
) -> None:
    provider = _provider(replay, key)
    prices = tmp_path / "prices.csv"
    prices.write_text(f"model,input,output\n{expected[0]},2.50,10\n")

    code, out = _run("importmodels", "--provider", provider.slug, "--prices", str(prices))

    assert code == 0
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert [r[1] for r in rows] == expected
    assert [r[2] for r in rows] == ["priced"] + ["unpriced"] * (len(expected) - 1)
    priced = CatalogModel.objects.get(model_id=expected[0])
    assert (priced.input_price_micros, priced.output_price_micros) == (2_500_000, 10_000_000)
    assert Route.objects.filter(provider=provider).count() == len(expected)
    if key == "bedrock":
        listing = replay.requests[-1]
        assert listing["path"] == "/foundation-models"
        assert sigv4_signature_valid(listing, secret_key=AWS_KEY.split(":")[1])
    if key == "anthropic":
        assert replay.requests[-1]["query"] == {
            "limit": "1000",
            "after_id": "claude-sonnet-4-20250514",
        }


def test_an_imported_unpriced_model_is_refused_and_only_filters(
    live: dict[str, Any], replay: Replay
) -> None:
    provider = _provider(replay, "openai")

    code, out = _run("importmodels", "--provider", provider.slug, "--only", "gpt-4o*")

    assert code == 0
    assert [line.split("\t")[1] for line in out.strip().splitlines()] == ["gpt-4o", "gpt-4o-mini"]
    with pytest.raises(openai.APIStatusError) as caught:
        _oai(live).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert "no price set" in caught.value.message
    assert [r for r in replay.requests if r["method"] == "POST"] == []


def test_importmodels_says_when_the_upstream_cannot_list_its_models(
    live: dict[str, Any], replay: Replay, tmp_path: Any
) -> None:
    azure = _provider(replay, "azure")
    bad = tmp_path / "prices.json"
    bad.write_text('{"gpt-4o": {"input": "1e-3", "output": "2"}}')

    with pytest.raises(Exception, match="does not list its models"):
        call_command("importmodels", "--provider", azure.slug)
    with pytest.raises(Exception, match="not a dollar amount"):
        call_command("importmodels", "--provider", azure.slug, "--prices", str(bad))


def test_checkproviders_calls_each_provider_and_exits_1_when_one_fails(
    live: dict[str, Any], replay: Replay
) -> None:
    code, out = _run("checkproviders", "--json")

    assert code == 0
    checks = {c["provider"]: c for c in json.loads(out)}
    assert set(checks) == {"sim-openai", "sim-anthropic"}
    assert all(c["ok"] and c["status"] == 200 and c["latency_ms"] >= 0 for c in checks.values())

    down = provisioning.add_provider(preset="vllm", base_url=f"http://127.0.0.1:{free_port()}/v1")
    factories.model("m-down", routes=[(down, "some-model")])
    replayed = _provider(replay, "groq")
    factories.model("m-groq", routes=[(replayed, "llama-3.1-8b-instant")])

    code, out = _run("checkproviders")

    assert code == 1
    lines = {line.split("\t")[1]: line.split("\t") for line in out.strip().splitlines()}
    assert lines["vllm"][0] == "FAIL" and lines["sim-openai"][0] == "ok"
    assert lines["up-groq"][:3] == ["ok", "up-groq", "200"]
    ping = replay.requests[-1]
    assert ping["path"] == "/openai/v1/chat/completions"
    assert ping["body"]["max_completion_tokens"] == 1
    assert ping["headers"]["authorization"] == "Bearer sk-test-groq"


def test_importmodels_reads_the_simulators_list(live: dict[str, Any]) -> None:
    code, out = _run("importmodels", "--provider", "sim-openai", "--dry-run")

    assert code == 0
    assert "sim-gpt" in out.split()
    assert CatalogModel.objects.count() == 2  # a dry run changes nothing
