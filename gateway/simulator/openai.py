"""The OpenAI side: chat completions (streamed and not), embeddings, audio, images, models."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.simulator import engine, media
from gateway.simulator.engine import Prompt, Reply
from gateway.simulator.serving import Call, Frame, Invalid, int_field, sse

MODELS = ("sim-gpt", "sim-claude", "sim-reasoner", "sim-embed", "sim-whisper", "sim-tts")
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "BAAI/bge-en-icl": 4096,
    "BAAI/bge-m3": 1024,
    "BAAI/bge-multilingual-gemma2": 3584,
    "intfloat/e5-mistral-7b-instruct": 4096,
    "nomic-ai/nomic-embed-text-v1.5": 768,
}
DEFAULT_EMBEDDING_DIMENSIONS = 1536
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_denied",
    404: "invalid_request_error",
    429: "requests",
}
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": _ERROR_CODES.get(status),
        }
    }


# --- chat completions ---------------------------------------------------------------------------


def prompt(
    body: dict[str, Any], model: str, *, per_byte: bool = False, ignore_mct: bool = False
) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise Invalid("messages must be an array of message objects", "messages")
    # The turn being answered: the last message that is not a system or developer note (agents
    # put reminders after the user's message).
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    last = turns[-1] if turns else {}
    raw_tools = body.get("tools")
    tools: list[Any] = raw_tools if isinstance(raw_tools, list) else []
    mode, forced = _tool_choice(body.get("tool_choice"))
    effort = body.get("reasoning_effort")
    return Prompt(
        user_text=_text(last.get("content")) if last.get("role") == "user" else "",
        tool_result=_text(last.get("content")) if last.get("role") == "tool" else None,
        images=engine.count_images(last.get("content")) if last.get("role") == "user" else 0,
        tools=tuple(tool for tool in map(_tool, tools) if tool.name),
        tool_mode=mode,
        forced_tool=forced,
        wants_reasoning=bool(effort and effort != "none") or engine.wants_reasoning_by_name(model),
        max_tokens=(
            int_field(body, "max_tokens")
            if ignore_mct
            else int_field(body, "max_completion_tokens", "max_tokens")
        ),
        seed=engine.digest(messages),
        input_tokens=engine.count_input(messages=messages, tools=tools, per_byte=per_byte),
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _tool(spec: Any) -> engine.Tool:
    function = spec.get("function", spec) if isinstance(spec, dict) else {}
    if not isinstance(function, dict):
        function = {}
    schema = function.get("parameters")
    name = function.get("name")
    return engine.Tool(
        name=name if isinstance(name, str) else "",
        schema=schema if isinstance(schema, dict) else {},
    )


def _tool_choice(choice: Any) -> tuple[Any, str | None]:
    if choice in ("none", "required"):
        return choice, None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return "required", choice["function"].get("name")
    return "auto", None


def _usage(call: Call, prompt: Prompt, reply: Reply) -> dict[str, Any]:
    output = reply.output_tokens
    if call.knobs.tokenizer == "alt":
        arguments = reply.tool_call.arguments if reply.tool_call else ""
        output = engine.count_alt(reply.reasoning_text + reply.content + arguments)
    return {
        "prompt_tokens": prompt.input_tokens,
        "completion_tokens": output,
        "total_tokens": prompt.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": len(reply.reasoning), "audio_tokens": 0},
    }


def _finish(reply: Reply) -> str:
    return {"stop": "stop", "length": "length", "tool": "tool_calls"}[reply.finish]


def _call_id(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"call_{reply.tool_call.id}"


async def chat(call: Call) -> None:
    parsed = prompt(
        call.body,
        call.model,
        per_byte=call.knobs.tokenizer == "bytes",
        ignore_mct=call.knobs.ignore_mct,
    )
    if call.knobs.tokenizer == "alt":
        messages = call.body.get("messages")
        alt = engine.count_input_alt(messages if isinstance(messages, list) else [])
        parsed = dataclasses.replace(parsed, input_tokens=alt)
    if call.body.get("stream") not in (None, True, False):
        raise Invalid("stream must be a boolean", "stream")
    reply, matched = engine.apply_stop(
        engine.plan(parsed, exact_tokens=call.knobs.tokens), call.body.get("stop")
    )
    if call.is_stream:
        options = call.body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        with_usage = with_usage and call.knobs.usage and call.knobs.stream_usage
        await call.play(_chunks(call, parsed, reply, with_usage=with_usage, matched=matched))
        return
    if call.knobs.gen_tps and not await call.exchange.pause(
        1000 * reply.output_tokens / call.knobs.gen_tps
    ):
        # The client left while we were generating: the work was done all the same.
        call.record(input_tokens=parsed.input_tokens, output_tokens=reply.output_tokens)
        return
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if reply.text or not reply.tool_call:
        message["content"] = reply.content
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning_text
    if reply.tool_call:
        message["tool_calls"] = [
            {
                "id": _call_id(reply),
                "type": "function",
                "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments},
            }
        ]
    payload = {
        **_envelope(call, "chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish(reply),
                # vLLM's field: the stop string that ended the answer (None: its own end).
                "stop_reason": matched,
            }
        ],
    }
    if call.knobs.usage:
        payload["usage"] = _usage(call, parsed, reply)
    await call.reply(payload, input_tokens=parsed.input_tokens, output_tokens=reply.output_tokens)


def _envelope(call: Call, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{call.response_id}",
        "object": kind,
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": "fp_simulator",
    }


def _chunks(
    call: Call, prompt: Prompt, reply: Reply, *, with_usage: bool, matched: str | None = None
) -> Iterator[Frame]:
    head = _envelope(call, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if finish:
            choice["stop_reason"] = matched
        return sse({**head, "choices": [choice]})

    first = {"role": "assistant", "content": None if reply.tool_call else "", "refusal": None}
    yield Frame(chunk(first), input_tokens=prompt.input_tokens)
    for token in reply.reasoning:
        yield Frame(chunk({"reasoning_content": token}), output_tokens=1)
    for token in reply.text:
        yield Frame(chunk({"content": token}), output_tokens=1)
    if reply.tool_call:
        tool = reply.tool_call
        opening = {"index": 0, "id": _call_id(reply), "type": "function"}
        opening["function"] = {"name": tool.name, "arguments": ""}
        yield Frame(chunk({"tool_calls": [opening]}), output_tokens=tool.name_tokens)
        for piece in tool.argument_tokens:
            fragment = {"index": 0, "function": {"arguments": piece}}
            yield Frame(chunk({"tool_calls": [fragment]}), output_tokens=1)
    yield Frame(chunk({}, _finish(reply)))
    if with_usage:
        yield Frame(sse({**head, "choices": [], "usage": _usage(call, prompt, reply)}))
    yield Frame(b"data: [DONE]\n\n")


# --- tokenizer endpoints (knob tokenizer=alt) ---------------------------------------------------


def tokenize(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's ``POST /tokenize`` (``messages``: the chat template applied; or ``prompt``, with
    ``add_special_tokens``) and llama.cpp's (``content``, ``add_special``), by the alt tokenizer."""
    messages = body.get("messages")
    if isinstance(messages, list):
        count = engine.count_input_alt(messages)
    else:
        text = body.get("prompt", body.get("content"))
        if not isinstance(text, str):
            raise Invalid("prompt, content or messages is required", "prompt")
        special = body.get("add_special_tokens", body.get("add_special", True)) is not False
        count = engine.count_alt(text) + (engine.ALT_BOS_TOKENS if special else 0)
    return {"count": count, "tokens": list(range(count)), "max_model_len": 32_768}


def tokenize_count(body: dict[str, Any]) -> dict[str, Any]:
    """llama-cpp-python's ``POST /extras/tokenize/count``: ``{"input"}`` -> ``{"count"}``, BOS
    included."""
    text = body.get("input")
    if not isinstance(text, str):
        raise Invalid("input must be a string", "input")
    return {"count": engine.ALT_BOS_TOKENS + engine.count_alt(text)}


# --- embeddings ---------------------------------------------------------------------------------


async def embeddings(call: Call) -> None:
    inputs = _embedding_inputs(call.body.get("input"))
    dimensions = int_field(call.body, "dimensions") or EMBEDDING_DIMENSIONS.get(
        call.model, DEFAULT_EMBEDDING_DIMENSIONS
    )
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        tokens += engine.count_tokens(item) if isinstance(item, str) else len(item)
        vector = media.unit_vector(orjson.dumps([call.model, item]), dimensions)
        embedding: Any = media.float32_base64(vector) if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    payload: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
    if call.knobs.usage:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    await call.reply(payload, input_tokens=tokens)


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value):
            return list(value)
    raise Invalid("input must be a string, an array of strings or of token arrays", "input")


# --- audio and images ---------------------------------------------------------------------------


async def transcriptions(call: Call) -> None:
    upload = call.body.get("file")
    if not isinstance(upload, bytes):
        raise Invalid("file is required", "file")
    tokens = engine.pseudo_tokens(b"audio:" + upload, 8 + min(len(upload) // 2_000, 120))
    text = "".join(tokens)
    seconds = media.audio_seconds(upload)
    kind = call.body.get("response_format") or "json"
    if kind in ("text", "srt", "vtt"):
        await call.reply_bytes(
            _captions(kind, text, seconds).encode(),
            content_type="text/plain; charset=utf-8",
            output_tokens=len(tokens),
        )
        return
    payload: dict[str, Any] = {"text": text}
    if kind == "verbose_json":
        payload = {"task": "transcribe", "language": "english", "duration": seconds, **payload}
        payload["segments"] = [_segment(text, seconds, len(tokens))]
    if call.knobs.usage:
        payload["usage"] = {"type": "duration", "seconds": max(1, round(seconds))}
    await call.reply(payload, output_tokens=len(tokens))


def _segment(text: str, seconds: float, tokens: int) -> dict[str, Any]:
    return {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": seconds,
        "text": text,
        "tokens": list(range(tokens)),
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }


def _captions(kind: str, text: str, seconds: float) -> str:
    if kind == "text":
        return text
    whole = int(seconds)
    millis = round((seconds - whole) * 1000)
    stamp = f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    if kind == "srt":
        return f"1\n00:00:00,000 --> {stamp},{millis:03d}\n{text}\n"
    return f"WEBVTT\n\n00:00:00.000 --> {stamp}.{millis:03d}\n{text}\n"


async def speech(call: Call) -> None:
    text = call.body.get("input")
    if not isinstance(text, str) or not text:
        raise Invalid("input must be a non-empty string", "input")
    duration = media.speech_ms(text)
    kind = call.body.get("response_format") or "mp3"
    if kind in ("wav", "pcm"):
        audio = media.wav(duration)
        body, content_type = (audio, "audio/wav") if kind == "wav" else (audio[44:], "audio/pcm")
    else:
        body, content_type = media.mp3(duration), "audio/mpeg"
    await call.reply_bytes(body, content_type=content_type)


async def images(call: Call) -> None:
    text = call.body.get("prompt")
    if not isinstance(text, str) or not text:
        raise Invalid("prompt must be a non-empty string", "prompt")
    count = int_field(call.body, "n") or 1
    as_url = call.body.get("response_format") == "url"
    data = []
    for index in range(count):
        b64 = base64.b64encode(media.png(engine.digest(call.model, text, index))).decode()
        data.append({"url": f"data:image/png;base64,{b64}"} if as_url else {"b64_json": b64})
    payload = {"created": int(time.time()), "data": data}
    await call.reply(payload)


# --- models -------------------------------------------------------------------------------------


def models() -> dict[str, Any]:
    data = [
        {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "simulator"}
        for name in MODELS
    ]
    return {"object": "list", "data": data}
