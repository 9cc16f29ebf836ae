"""System messages inside ``messages`` on the Anthropic surface (the 2026 SDK's
``SystemMessageParam``; Claude Code on a non-Claude model sends ``messages[1].role ==
"system"``): accepted, translated in place for OpenAI-protocol upstreams and folded for
Anthropic-protocol ones (the simulator refuses any role but user and assistant there, as the
API long did), streamed and not, and counted by count_tokens."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from gateway import metering
from gateway.models import UsageRecord

pytestmark = pytest.mark.e2e

MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": 'Make a file. [[call: Write {"file_path": "/tmp/x"}]]'},
    {"role": "system", "content": [{"type": "text", "text": "Use absolute paths."}]},
    {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {"file_path": "/x"}}
        ],
    },
    {"role": "system", "content": "Report briefly.", "clear_at": "never"},
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "written"},
            {"type": "text", "text": "[[say: all done]]"},
        ],
    },
    {"role": "system", "content": "Answer in English."},
]
WRITE = {
    "name": "Write",
    "description": "Write a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
}


def client(live: dict[str, Any]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic", api_key=live["secret"], max_retries=0
    )


@pytest.mark.parametrize("model", ["sim-claude", "sim-gpt"])
def test_system_messages_in_a_tool_loop_reach_either_upstream(live, model):
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 100,
        "system": "You are a coding agent.",
        "messages": MESSAGES,
        "tools": [WRITE],
    }
    done = client(live).messages.create(**body)
    assert done.stop_reason == "end_turn"
    assert done.content[0].text == "all done"
    with client(live).messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "all done"
    first = client(live).messages.create(**{**body, "messages": MESSAGES[:2]})
    assert first.stop_reason == "tool_use"
    assert first.content[-1].input == {"file_path": "/tmp/x"}
    metering.drain()
    rows = UsageRecord.objects.filter(model=model)
    assert [r.status for r in rows] == [200, 200, 200]
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in rows)


@pytest.mark.parametrize("model", ["sim-claude", "sim-gpt"])
def test_count_tokens_counts_system_messages(live, model):
    with_notes = client(live).messages.count_tokens(model=model, messages=MESSAGES)
    without = client(live).messages.count_tokens(
        model=model, messages=[m for m in MESSAGES if m["role"] != "system"]
    )
    assert with_notes.input_tokens > without.input_tokens > 0


def test_only_system_messages_is_a_clear_400(live):
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(live).messages.create(
            model="sim-claude",
            max_tokens=10,
            messages=[{"role": "system", "content": "rules"}],
        )
    assert "at least one user message" in refused.value.message
    with pytest.raises(anthropic.BadRequestError) as wrong:
        client(live).messages.create(
            model="sim-gpt",
            max_tokens=10,
            messages=[{"role": "tool", "content": "x"}],
        )
    assert "not one of user, assistant, system" in wrong.value.message
    metering.drain()
    assert all(r.cost_micros == 0 for r in UsageRecord.objects.all())
