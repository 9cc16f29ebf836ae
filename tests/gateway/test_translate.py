"""The OpenAI <-> Anthropic translation: requests, whole replies, SSE framing and streams, checked
against the shapes the official SDKs accept (their parsers and stream accumulators run for real;
only their HTTP transport is replaced by canned bytes)."""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from gateway.tokens import Usage
from gateway.translate import ids, sse
from gateway.translate import requests as treq
from gateway.translate import responses as tresp
from gateway.translate import streams as tstream
from gateway.translate.errors import TranslationError

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def to_anthropic(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"model": "claude-up", "default_max_tokens": 4096}
    options["max_output_tokens"] = None
    options.update(kwargs)
    return treq.openai_to_anthropic(body, **options)


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    return treq.anthropic_to_openai(body, model="gpt-up")


def user(text: str = "Hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def raises(param: str | None, text: str) -> Any:
    """Context manager asserting a TranslationError with this param and message fragment."""

    class Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
            assert isinstance(exc, TranslationError), f"expected TranslationError, got {exc!r}"
            assert exc.param == param
            assert text in exc.message
            return True

    return Check()


# --- SSE framing ------------------------------------------------------------------------------

MIXED_SSE = (
    "\ufeff: a comment first\r\n"
    "event: first\r\n"
    'data: {"text": "héllo ✓ 🎉"}\r\n'
    "\r\n"
    "data: line one\n"
    "data: line two\n"
    "id: 7\n"
    "retry: 100\n"
    "\n"
    "event:tight\r"
    "data:no space\r"
    "\r"
    ": keep-alive\n\n"
    "event: empty\n\n"
    "data: [DONE]\n\n"
).encode()
MIXED_EVENTS = [
    ("first", '{"text": "héllo ✓ 🎉"}'),
    (None, "line one\nline two"),
    ("tight", "no space"),
    ("empty", ""),
    (None, "[DONE]"),
]


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[tuple[str | None, str]]:
    decoder = sse.SSEDecoder()
    out: list[tuple[str | None, str]] = []
    bounds = [0, *cuts, len(data)]
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(data[start:end])
    return out


def test_it_decodes_every_line_ending_comment_bom_and_multiline_data():
    assert decode_in_pieces(MIXED_SSE, []) == MIXED_EVENTS


def test_it_decodes_the_same_events_whatever_byte_the_stream_is_split_at():
    for cut in range(len(MIXED_SSE) + 1):
        assert decode_in_pieces(MIXED_SSE, [cut]) == MIXED_EVENTS, cut
    for cut in range(1, len(MIXED_SSE) - 3):
        assert decode_in_pieces(MIXED_SSE, [cut, cut + 1, cut + 3]) == MIXED_EVENTS, cut


def test_it_decodes_a_stream_fed_one_byte_at_a_time():
    assert decode_in_pieces(MIXED_SSE, list(range(1, len(MIXED_SSE)))) == MIXED_EVENTS


def test_it_decodes_newline_only_streams_with_bare_fields_split_anywhere():
    data = b"event: a\ndata\ndata: x\n\ndata:y\n\n: ping\nevent\ndata: {}\n\n"
    expected = [("a", "\nx"), (None, "y"), ("", "{}")]
    for cut in range(len(data) + 1):
        assert decode_in_pieces(data, [cut]) == expected, cut


def test_it_holds_an_event_until_its_blank_line_arrives():
    decoder = sse.SSEDecoder()
    assert decoder.feed(b"data: {}\n") == []
    assert decoder.feed(b"\n") == [(None, "{}")]


def test_it_encodes_one_json_object_per_data_line():
    assert sse.encode_openai({"a": "x\ny"}) == b'data: {"a":"x\\ny"}\n\n'
    assert sse.encode_anthropic("ping", {"type": "ping"}) == (
        b'event: ping\ndata: {"type":"ping"}\n\n'
    )
    assert sse.DONE == b"data: [DONE]\n\n"
    frames = sse.encode_anthropic("message_stop", {"type": "message_stop"}) + sse.DONE
    assert decode_in_pieces(frames, []) == [
        ("message_stop", '{"type":"message_stop"}'),
        (None, "[DONE]"),
    ]


# --- ids --------------------------------------------------------------------------------------


def test_it_makes_ids_in_each_protocols_format():
    assert ids.completion_id().startswith("chatcmpl-")
    assert len(ids.message_id()) == len("msg_01") + 22
    assert ids.tool_use_id().startswith("toolu_01")
    assert ids.tool_call_id().startswith("call_")
    assert ids.completion_id() != ids.completion_id()


def test_it_sanitizes_tool_ids_the_same_way_every_time():
    assert ids.safe_tool_id("call_abc-1") == "call_abc-1"
    assert ids.safe_tool_id("functions.Bash:0") == "functions_Bash_0"
    assert ids.safe_tool_id("functions.Bash:0") == ids.safe_tool_id("functions.Bash:0")
    assert ids.safe_tool_id("abc__thought__") == "abc"


# --- requests: OpenAI -> Anthropic ------------------------------------------------------------


def test_it_hoists_system_and_developer_messages_into_system():
    out = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("Hi"),
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            ]
        }
    )
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert out["model"] == "claude-up"


def test_it_keeps_system_blocks_when_they_carry_cache_control():
    marked = {"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}
    out = to_anthropic({"messages": [{"role": "system", "content": [marked]}, user()]})
    assert out["system"] == [marked]


def test_it_converts_images_from_data_urls_and_https_urls():
    out = to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    ],
                }
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "data: URL or an http(s)"),
        ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAA"}}, "image/bmp"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,raw"}}, "base64"),
        ({"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}, "audio"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "file_data"),
        ({"type": "video"}, "unsupported content type 'video'"),
    ],
)
def test_it_rejects_content_it_cannot_send_naming_the_part(part, fragment):
    body = {"messages": [user(), user(), {"role": "user", "content": [part]}]}
    with raises("messages[2].content[0]", fragment):
        to_anthropic(body)


def test_it_turns_a_pdf_file_part_into_a_document_block():
    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a"},
    }
    out = to_anthropic({"messages": [{"role": "user", "content": [part]}]})
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            "title": "a",
        }
    ]


def test_it_turns_tool_calls_and_tool_messages_into_tool_use_and_merged_tool_results():
    out = to_anthropic(
        {
            "messages": [
                user("Weather in Paris and Rome?"),
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        call("call_1", "get_weather", '{"city": "Paris"}'),
                        call("call_2", "get_weather", ""),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                user("Thanks. Which is warmer?"),
            ]
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"type": "text", "text": "Thanks. Which is warmer?"},
            ],
        },
    ]


def test_it_merges_two_results_for_one_tool_call_and_fills_in_missing_ones():
    out = to_anthropic(
        {
            "messages": [
                user(),
                {"role": "assistant", "tool_calls": [call("a", "f", "{}"), call("b", "f", "{}")]},
                {"role": "tool", "tool_call_id": "a", "content": "part 1"},
                {"role": "tool", "tool_call_id": "a", "content": "part 2"},
                user("go on"),
            ]
        }
    )
    results = out["messages"][2]["content"]
    assert results[0] == {
        "type": "tool_result",
        "tool_use_id": "b",
        "content": treq.MISSING_RESULT,
        "is_error": True,
    }
    assert results[1]["content"] == [
        {"type": "text", "text": "part 1"},
        {"type": "text", "text": "part 2"},
    ]
    assert results[2] == {"type": "text", "text": "go on"}


def test_it_rejects_a_tool_message_no_assistant_call_asked_for():
    with raises("messages[1].tool_call_id", "'nope'"):
        to_anthropic(
            {"messages": [user(), {"role": "tool", "tool_call_id": "nope", "content": "x"}]}
        )


def test_it_rejects_tool_call_arguments_that_are_not_json():
    body = {"messages": [user(), {"role": "assistant", "tool_calls": [call("a", "f", "{oops")]}]}
    with raises("messages[1].tool_calls[0].function.arguments", "not valid JSON"):
        to_anthropic(body)


def test_it_merges_consecutive_turns_of_one_role_and_trims_a_final_prefill():
    out = to_anthropic(
        {
            "messages": [
                user("a"),
                user("b"),
                {"role": "assistant", "content": "x"},
                {"role": "assistant", "content": "The answer is "},
            ]
        }
    )
    assert [turn["role"] for turn in out["messages"]] == ["user", "assistant"]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]
    assert out["messages"][1]["content"][-1] == {"type": "text", "text": "The answer is"}


def test_it_maps_tools_and_every_tool_choice():
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
    }
    body: dict[str, Any] = {"messages": [user()], "tools": [tool]}
    out = to_anthropic(body)
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert "tool_choice" not in out
    cases = [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ]
    for choice, expected in cases:
        assert to_anthropic({**body, "tool_choice": choice})["tool_choice"] == expected
    serial = to_anthropic({**body, "parallel_tool_calls": False})
    assert serial["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    with raises("tool_choice", "tool_choice must be"):
        to_anthropic({**body, "tool_choice": "sometimes"})


def test_it_fills_in_a_missing_schema_and_rejects_custom_tools():
    out = to_anthropic(
        {"messages": [user()], "tools": [{"type": "function", "function": {"name": "f"}}]}
    )
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    with raises("tools[0].type", "'custom' tools"):
        to_anthropic({"messages": [user()], "tools": [{"type": "custom", "custom": {"name": "g"}}]})


def test_it_uses_max_completion_tokens_then_max_tokens_then_the_default_clamped():
    assert to_anthropic({"messages": [user()]})["max_tokens"] == 4096
    assert to_anthropic({"messages": [user()], "max_tokens": 100})["max_tokens"] == 100
    both = {"messages": [user()], "max_tokens": 100, "max_completion_tokens": 200}
    assert to_anthropic(both)["max_tokens"] == 200
    assert to_anthropic(both, max_output_tokens=150)["max_tokens"] == 150
    assert to_anthropic({"messages": [user()]}, max_output_tokens=1000)["max_tokens"] == 1000
    with raises("max_tokens", "positive integer"):
        to_anthropic({"messages": [user()], "max_tokens": 0})


def test_it_maps_sampling_stop_stream_and_user_and_drops_what_anthropic_lacks():
    out = to_anthropic(
        {
            "messages": [user()],
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u-42",
            "seed": 3,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logit_bias": {"1": 2},
            "n": 1,
        }
    )
    assert out == {
        "model": "claude-up",
        "max_tokens": 4096,
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u-42"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    assert to_anthropic({"messages": [user()], "stop": ["a", " "]})["stop_sequences"] == ["a"]


def test_it_rejects_what_anthropic_cannot_express():
    with raises("n", "'n' to 1"):
        to_anthropic({"messages": [user()], "n": 2})
    with raises("logprobs", "logprobs"):
        to_anthropic({"messages": [user()], "logprobs": True})
    with raises("reasoning_effort", "must be one of"):
        to_anthropic({"messages": [user()], "reasoning_effort": "extreme"})


def test_it_turns_reasoning_effort_into_a_thinking_budget_with_room_to_answer():
    out = to_anthropic(
        {"messages": [user()], "reasoning_effort": "medium", "max_tokens": 1000, "temperature": 0.2}
    )
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["max_tokens"] == 3048
    assert "temperature" not in out
    capped = to_anthropic(
        {"messages": [user()], "reasoning_effort": "high"}, max_output_tokens=3000
    )
    assert capped["max_tokens"] == 3000
    assert capped["thinking"]["budget_tokens"] == 2999
    assert "thinking" not in to_anthropic({"messages": [user()], "reasoning_effort": "none"})


def test_it_refuses_a_forced_tool_together_with_reasoning():
    body = {
        "messages": [user()],
        "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "required",
    }
    with raises("tool_choice", "reasoning_effort"):
        to_anthropic(body)


def test_it_answers_response_format_through_a_forced_json_tool():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = {
        "messages": [user()],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    out = to_anthropic(body)
    assert out["tools"][-1]["name"] == treq.JSON_TOOL_NAME
    assert out["tools"][-1]["input_schema"] == schema
    assert out["tool_choice"] == {"type": "tool", "name": treq.JSON_TOOL_NAME}
    loose = to_anthropic({"messages": [user()], "response_format": {"type": "json_object"}})
    assert loose["tools"][0]["input_schema"]["additionalProperties"] is True


def test_it_asks_for_json_in_the_system_prompt_when_thinking_forbids_a_forced_tool():
    body = {
        "messages": [user()],
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
    }
    out = to_anthropic(body)
    assert "tools" not in out
    assert "JSON object" in out["system"]


# --- requests: Anthropic -> OpenAI ------------------------------------------------------------


def test_it_builds_openai_messages_with_tool_results_first():
    out = to_openai(
        {
            "model": "claude-x",
            "max_tokens": 500,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "w",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Here:"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "boom"}],
                            "is_error": True,
                        },
                    ],
                },
            ],
        }
    )
    assert out["model"] == "gpt-up"
    assert out["max_tokens"] == 500
    assert "stream_options" not in out
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                }
            ],
            "reasoning_content": "Use the tool.",
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {"role": "user", "content": "Here:"},
    ]


def test_it_converts_anthropic_images_and_documents_to_openai_parts():
    out = to_openai(
        {
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBE",
                            },
                        },
                        {"type": "text", "text": "Compare."},
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"},
        },
        {"type": "text", "text": "Compare."},
    ]


def test_it_keeps_cache_control_on_system_parts_for_openai_compatible_claude():
    system = [{"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}}]
    out = to_openai({"max_tokens": 1, "system": system, "messages": [user()]})
    assert out["messages"][0] == {"role": "system", "content": system}


def test_it_maps_anthropic_tools_choice_sampling_and_metadata():
    out = to_openai(
        {
            "max_tokens": 64,
            "messages": [user()],
            "tools": [
                {
                    "name": "f",
                    "description": "d",
                    "input_schema": {"type": "object"},
                    "cache_control": {},
                }
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "temperature": 0.5,
            "top_p": 0.8,
            "top_k": 5,
            "stop_sequences": ["X"],
            "metadata": {"user_id": "u1"},
            "stream": True,
        }
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "description": "d"},
        }
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    assert (out["temperature"], out["top_p"], out["stop"], out["user"]) == (0.5, 0.8, ["X"], "u1")
    assert "top_k" not in out
    assert out["stream"] is True
    named = to_openai(
        {
            "max_tokens": 1,
            "messages": [user()],
            "tools": [{"name": "f"}],
            "tool_choice": {"type": "tool", "name": "f"},
        }
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert named["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_it_rejects_server_tools_and_too_many_stop_sequences():
    with raises("tools[0].type", "web_search_20250305"):
        to_openai(
            {
                "max_tokens": 1,
                "messages": [user()],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            }
        )
    with raises("stop_sequences", "at most 4"):
        to_openai({"max_tokens": 1, "messages": [user()], "stop_sequences": list("abcde")})
    with raises("messages[0].role", "'user', 'assistant' or 'system'"):
        to_openai({"max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]})


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 3000}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "adaptive"}, "medium"),
    ],
)
def test_it_maps_a_thinking_budget_to_reasoning_effort(thinking, effort):
    out = to_openai({"max_tokens": 9000, "messages": [user()], "thinking": thinking})
    assert out["reasoning_effort"] == effort
    assert out["max_completion_tokens"] == 9000
    assert "max_tokens" not in out


def test_it_maps_output_config_format_to_a_strict_json_schema():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
    }
    out = to_openai(
        {
            "max_tokens": 1,
            "messages": [user()],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
    )
    strict = out["response_format"]["json_schema"]
    assert strict["strict"] is True
    assert strict["schema"]["required"] == ["a"]
    assert strict["schema"]["additionalProperties"] is False
    assert strict["schema"]["properties"]["a"]["required"] == ["b"]


def test_a_tool_call_survives_the_round_trip_through_both_request_shapes():
    original = [
        user("Weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("call_9", "w", '{"city":"Oslo"}')],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "-3C"},
    ]
    anthropic_body = to_anthropic({"messages": original})
    back = to_openai({**anthropic_body, "model": "x"})
    assert back["messages"] == original
    assert back["max_tokens"] == 4096


# --- whole responses --------------------------------------------------------------------------

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-upstream",
    "content": [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "text", "text": "Let me check. "},
        {"type": "text", "text": "One moment."},
        {"type": "tool_use", "id": "toolu_01", "name": "w", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
    },
}


def test_it_turns_an_anthropic_message_into_a_chat_completion():
    out = tresp.anthropic_to_openai(ANTHROPIC_MESSAGE, model="client-model")
    ChatCompletion.model_validate(out)
    assert out["model"] == "client-model"
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check. One moment."
    assert choice["message"]["reasoning_content"] == "Hmm."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01",
            "type": "function",
            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 20,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_it_maps_stop_reasons_to_finish_reasons(stop, finish):
    message = {**ANTHROPIC_MESSAGE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert tresp.anthropic_to_openai(message, model="m")["choices"][0]["finish_reason"] == finish


def test_it_returns_a_json_tool_answer_as_plain_content():
    message = {
        **ANTHROPIC_MESSAGE,
        "content": [
            {"type": "tool_use", "id": "t", "name": treq.JSON_TOOL_NAME, "input": {"n": 1}}
        ],
    }
    choice = tresp.anthropic_to_openai(message, model="m")["choices"][0]
    assert choice["message"]["content"] == '{"n":1}'
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-upstream",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "Think.",
                "tool_calls": [
                    call("call_1", "w", '{"city":"Paris"}'),
                    call("functions.x:1", "x", "[1]"),
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}


def test_it_turns_a_chat_completion_into_an_anthropic_message():
    out = tresp.openai_to_anthropic(OPENAI_COMPLETION, model="client-model")
    Message.model_validate(out)
    assert out["model"] == "client-model"
    assert out["id"].startswith("msg_")
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {"type": "thinking", "thinking": "Think.", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "functions_x_1", "name": "x", "input": {"value": [1]}},
    ]
    assert out["usage"] == {
        "input_tokens": 20,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_it_maps_finish_reasons_to_stop_reasons(finish, stop):
    choice = {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "x"}}
    out = tresp.openai_to_anthropic({"choices": [choice]}, model="m")
    assert out["stop_reason"] == stop
    assert "usage" not in out


def test_it_reports_an_upstream_reply_without_choices_as_untranslatable():
    with raises(None, "no choices"):
        tresp.openai_to_anthropic({"choices": []}, model="m")


# --- streams: Anthropic upstream -> OpenAI client ---------------------------------------------


def anthropic_sse(events: list[dict[str, Any]], newline: str = "\n") -> bytes:
    out = ""
    for event in events:
        out += (
            f"event: {event['type']}{newline}data: {orjson.dumps(event).decode()}{newline}{newline}"
        )
    return out.encode()


ANTHROPIC_STREAM: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_01X",
            "type": "message",
            "role": "assistant",
            "model": "claude-upstream",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 377,
                "cache_creation_input_tokens": 10,
                "cache_read_input_tokens": 100,
                "output_tokens": 1,
            },
        },
    },
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "Let me think ✓"},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "abc"},
    },
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "text_delta", "text": "Héllo 🌍. "},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "text_delta", "text": "Checking."},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01A",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 2,
        "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
    },
    {"type": "content_block_stop", "index": 2},
    {
        "type": "content_block_start",
        "index": 3,
        "content_block": {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": '{"tz":"CET"}'},
    },
    {"type": "content_block_stop", "index": 3},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 65},
    },
    {"type": "message_stop"},
]


def run_anthropic_stream(data: bytes, cuts: list[int], include_usage: bool = True):
    translator = tstream.AnthropicToOpenAI(model="client-model", include_usage=include_usage)
    chunks: list[dict[str, Any]] = []
    for event, payload in decode_in_pieces(data, cuts):
        assert event is not None
        chunks += translator.feed(event, orjson.loads(payload))
    return translator, chunks


def test_it_streams_anthropic_events_as_openai_chunks():
    translator, chunks = run_anthropic_stream(anthropic_sse(ANTHROPIC_STREAM), [])
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {"client-model"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think ✓"
    assert "".join(d.get("content") or "" for d in deltas) == "Héllo 🌍. Checking."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert (
        "".join(tc["function"]["arguments"] for tc in calls if tc["index"] == 0)
        == '{"city": "Paris"}'
    )
    assert next(tc for tc in calls if tc["index"] == 1)["id"] == "toolu_01B"
    assert all(set(tc) == {"index", "function"} for tc in calls if "id" not in tc)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert finishes.count("tool_calls") == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 487,
        "completion_tokens": 65,
        "total_tokens": 552,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10},
    }
    assert translator.usage == Usage(
        input_tokens=487, output_tokens=65, cached_tokens=100, cache_write_tokens=10
    )


def test_it_translates_the_same_anthropic_stream_whatever_byte_it_is_split_at():
    data = anthropic_sse(ANTHROPIC_STREAM, newline="\r\n")
    _, whole = run_anthropic_stream(data, [])

    def strip(chunks):
        return [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]

    for cut in range(len(data) + 1):
        assert strip(run_anthropic_stream(data, [cut])[1]) == strip(whole), cut


def test_it_leaves_out_the_usage_chunk_unless_the_client_asked():
    _, chunks = run_anthropic_stream(anthropic_sse(ANTHROPIC_STREAM), [], include_usage=False)
    assert all(c["choices"] for c in chunks)


def test_it_keeps_usage_current_before_the_stream_ends():
    translator = tstream.AnthropicToOpenAI(model="m", include_usage=False)
    translator.feed("message_start", ANTHROPIC_STREAM[0])
    assert translator.usage is not None and translator.usage.input_tokens == 487
    assert translator.usage.output_tokens == 1


def test_it_forwards_an_anthropic_error_event_as_an_openai_error_chunk():
    translator = tstream.AnthropicToOpenAI(model="m", include_usage=True)
    translator.feed("message_start", ANTHROPIC_STREAM[0])
    out = translator.feed(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert out == [
        {
            "error": {
                "message": "Overloaded",
                "type": "overloaded_error",
                "param": None,
                "code": None,
            }
        }
    ]
    assert translator.feed("message_stop", {"type": "message_stop"}) == []
    assert translator.finish() == []


def test_it_reports_an_anthropic_stream_cut_before_message_stop_as_an_error():
    translator = tstream.AnthropicToOpenAI(model="m", include_usage=True)
    for event in ANTHROPIC_STREAM[:8]:
        translator.feed(event["type"], event)
    (chunk,) = translator.finish()
    assert chunk["error"]["type"] == "api_error"
    assert "ended" in chunk["error"]["message"]


def test_it_streams_a_json_tool_answer_as_content():
    translator = tstream.AnthropicToOpenAI(model="m", include_usage=False)
    events = [
        ANTHROPIC_STREAM[0],
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "t",
                "name": treq.JSON_TOOL_NAME,
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"n":'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in translator.feed(e["type"], e)]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas) == '{"n":1}'
    assert not any("tool_calls" in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# Both SDK releases speak httpx2 (a fork of httpx); only their transport is replaced.
def openai_client(body: bytes) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httpx2.MockTransport(answer)
    return openai.OpenAI(
        api_key="k", base_url="http://gw.test/v1", http_client=httpx2.Client(transport=transport)
    )


def test_the_openai_sdk_accumulates_the_translated_stream():
    _, chunks = run_anthropic_stream(anthropic_sse(ANTHROPIC_STREAM), [])
    body = b"".join(sse.encode_openai(c) for c in chunks) + sse.DONE
    client = openai_client(body)
    with client.chat.completions.stream(
        model="m", messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Héllo 🌍. Checking."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_01A", "get_weather", '{"city": "Paris"}'),
        ("toolu_01B", "get_time", '{"tz":"CET"}'),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.prompt_tokens == 487


def test_the_openai_sdk_raises_on_the_translated_error_chunk():
    translator = tstream.AnthropicToOpenAI(model="m", include_usage=False)
    chunks = translator.feed("message_start", ANTHROPIC_STREAM[0]) + translator.finish()
    client = openai_client(b"".join(sse.encode_openai(c) for c in chunks))
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="ended"):
        list(stream)


# --- streams: OpenAI upstream -> Anthropic client ---------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": choices,
        **extra,
    }


OPENAI_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 40,
    "total_tokens": 160,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 10},
}
OPENAI_STREAM: list[dict[str, Any]] = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"reasoning_content": "Think "}),
    chunk({"reasoning_content": "hard ✓"}),
    chunk({"content": "Héllo "}),
    chunk({"content": "🌍"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_B",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                }
            ]
        }
    ),
    chunk({}, "tool_calls"),
    chunk(None, usage=OPENAI_USAGE),
]


def run_openai_stream(chunks: list[dict[str, Any]], done: bool = True):
    translator = tstream.OpenAIToAnthropic(model="client-model", input_tokens_estimate=111)
    events: list[tuple[str, dict[str, Any]]] = []
    for item in chunks:
        events += translator.feed(item)
    events += translator.feed_done() if done else translator.finish()
    return translator, events


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> Any:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        event = EVENTS.validate_python(data)
        assert event.type == name
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def test_it_streams_openai_chunks_as_anthropic_events():
    translator, events = run_openai_stream(OPENAI_STREAM)
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert (
        names.count("message_start")
        == names.count("message_delta")
        == names.count("message_stop")
        == 1
    )
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 111
    assert start["model"] == "client-model"
    starts = [d["index"] for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == stops == [0, 1, 2, 3]
    open_index = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert final["usage"] == {
        "input_tokens": 20,
        "output_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
    }
    assert translator.usage == Usage(
        input_tokens=120, output_tokens=40, cached_tokens=100, reasoning_tokens=10
    )
    message = accumulate(events)
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].thinking == "Think hard ✓"
    assert message.content[1].text == "Héllo 🌍"
    assert (message.content[2].id, message.content[2].name, message.content[2].input) == (
        "call_A",
        "get_weather",
        {"city": "Paris"},
    )
    assert message.content[3].input == {"tz": "CET"}
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 100


def test_it_ends_the_message_when_usage_follows_the_finish_even_before_done():
    translator = tstream.OpenAIToAnthropic(model="m", input_tokens_estimate=5)
    events = [e for c in OPENAI_STREAM for e in translator.feed(c)]
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
    assert translator.feed_done() == []
    assert translator.finish() == []


def test_it_holds_the_message_delta_until_done_when_no_usage_comes():
    body = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello there"}),
        chunk({}, "stop"),
    ]
    translator, events = run_openai_stream(body)
    assert translator.usage is None
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0
    assert final["usage"]["input_tokens"] == 111
    message = accumulate(events)
    assert message.content[0].text == "Hello there"


def test_it_closes_properly_at_eof_without_done_after_a_finish_reason():
    body = [chunk({"content": "Hi"}), chunk({}, "length")]
    _, events = run_openai_stream(body, done=False)
    assert [name for name, _ in events][-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("done", [True, False])
def test_it_reports_an_openai_stream_without_finish_reason_as_an_error(done):
    _, events = run_openai_stream([chunk({"content": "Hi"})], done=done)
    name, data = events[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "api_error", "message": data["error"]["message"]},
    }
    assert "message_stop" not in [n for n, _ in events]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limit_error",
        ),
        ({"message": "busy", "type": "server_error", "code": 529}, "overloaded_error"),
        ({"message": "bad", "type": "invalid_request_error"}, "invalid_request_error"),
        ({"message": "huh", "type": "server_error"}, "api_error"),
    ],
)
def test_it_forwards_an_openai_error_chunk_as_an_anthropic_error_event(error, kind):
    translator = tstream.OpenAIToAnthropic(model="m", input_tokens_estimate=5)
    translator.feed(chunk({"content": "Hi"}))
    out = translator.feed({"error": error, "choices": []})
    assert out == [
        ("error", {"type": "error", "error": {"type": kind, "message": error["message"]}})
    ]
    assert translator.feed_done() == []


def test_it_sends_arguments_that_arrive_with_the_tool_name():
    body = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "functions.Bash:0",
                        "function": {"name": "Bash", "arguments": '{"cmd":"ls"}'},
                    }
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "c2", "function": {"name": "Read", "arguments": '{"p":1}'}}
                ]
            },
            "tool_calls",
        ),
    ]
    _, events = run_openai_stream(body)
    message = accumulate(events)
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("functions_Bash_0", "Bash", {"cmd": "ls"}),
        ("c2", "Read", {"p": 1}),
    ]


def test_it_processes_content_before_a_finish_reason_in_the_same_chunk():
    _, events = run_openai_stream([chunk({"content": "all at once"}, "stop")])
    assert accumulate(events).content[0].text == "all at once"


def anthropic_client(body: bytes) -> anthropic.Anthropic:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    transport = httpx2.MockTransport(answer)
    return anthropic.Anthropic(
        api_key="k", base_url="http://gw.test", http_client=httpx2.Client(transport=transport)
    )


def test_the_anthropic_sdk_accumulates_the_translated_stream():
    _, events = run_openai_stream(OPENAI_STREAM)
    client = anthropic_client(b"".join(sse.encode_anthropic(n, d) for n, d in events))
    with client.messages.stream(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 40


def test_the_anthropic_sdk_raises_on_the_translated_error_event():
    _, events = run_openai_stream([chunk({"content": "Hi"})])
    client = anthropic_client(b"".join(sse.encode_anthropic(n, d) for n, d in events))
    with (
        pytest.raises(anthropic.APIStatusError, match="finish_reason"),
        client.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        ) as stream,
    ):
        stream.get_final_message()


def test_stream_translators_shrug_off_malformed_upstream_values():
    to_openai_stream = tstream.AnthropicToOpenAI(model="m", include_usage=True)
    assert to_openai_stream.feed("message_start", {"message": "nonsense"}) == [
        to_openai_stream._chunk({"role": "assistant", "content": ""})
    ]
    assert to_openai_stream.feed("content_block_delta", {"index": 0, "delta": None}) == []
    assert to_openai_stream.feed("content_block_start", {"index": "x"}) == []
    to_anthropic_stream = tstream.OpenAIToAnthropic(model="m", input_tokens_estimate=1)
    events = to_anthropic_stream.feed({"choices": "nope"})
    events += to_anthropic_stream.feed({"choices": [{"delta": {"tool_calls": "x"}}]})
    assert [name for name, _ in events] == ["message_start"]


def test_it_maps_deprecated_functions_and_function_messages():
    out = to_anthropic(
        {
            "messages": [
                user(),
                {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a":1}'}},
                {"role": "function", "name": "f", "content": "done"},
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"},
        }
    )
    use = out["messages"][1]["content"][0]
    assert (use["type"], use["name"], use["input"]) == ("tool_use", "f", {"a": 1})
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": use["id"], "content": "done"}
    ]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": "f"}


def test_it_moves_images_out_of_tool_results_into_the_following_user_message():
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/s.png"}}
    out = to_openai(
        {
            "max_tokens": 1,
            "messages": [
                user(),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "ok"}, image],
                        }
                    ],
                },
            ],
        }
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}
        ],
    }
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    assert out["messages"][3]["role"] == "user"
    assert out["messages"][3]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x.test/s.png"},
    }


def test_it_strips_only_unsigned_thinking_before_an_anthropic_upstream():
    signed = {"type": "thinking", "thinking": "a", "signature": "sig"}
    unsigned = {"type": "thinking", "thinking": "b", "signature": ""}
    text = {"type": "text", "text": "Hi"}
    body: dict[str, Any] = {
        "max_tokens": 5,
        "messages": [
            user(),
            {"role": "assistant", "content": [signed, text]},
            user(),
            {"role": "assistant", "content": [unsigned, text]},
        ],
    }
    out = treq.strip_unsigned_thinking(body)
    assert out["messages"][1]["content"] == [signed, text]
    assert out["messages"][3]["content"] == [text]
    assert body["messages"][3]["content"] == [unsigned, text]


# --- system messages inside an Anthropic body's messages (SDK 2.17, Claude Code) -------------

TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Write the file."},
    {"role": "system", "content": "Use absolute paths."},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {"a": 1}}],
    },
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
            {"type": "text", "text": "Thanks."},
        ],
    },
]


def test_system_messages_stay_in_place_for_an_openai_upstream():
    body = {
        "system": "You are terse.",
        "max_tokens": 10,
        "messages": [{"role": "system", "content": "Project rules."}, *TOOL_TURNS],
    }
    out = treq.anthropic_to_openai(body, model="gpt")
    assert [(m["role"], m.get("content")) for m in out["messages"]] == [
        ("system", "You are terse."),
        ("system", "Project rules."),
        ("user", "Write the file."),
        ("system", "Use absolute paths."),
        ("assistant", None),
        # Tool results must follow the assistant's calls: the note waits until after them.
        ("tool", "done"),
        ("system", "Be brief."),
        ("user", "Thanks."),
    ]


def test_system_messages_fold_for_an_anthropic_upstream():
    body: dict[str, Any] = {
        "system": "You are terse.",
        "max_tokens": 10,
        "messages": [{"role": "system", "content": "Project rules."}, *TOOL_TURNS],
    }
    out = treq.fold_system_messages(body)
    assert out["system"] == "You are terse.\n\nProject rules."
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    first, _, last = out["messages"]
    assert first["content"] == [
        {"type": "text", "text": "Write the file."},
        {"type": "text", "text": "<system>\nUse absolute paths.\n</system>"},
    ]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text", "text"]
    assert last["content"][1]["text"] == "<system>\nBe brief.\n</system>"
    assert body["messages"][2] == TOOL_TURNS[1]  # the caller's body is left alone
    assert TOOL_TURNS[0] == {"role": "user", "content": "Write the file."}


def test_a_trailing_system_message_and_cache_breakpoints_survive_folding():
    cached = {"type": "text", "text": "Big rules.", "cache_control": {"type": "ephemeral"}}
    body = {
        "system": [{"type": "text", "text": "Top."}],
        "messages": [
            {"role": "system", "content": [cached]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "system", "content": "Now answer in French."},
        ],
    }
    out = treq.fold_system_messages(body)
    assert out["system"] == [{"type": "text", "text": "Top."}, cached]
    assert out["messages"][-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "<system>\nNow answer in French.\n</system>"}],
    }
    oa = treq.anthropic_to_openai(body, model="gpt")
    assert oa["messages"][-1] == {"role": "system", "content": "Now answer in French."}
    assert oa["messages"][1]["content"] == [cached]


def test_a_system_message_cleared_at_the_next_user_message_is_dropped_once_they_wrote():
    note = {"role": "system", "content": "Once.", "clear_at": "next_user_message"}
    pending = {"messages": [{"role": "user", "content": "a"}, note]}
    assert "Once." in str(treq.fold_system_messages(pending)["messages"])
    assert "Once." in str(treq.anthropic_to_openai(pending, model="m")["messages"])
    later = {"messages": [{"role": "user", "content": "a"}, note, {"role": "user", "content": "b"}]}
    assert "Once." not in str(treq.fold_system_messages(later)["messages"])
    assert "Once." not in str(treq.anthropic_to_openai(later, model="m")["messages"])


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "system", "content": "only rules"}], "messages"),
        (
            [{"role": "user", "content": "hi"}, {"role": "system", "content": 5}],
            "messages[1].content",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "image"}]}],
            "messages[1].content[0]",
        ),
    ],
)
def test_malformed_system_messages_are_refused_with_their_place(messages, param):
    for translate in (treq.fold_system_messages, lambda b: treq.anthropic_to_openai(b, model="m")):
        with pytest.raises(TranslationError) as refused:
            translate({"messages": messages})
        assert refused.value.param == param


@pytest.mark.parametrize(
    ("choice", "text", "expected"),
    [
        ({"finish_reason": "stop", "stop_reason": "END"}, "done", "END"),  # vLLM names it
        ({"finish_reason": "stop", "matched_stop": "##"}, "done", "##"),  # SGLang
        ({"finish_reason": "stop", "stopping_word": "END"}, "done", "END"),  # llama.cpp
        ({"finish_reason": "stop", "stop_reason": 106}, "done", None),  # a token id: not ours
        ({"finish_reason": "stop", "stop_reason": "other"}, "done", None),  # not the caller's
        ({"finish_reason": "stop"}, "it is done END", "END"),  # a server that keeps the string
        ({"finish_reason": "stop"}, "it is done", None),  # no telling: the model's own end
        ({"finish_reason": "length", "stop_reason": "END"}, "done", None),
    ],
)
def test_which_stop_sequence_ended_an_openai_answer(
    choice: dict[str, Any], text: str, expected: str | None
) -> None:
    assert tresp.matched_stop_sequence(choice, text, ["END", "##"]) == expected
    completion = {"choices": [{**choice, "index": 0, "message": {"content": text}}]}
    message = tresp.openai_to_anthropic(completion, model="m", stop_sequences=["END", "##"])
    assert message["stop_sequence"] == expected
    if expected is not None:
        assert message["stop_reason"] == "stop_sequence"
