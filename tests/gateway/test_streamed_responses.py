"""Streamed responses (SSE on every surface) go out to the caller as the upstream wrote them: each
frame as it comes, whole, none held back to be sent with the next."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests import factories

PROMPT = [{"role": "user", "content": "hi"}]
# case: (path, body, upstream, upstream model)
CASES = {
    "chat completions": (
        "/openai/v1/chat/completions",
        {"messages": PROMPT, "stream": True},
        "openai",
        "sim-gpt",
    ),
    "anthropic messages": (
        "/anthropic/v1/messages",
        {"messages": PROMPT, "max_tokens": 50, "stream": True},
        "anthropic",
        "sim-claude",
    ),
    "responses": ("/openai/v1/responses", {"input": "hi", "stream": True}, "openai", "sim-gpt"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_each_frame_goes_out_whole_as_it_arrives(live: dict[str, Any], case: str) -> None:
    path, body, upstream, name = CASES[case]
    factories.model("sim-paced", routes=[(live[upstream], f"{name}+tps=20+tokens=6")])
    arrivals: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{live['url']}{path}",
        json={"model": "sim-paced", **body},
        headers={"authorization": f"Bearer {live['secret']}", "x-api-key": live["secret"]},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    # Whole frames only, never one split across two writes...
    assert all(chunk.endswith(b"\n\n") for _, chunk in arrivals)
    # ...and the six paced tokens came in at least six writes, spread over the upstream's pace
    # (50 ms a token) rather than gathered into one at the end.
    assert len(arrivals) >= 6
    assert arrivals[-1][0] - arrivals[0][0] > 0.2
