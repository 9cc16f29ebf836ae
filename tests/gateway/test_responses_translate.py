"""Responses API <-> chat completions, as pure functions: requests, whole responses, and streams
checked against the openai SDK's own event types."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openai.types.responses import (
    Response,
    ResponseCustomToolCall,
    ResponseFunctionToolCall,
    ResponseStreamEvent,
)
from openai.types.responses.response_output_item import LocalShellCall
from pydantic import TypeAdapter

from gateway.translate import requests, responses_api, responses_tools
from gateway.translate.errors import TranslationError
from gateway.translate.sealed import Sealer

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
NO_TOOLS = responses_tools.ToolMap()


def test_it_turns_a_string_input_and_instructions_into_messages():
    chat, _ = responses_api.to_chat(
        {"model": "m", "instructions": "Be brief.", "input": "Hi", "max_output_tokens": 50}
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert chat["max_completion_tokens"] == 50
    assert "stream" not in chat


def test_it_translates_items_tools_and_options():
    chat, _ = responses_api.to_chat(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "one"},
                {"type": "function_call_output", "call_id": "call_2", "output": "two"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "reasoning": {"effort": "high"},
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}
            },
            "stream": True,
            "store": False,
        }
    )
    messages = chat["messages"]
    assert messages[0] == {"role": "system", "content": "Rules."}
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/y.png", "detail": "low"},
    }
    assert messages[2]["role"] == "assistant" and messages[2]["content"] == "Calling."
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["call_1", "call_2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": "one"}
    assert chat["tools"][0]["function"]["name"] == "f"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"]["json_schema"]["name"] == "out"
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "body",
    [
        {"input": "Hi", "previous_response_id": "resp_1"},
        {"input": []},
        {"input": [{"type": "item_reference", "id": "x"}]},
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
    ],
)
def test_it_refuses_what_chat_completions_cannot_express(body):
    with pytest.raises(TranslationError):
        responses_api.to_chat({"model": "m", **body})


def test_it_turns_a_chat_completion_into_a_response_the_sdk_parses():
    completion = {
        "id": "chatcmpl-1",
        "created": 1_700_000_000,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "reasoning_content": "thinking",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    out = responses_api.to_response(completion, {"input": "x"}, model="m", tools=NO_TOOLS)
    parsed = Response.model_validate(out)
    assert parsed.status == "completed"
    assert parsed.output_text == "Let me check."
    assert [i.type for i in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.usage is not None and parsed.usage.total_tokens == 15
    assert parsed.usage.output_tokens_details.reasoning_tokens == 2


def test_it_marks_a_length_cut_response_incomplete():
    completion = {"choices": [{"finish_reason": "length", "message": {"content": "abc"}}]}
    out = responses_api.to_response(completion, {}, model="m", tools=NO_TOOLS)
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _validate(events: list[responses_api.Event]) -> list[Any]:
    parsed = []
    for kind, payload in events:
        event = EVENTS.validate_python(payload)
        assert event.type == kind
        parsed.append(event)
    return parsed


def test_it_streams_text_reasoning_and_tool_calls_as_valid_sdk_events():
    stream = responses_api.ChatToResponses({"input": "x"}, model="m", tools=NO_TOOLS)
    events = stream.start()
    events += stream.feed(_chunk({"role": "assistant", "reasoning_content": "Hmm"}))
    events += stream.feed(_chunk({"content": "Hel"}))
    events += stream.feed(_chunk({"content": "lo"}))
    events += stream.feed(
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}
                ]
            }
        )
    )
    events += stream.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    events += stream.feed(_chunk({}, "tool_calls"))
    events += stream.feed({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    events += stream.done()
    parsed = _validate(events)
    kinds = [e.type for e in parsed]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    final = parsed[-1].response
    assert [i.type for i in final.output] == ["reasoning", "message", "function_call"]
    assert final.output_text == "Hello"
    assert final.output[2].arguments == '{"a":1}'
    assert final.usage.total_tokens == 7
    added = [e.output_index for e in parsed if e.type == "response.output_item.added"]
    finished = [e.output_index for e in parsed if e.type == "response.output_item.done"]
    assert added == finished == [0, 1, 2]


def test_it_ends_a_broken_stream_with_response_failed():
    stream = responses_api.ChatToResponses({}, model="m", tools=NO_TOOLS)
    events = stream.start() + stream.feed(_chunk({"content": "partial"}))
    events += stream.fail("upstream_error", "The upstream broke off.")
    parsed = _validate(events)
    assert parsed[-1].type == "response.failed"
    assert parsed[-1].response.error.message == "The upstream broke off."
    assert stream.done() == []


def test_the_sdk_stream_state_accepts_the_events():
    from openai import omit
    from openai.lib.streaming.responses._responses import ResponseStreamState

    stream = responses_api.ChatToResponses({}, model="m", tools=NO_TOOLS)
    events = (
        stream.start() + stream.feed(_chunk({"content": "ok"})) + stream.feed(_chunk({}, "stop"))
    )
    events += stream.done()
    state: Any = ResponseStreamState(input_tools=omit, text_format=omit)
    for _, payload in events:
        state.handle_event(EVENTS.validate_python(payload))
    assert state._completed_response.output_text == "ok"


CODEX_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [
            {"type": "function", "name": "close_agent", "parameters": {"type": "object"}},
            {"type": "custom", "name": "notes", "description": "Free text."},
        ],
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
    },
    {"type": "local_shell"},
    {"type": "web_search", "external_web_access": True},
    {"type": "image_generation"},
    {"type": "function", "name": "tool.with.dots", "parameters": {"type": "object"}},
]


def test_it_flattens_namespaces_and_translates_custom_and_shell_tools_to_functions():
    chat, tools = responses_api.to_chat({"model": "m", "input": "x", "tools": CODEX_TOOLS})
    functions = {t["function"]["name"]: t["function"] for t in chat["tools"]}
    assert list(functions)[:5] == [
        "exec_command",
        "multi_agent_v1__close_agent",
        "multi_agent_v1__notes",
        "apply_patch",
        "local_shell",
    ]
    dotted = list(functions)[5]
    assert dotted.startswith("tool_with_dots_") and dotted != "tool_with_dots"
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in functions)
    assert functions["multi_agent_v1__close_agent"]["description"] == "Sub-agents."
    patch = functions["apply_patch"]
    assert patch["parameters"]["required"] == ["input"]
    assert "start: /.+/" in patch["description"]
    assert functions["local_shell"]["parameters"]["properties"]["command"]["type"] == "array"
    assert tools.dropped == ["web_search", "image_generation"]
    long = responses_tools.upstream_name("x" * 60, "namespace")
    assert len(long) <= 64 and long == responses_tools.upstream_name("x" * 60, "namespace")


def test_it_sends_earlier_namespaced_custom_and_shell_calls_under_upstream_names():
    chat, _ = responses_api.to_chat(
        {
            "model": "m",
            "tools": CODEX_TOOLS,
            "input": [
                {"role": "user", "content": "go"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "namespace": "multi_agent_v1",
                    "name": "close_agent",
                    "arguments": '{"target":"a"}',
                },
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "P"},
                {
                    "type": "local_shell_call",
                    "id": "ls_1",
                    "call_id": "c3",
                    "status": "completed",
                    "action": {"type": "exec", "command": ["ls"], "env": {}},
                },
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {"type": "function_call_output", "call_id": "c1", "output": "closed"},
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "patched"},
                {"type": "local_shell_call_output", "id": "c3", "output": "a.txt"},
            ],
        }
    )
    calls = chat["messages"][1]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == [
        "multi_agent_v1__close_agent",
        "apply_patch",
        "local_shell",
    ]
    assert json.loads(calls[1]["function"]["arguments"]) == {"input": "P"}
    assert json.loads(calls[2]["function"]["arguments"]) == {"command": ["ls"], "env": {}}
    assert [(m["tool_call_id"], m["content"]) for m in chat["messages"][2:]] == [
        ("c1", "closed"),
        ("c2", "patched"),
        ("c3", "a.txt"),
    ]


def _tool_call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": call_id, "function": {"name": name, "arguments": arguments}}


def test_it_maps_upstream_calls_back_to_the_items_the_client_offered():
    _, tools = responses_api.to_chat({"model": "m", "input": "x", "tools": CODEX_TOOLS})
    calls = [
        _tool_call(0, "c1", "multi_agent_v1__close_agent", '{"target":"a"}'),
        _tool_call(1, "c2", "apply_patch", '{"input":"*** Begin Patch\\n"}'),
        _tool_call(2, "c3", "local_shell", '{"command":["ls","-a"],"timeout_ms":5}'),
    ]
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "tool_calls": [{k: v for k, v in c.items() if k != "index"} for c in calls]
                },
            }
        ]
    }
    whole = Response.model_validate(
        responses_api.to_response(completion, {}, model="m", tools=tools)
    ).output
    stream = responses_api.ChatToResponses({}, model="m", tools=tools)
    events = stream.start()
    for call in calls:
        events += stream.feed(_chunk({"tool_calls": [call]}))
    events += stream.feed(_chunk({}, "tool_calls")) + stream.done()
    parsed = _validate(events)
    streamed = parsed[-1].response.output
    for output in (whole, streamed):
        function, custom, shell = output
        assert isinstance(function, ResponseFunctionToolCall)
        assert isinstance(custom, ResponseCustomToolCall)
        assert isinstance(shell, LocalShellCall)
        assert function.namespace == "multi_agent_v1"
        assert function.name == "close_agent" and function.arguments == '{"target":"a"}'
        assert custom.name == "apply_patch"
        assert custom.input == "*** Begin Patch\n" and custom.call_id == "c2"
        assert shell.call_id == "c3"
        assert shell.action.command == ["ls", "-a"] and shell.action.timeout_ms == 5
    kinds = [e.type for e in parsed]
    assert kinds.count("response.function_call_arguments.delta") == 1
    (delta,) = [e for e in parsed if e.type == "response.custom_tool_call_input.delta"]
    (done,) = [e for e in parsed if e.type == "response.custom_tool_call_input.done"]
    assert delta.delta == done.input == "*** Begin Patch\n" and done.output_index == 1
    added = [e.item.type for e in parsed if e.type == "response.output_item.added"]
    assert added == ["function_call", "custom_tool_call", "local_shell_call"]


SEALER = Sealer(secret="test-secret", account="7")
SIGNED = [
    {"type": "thinking", "thinking": "Let me think.", "signature": "c2ln"},
    {"type": "redacted_thinking", "data": "opaque"},
]


def test_a_sealed_blob_opens_only_for_the_same_secret_and_account():
    blob = SEALER.seal(SIGNED)
    assert blob.startswith("tf1.") and "Let me think" not in blob
    assert SEALER.open(blob) == SIGNED
    assert Sealer(secret="test-secret", account="8").open(blob) is None
    assert Sealer(secret="other", account="7").open(blob) is None
    tampered = blob[:-6] + ("A" if blob[-6] != "A" else "B") + blob[-5:]
    assert SEALER.open(tampered) is None
    assert SEALER.open("gAAAAAB-openai-blob") is None and SEALER.open(None) is None


def _thinking_completion() -> dict[str, Any]:
    message = {
        "content": "Done.",
        "reasoning_content": "Let me think.",
        "thinking_blocks": [SIGNED[0]],
    }
    return {"choices": [{"finish_reason": "stop", "message": message}]}


def test_it_seals_signed_thinking_only_when_the_request_includes_it():
    included = {"include": ["reasoning.encrypted_content"]}
    out = responses_api.to_response(
        _thinking_completion(), included, model="m", tools=NO_TOOLS, sealer=SEALER
    )
    reasoning = Response.model_validate(out).output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me think."
    assert SEALER.open(reasoning.encrypted_content) == [SIGNED[0]]
    plain = responses_api.to_response(
        _thinking_completion(), {}, model="m", tools=NO_TOOLS, sealer=SEALER
    )
    assert "encrypted_content" not in plain["output"][0]


def test_it_seals_streamed_thinking_with_the_signature_that_ends_it():
    stream = responses_api.ChatToResponses(
        {"include": ["reasoning.encrypted_content"]}, model="m", tools=NO_TOOLS, sealer=SEALER
    )
    events = stream.start()
    events += stream.feed(_chunk({"reasoning_content": "Let me "}))
    events += stream.feed(_chunk({"reasoning_content": "think."}))
    signature = {"type": "thinking", "thinking": "", "signature": "c2ln"}
    events += stream.feed(_chunk({"thinking_blocks": [signature]}))
    events += stream.feed(_chunk({"thinking_blocks": [SIGNED[1]]}))
    events += stream.feed(_chunk({"content": "Done."}, "stop")) + stream.done()
    parsed = _validate(events)
    (done,) = [e for e in parsed if e.type == "response.output_item.done" and e.output_index == 0]
    assert SEALER.open(done.item.encrypted_content) == SIGNED
    assert parsed[-1].response.output[0].encrypted_content == done.item.encrypted_content


def test_it_puts_opened_thinking_back_on_the_assistant_turn_and_drops_foreign_blobs():
    chat, _ = responses_api.to_chat(
        {
            "model": "m",
            "tools": CODEX_TOOLS,
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "id": "rs_0", "summary": [], "encrypted_content": "gAAA"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "encrypted_content": SEALER.seal(SIGNED),
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "exec_command",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        },
        sealer=SEALER,
    )
    assistant = chat["messages"][1]
    assert assistant["role"] == "assistant" and assistant["thinking_blocks"] == SIGNED
    anthropic = requests.openai_to_anthropic(
        chat, model="claude", default_max_tokens=1024, max_output_tokens=None
    )
    assert anthropic["messages"][1]["content"][:2] == SIGNED
    assert "thinking_blocks" not in requests.without_thinking_blocks(chat)["messages"][1]


def test_it_streams_a_custom_tools_input_as_it_decodes():
    _, tools = responses_api.to_chat({"model": "m", "input": "x", "tools": CODEX_TOOLS})
    text = '*** Begin Patch\n+say "hi" \\ \u00e9 \U0001f600\n*** End Patch\n'
    arguments = json.dumps({"input": text})  # ASCII: escapes and a surrogate pair to split
    stream = responses_api.ChatToResponses({}, model="m", tools=tools)
    events = stream.start()
    pieces = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    first = {"index": 0, "id": "c1", "function": {"name": "apply_patch", "arguments": ""}}
    events += stream.feed(_chunk({"tool_calls": [first]}))
    for piece in pieces:
        events += stream.feed(
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        )
    events += stream.feed(_chunk({}, "tool_calls")) + stream.done()
    parsed = _validate(events)
    deltas = [e.delta for e in parsed if e.type == "response.custom_tool_call_input.delta"]
    (done,) = [e for e in parsed if e.type == "response.custom_tool_call_input.done"]
    assert len(deltas) > 5 and "".join(deltas) == done.input == text
    assert responses_tools.partial_input('{"input": "ab\\') == "ab"
    assert responses_tools.partial_input('{"input": "\\ud83d') == ""
    assert responses_tools.partial_input('{"other": 1}') == ""
    assert responses_tools.partial_input('{"input": "a\\uZZZZb"}') == "a"
    assert responses_tools.partial_input('{"input": "a\\udc00b"}') == "a"


def test_tools_in_additional_tools_items_join_the_request():
    exec_tool = {"type": "custom", "name": "exec", "description": "Run JavaScript."}
    namespace = {"type": "namespace", "name": "functions", "description": "", "tools": [exec_tool]}
    extra = {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [namespace]}
    chat, tools = responses_api.to_chat(
        {
            "model": "m",
            "tools": [namespace],  # offered twice: once upstream
            "input": [extra, {"role": "user", "content": "go"}, extra],
        }
    )
    assert [t["function"]["name"] for t in chat["tools"]] == ["functions__exec"]
    assert chat["messages"] == [{"role": "user", "content": "go"}]
    item = tools.output_item("ct_1", "c1", "functions__exec", '{"input": "1 + 1"}', "completed")
    assert (item["type"], item["namespace"], item["name"], item["input"]) == (
        "custom_tool_call",
        "functions",
        "exec",
        "1 + 1",
    )
