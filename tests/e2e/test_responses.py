"""The Responses API through the official OpenAI SDK, streamed and not, on an OpenAI-protocol and
an Anthropic-protocol model: what Codex (wire_api = "responses") needs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from gateway import metering
from gateway.models import UsageRecord

pytestmark = pytest.mark.e2e

MODELS = ["sim-gpt", "sim-claude"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501


def client(live: dict[str, Any], base: str = "/openai/v1/") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live['url']}{base}", api_key=live["secret"], max_retries=0)


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters))


@pytest.mark.parametrize("model", MODELS)
def test_it_answers_a_response_with_text_and_usage(live, model):
    done = client(live).responses.create(
        model=model, instructions="Be brief.", input="[[say: Hello from Responses.]]"
    )
    assert done.status == "completed"
    assert done.model == model
    assert done.output_text == "Hello from Responses."
    assert done.id.startswith("resp_")
    assert done.usage is not None and done.usage.output_tokens > 0
    (record,) = records(endpoint="responses")
    assert record.model == model and record.status == 200
    assert record.input_tokens == done.usage.input_tokens
    assert record.output_tokens == done.usage.output_tokens
    assert record.cost_micros > 0


@pytest.mark.parametrize("model", MODELS)
def test_it_streams_responses_events_the_sdk_accepts(live, model):
    stream = client(live).responses.create(
        model=model, input="[[say: One two three four.]]", stream=True
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.content_part.added" in kinds
    assert "response.output_text.done" in kinds
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "One two three four."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == text and final.usage is not None
    assert final.model == model
    (record,) = records(endpoint="responses")
    assert record.stream and record.status == 200
    assert record.output_tokens == final.usage.output_tokens


@pytest.mark.parametrize("model", MODELS)
def test_the_sdk_stream_helper_gets_a_final_response(live, model):
    with client(live, "/v1/").responses.stream(model=model, input="[[say: Helper works.]]") as s:
        for _ in s:
            pass
        final = s.get_final_response()
    assert final.output_text == "Helper works."


@pytest.mark.parametrize("model", MODELS)
def test_it_calls_function_tools_and_takes_their_output_back(live, model):
    api = client(live)
    first = api.responses.create(
        model=model, input="What is the get_weather in Paris?", tools=[WEATHER]
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert "city" in json.loads(call.arguments)
    second = api.responses.create(
        model=model,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "What is the get_weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21C"},
        ],
    )
    assert "Sunny, 21C" in second.output_text


@pytest.mark.parametrize("model", MODELS)
def test_it_streams_function_call_arguments(live, model):
    events = list(
        client(live).responses.create(
            model=model, input="Call get_weather for Oslo", tools=[WEATHER], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments)
    final = events[-1].response
    (item,) = [i for i in final.output if i.type == "function_call"]
    assert item.arguments == done.arguments


@pytest.mark.parametrize("model", MODELS)
def test_it_passes_images_in_the_input(live, model):
    done = client(live).responses.create(
        model=model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe this image."},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"},
                ],
            }
        ],
    )
    assert "I see 1 image" in done.output_text


def test_it_refuses_previous_response_id_as_stateless(live):
    with pytest.raises(openai.BadRequestError) as caught:
        client(live).responses.create(model="sim-gpt", input="Hi", previous_response_id="resp_123")
    assert "stateless" in caught.value.message
    (record,) = records(endpoint="responses")
    assert record.status == 400 and record.cost_micros == 0


CODEX_TOOLS: list[Any] = [
    WEATHER,
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Tools for sub-agents.",
        "tools": [
            {
                "type": "function",
                "name": "close_agent",
                "parameters": {
                    "type": "object",
                    "properties": {"target": {"type": "string"}},
                    "required": ["target"],
                },
            }
        ],
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files. This is a FREEFORM tool.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
    },
    {"type": "local_shell"},
    {"type": "web_search", "external_web_access": True},
    {"type": "image_generation"},
]
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"


def _call(live: dict[str, Any], model: str, prompt: str, *, stream: bool) -> tuple[Any, Any]:
    """One request offering Codex's kinds of tools; (the final response, the HTTP headers)."""
    api = client(live).responses.with_raw_response
    raw = api.create(model=model, input=prompt, tools=CODEX_TOOLS, stream=stream)
    if not stream:
        return raw.parse(), raw.headers
    events = list(raw.parse())
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    return events, raw.headers


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_it_serves_namespaced_custom_and_shell_tools_and_drops_hosted_ones(live, model, stream):
    prompts = {
        "function_call": '[[call: multi_agent_v1__close_agent {"target": "agent-7"}]]',
        "custom_tool_call": "[[call: apply_patch " + json.dumps({"input": PATCH}) + "]]",
        "local_shell_call": '[[call: local_shell {"command": ["ls", "-la"], "timeout_ms": 900}]]',
    }
    for kind, prompt in prompts.items():
        answer, headers = _call(live, model, prompt, stream=stream)
        assert headers["x-tokenfactory-dropped-tools"] == "web_search, image_generation"
        final = answer[-1].response if stream else answer
        (item,) = final.output
        assert item.type == kind
        if kind == "function_call":
            assert (item.namespace, item.name) == ("multi_agent_v1", "close_agent")
            assert json.loads(item.arguments) == {"target": "agent-7"}
        elif kind == "custom_tool_call":
            assert (item.name, item.input) == ("apply_patch", PATCH)
        else:
            assert item.action.command == ["ls", "-la"] and item.action.timeout_ms == 900
        if stream and kind == "custom_tool_call":
            (done,) = [e for e in answer if e.type == "response.custom_tool_call_input.done"]
            assert done.input == PATCH
        # The call and its output go back in the next turn; the model answers from the output.
        history = item.model_dump(exclude_none=True, exclude={"status"})
        output_kind = kind.replace("_call", "_call_output")
        if kind == "function_call":
            output_kind = "function_call_output"
        output: dict[str, Any] = {"type": output_kind, "output": f"done by {kind}"}
        output["id" if kind == "local_shell_call" else "call_id"] = item.call_id
        follow = client(live).responses.create(
            model=model,
            tools=CODEX_TOOLS,
            input=[{"role": "user", "content": prompt}, history, output],
        )
        assert f"done by {kind}" in follow.output_text
    assert {r.status for r in records(endpoint="responses")} == {200}


def test_it_answers_codex_shaped_requests_on_the_bare_v1_path(live):
    """What Codex sends: instructions, developer and user messages, store false, a stream."""
    body = {
        "model": "sim-claude",
        "instructions": "You are a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Sandbox: read-only."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "[[say: pong]]"}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": None,
        "store": False,
        "stream": True,
        "include": [],
        "prompt_cache_key": "abc",
    }
    with httpx.stream(
        "POST",
        f"{live['url']}/v1/responses",
        json=body,
        headers={"Authorization": f"Bearer {live['secret']}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    names = [line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event:")]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert '"delta":"pong"' in raw


@pytest.mark.parametrize("model", MODELS)
def test_it_counts_input_tokens_without_billing(live, model):
    api = client(live)
    request: dict[str, Any] = {
        "model": model,
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "What is the weather like in Paris today?"}],
        "tools": CODEX_TOOLS,
    }
    count = api.responses.input_tokens.count(**request)
    assert count.object == "response.input_tokens" and count.input_tokens > 0
    if model == "sim-claude":  # an Anthropic upstream counts exactly what it will be sent
        done = api.responses.create(**request)
        assert done.usage is not None and count.input_tokens == done.usage.input_tokens
    with pytest.raises(openai.BadRequestError):
        api.responses.input_tokens.count(model=model, input=[])
    assert records(endpoint="count_tokens") == []


def _signed_thinking(live: dict[str, Any]) -> int:
    count: int = httpx.get(f"{live['sim']}/_sim/stats").json()["signed_thinking"]
    return count


@pytest.mark.parametrize("stream", [False, True])
def test_encrypted_reasoning_carries_signed_thinking_to_the_next_turn(live, stream):
    """include reasoning.encrypted_content on an Anthropic-protocol model: the reasoning item's
    blob, sent back, reaches the upstream as the thinking block it signed (the simulator checks
    signatures as Anthropic does); a blob we did not seal is ignored."""
    api = client(live)
    first_turn: dict[str, Any] = {
        "model": "sim-claude",
        "input": "[[say: First answer.]]",
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
    }
    if stream:
        events = list(api.responses.create(**first_turn, stream=True))
        first = events[-1].response
    else:
        first = api.responses.create(**first_turn)
    reasoning, message = first.output
    assert reasoning.type == "reasoning" and reasoning.summary
    blob = reasoning.encrypted_content
    assert blob and reasoning.summary[0].text not in blob
    history = [reasoning.model_dump(exclude_none=True), message.model_dump(exclude_none=True)]
    before = _signed_thinking(live)
    second = api.responses.create(
        **{
            **first_turn,
            "input": [
                {"role": "user", "content": "[[say: First answer.]]"},
                *history,
                {"role": "user", "content": "[[say: Second answer.]]"},
            ],
        },
    )
    assert second.output_text == "Second answer."
    assert _signed_thinking(live) == before + 1
    forged = {**history[0], "encrypted_content": blob[:-8] + "AAAAAAAA"}
    third = api.responses.create(
        **{
            **first_turn,
            "input": [
                {"role": "user", "content": "hi"},
                forged,
                history[1],
                {"role": "user", "content": "[[say: Third.]]"},
            ],
        },
    )
    assert third.output_text == "Third." and _signed_thinking(live) == before + 1
    plain = api.responses.create(**{**first_turn, "include": []})
    assert plain.output[0].type == "reasoning" and plain.output[0].encrypted_content is None
