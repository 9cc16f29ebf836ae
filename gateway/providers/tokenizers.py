"""Counting tokens with an upstream's own tokenizer, for the answers it sent without usage (a
stream from a server that ignores ``stream_options.include_usage``).

Each kind of server has its own endpoint (``Provider.tokenizer``; ``tokenizer_url`` when it is
not at its usual place, the server's root being the base URL without a trailing ``/v1``):

- ``vllm``: ``POST /tokenize`` with the chat ``messages`` (the server applies its chat template),
  and with ``prompt`` and no special tokens for the answer; both answer ``{"count": n}``.
- ``llama.cpp``: ``POST /apply-template`` with the ``messages`` gives the prompt, ``POST
  /tokenize`` with ``{"content", "add_special": true}`` its tokens; the answer is tokenized
  without special tokens.
- ``llama-cpp-python``: ``POST /extras/tokenize/count`` with ``{"input"}`` counts a text (with
  the model's BOS token: the count of ``""`` is taken off the answer's). The server has no
  template endpoint, so the prompt is rendered here in the chat format of the model's family
  (``CHAT_FORMATS``: Gemma for a model whose name says gemma, ChatML otherwise), as
  ``llama_cpp.server`` renders it for ``--chat_format gemma`` / ``chatml``.

Every call is bounded by ``TIMEOUT_S`` in all; a tokenizer that fails or is slow gives None, and
the caller falls back to our estimate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from gateway.catalog import RouteInfo
from gateway.providers.base import http_client

logger = logging.getLogger("tokenfactory.upstream")

# How long a stream's end may wait for the upstream's tokenizer before we estimate instead.
TIMEOUT_S = 2.0

KINDS = ("vllm", "llama.cpp", "llama-cpp-python")


def server_root(route: RouteInfo) -> str:
    base = route.base_url.rstrip("/")
    return base.removesuffix("/v1")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def render_gemma(messages: list[dict[str, Any]]) -> str:
    """llama-cpp-python's ``gemma`` chat format: user and assistant turns (system messages are
    dropped), then the model's turn opened."""
    roles = {"user": "<start_of_turn>user\n", "assistant": "<start_of_turn>model\n"}
    out = ""
    for message in messages:
        role = roles.get(str(message.get("role")))
        if role is None:
            continue
        content = message.get("content")
        # As llama-cpp-python does: a turn without a non-empty string content is its role alone.
        out += role + content + "<end_of_turn>\n" if isinstance(content, str) and content else role
    return out + roles["assistant"]


def render_chatml(messages: list[dict[str, Any]]) -> str:
    """llama-cpp-python's ``chatml`` chat format."""
    out = ""
    for message in messages:
        role = str(message.get("role"))
        out += f"<|im_start|>{role}\n{_text(message.get('content'))}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


CHAT_FORMATS: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "gemma": render_gemma,
    "chatml": render_chatml,
}


def chat_format(upstream_model: str) -> str:
    return "gemma" if "gemma" in upstream_model.lower() else "chatml"


async def _post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> Any:
    response = await http_client().post(
        url, content=orjson.dumps(payload), headers={**headers, "content-type": "application/json"}
    )
    response.raise_for_status()
    return orjson.loads(response.content)


async def _vllm(
    route: RouteInfo, url: str, messages: list[dict[str, Any]], text: str, h: dict[str, str]
) -> tuple[int, int]:
    url = url or server_root(route) + "/tokenize"
    model = route.upstream_model
    prompt, answer = await asyncio.gather(
        _post(url, {"model": model, "messages": messages}, h),
        _post(url, {"model": model, "prompt": text, "add_special_tokens": False}, h),
    )
    return int(prompt["count"]), int(answer["count"])


async def _llama_cpp(
    route: RouteInfo, url: str, messages: list[dict[str, Any]], text: str, h: dict[str, str]
) -> tuple[int, int]:
    root = server_root(route)
    url = url or root + "/tokenize"
    templated = await _post(root + "/apply-template", {"messages": messages}, h)
    prompt, answer = await asyncio.gather(
        _post(url, {"content": str(templated["prompt"]), "add_special": True}, h),
        _post(url, {"content": text, "add_special": False}, h),
    )
    return len(prompt["tokens"]), len(answer["tokens"])


async def _llama_cpp_python(
    route: RouteInfo, url: str, messages: list[dict[str, Any]], text: str, h: dict[str, str]
) -> tuple[int, int]:
    url = url or server_root(route) + "/extras/tokenize/count"
    rendered = CHAT_FORMATS[chat_format(route.upstream_model)](messages)
    prompt, answer, empty = await asyncio.gather(
        _post(url, {"input": rendered}, h),
        _post(url, {"input": text}, h),
        _post(url, {"input": ""}, h),
    )
    bos = int(empty["count"])
    return int(prompt["count"]), max(0, int(answer["count"]) - bos)


_COUNTERS = {"vllm": _vllm, "llama.cpp": _llama_cpp, "llama-cpp-python": _llama_cpp_python}


async def count(
    route: RouteInfo, messages: list[dict[str, Any]], text: str, headers: dict[str, str]
) -> tuple[int, int] | None:
    """``(prompt tokens, answer tokens)`` by the upstream's own tokenizer, or None when the
    provider has none we can call, or it failed or took longer than ``TIMEOUT_S``."""
    counter = _COUNTERS.get(route.tokenizer)
    if counter is None:
        return None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await counter(route, route.tokenizer_url, messages, text, headers)
    except (
        TimeoutError,
        httpx.HTTPError,
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        logger.warning(
            "the %s tokenizer of %s did not count (%s); estimating instead",
            route.tokenizer,
            route.provider_slug,
            type(exc).__name__,
        )
        return None
