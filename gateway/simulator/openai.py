"""The OpenAI side: chat completions (streamed and not), embeddings, audio, images, models."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
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
        seed=engine.conversation_seed(messages=messages),
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


# --- legacy completions -------------------------------------------------------------------------

# Like OpenAI, only instruct and base models serve /v1/completions; a chat model gets a 404.
_COMPLETION_MODELS = ("instruct", "davinci", "babbage", "base")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _completion_prompts(value: Any) -> list[tuple[str, int]]:
    """Each prompt's text and its input tokens (token ids read as words ``t<id>``)."""
    one_token_array = isinstance(value, list) and value and all(isinstance(v, int) for v in value)
    if isinstance(value, str) or one_token_array:
        value = [value]
    if not isinstance(value, list) or not value:
        raise Invalid("prompt must be a string, an array of strings or of token arrays", "prompt")
    out: list[tuple[str, int]] = []
    for item in value:
        if isinstance(item, str):
            out.append((item, engine.count_tokens(item)))
        elif isinstance(item, list) and item and all(isinstance(i, int) for i in item):
            out.append(("".join(f" t{i}" for i in item), len(item)))
        else:
            raise Invalid("each prompt must be a string or an array of token ids", "prompt")
    return out


def _stopped(tokens: list[str], stop: Any) -> tuple[list[str], bool]:
    """Tokens up to the first stop sequence (which is left out), and whether one was found."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    text = ""
    for i, token in enumerate(tokens):
        text += token
        for sequence in stops:
            if isinstance(sequence, str) and sequence and sequence in text:
                return tokens[:i], True
    return tokens, False


def _logprobs(tokens: list[str], top: int, offset: int) -> dict[str, Any]:
    token_logprobs = [-round(0.1 + (len(t) % 7) / 10, 3) for t in tokens]
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": [{t: lp} for t, lp in zip(tokens, token_logprobs, strict=True)]
        if top
        else None,
        "text_offset": offsets,
    }


async def completions(call: Call) -> None:
    if not any(part in call.model for part in _COMPLETION_MODELS):
        message = (
            "This is a chat model and not supported in the v1/completions endpoint. "
            "Did you mean to use v1/chat/completions?"
        )
        await call.exchange.respond_json(
            404, error_body(404, message, param="model"), headers=call.headers
        )
        return
    prompts = _completion_prompts(call.body.get("prompt"))
    n = int_field(call.body, "n") or 1
    max_tokens = int_field(call.body, "max_tokens")
    if max_tokens is None:
        max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    echo = call.body.get("echo") is True
    top = int_field(call.body, "logprobs")
    suffix = call.body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise Invalid("suffix must be a string", "suffix")
    choices: list[dict[str, Any]] = []
    input_tokens = sum(tokens for _, tokens in prompts)
    output_tokens = 0
    for p, (text, _) in enumerate(prompts):
        for j in range(n):
            said = engine.tokenize(text)
            planned = engine.plan(
                engine.Prompt(
                    user_text=text,
                    tool_result=None,
                    images=0,
                    tools=(),
                    tool_mode="none",
                    forced_tool=None,
                    wants_reasoning=False,
                    max_tokens=max_tokens,
                    seed=engine.digest(call.model, text, j),
                    input_tokens=len(said),
                ),
                exact_tokens=call.knobs.tokens,
            )
            generated, stopped = _stopped(planned.text, call.body.get("stop"))
            output_tokens += len(generated)
            finish = "stop" if stopped or planned.finish != "length" else "length"
            shown = (engine.tokenize(text) if echo else []) + generated
            choice: dict[str, Any] = {
                "text": "".join(shown),
                "index": p * n + j,
                "logprobs": None if top is None else _logprobs(shown, top, 0),
                "finish_reason": finish,
            }
            choices.append(choice)
    envelope = {**_envelope(call, "text_completion"), "id": f"cmpl-{call.response_id}"}
    usage = {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    if call.is_stream:
        options = call.body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        await call.play(
            _completion_frames(
                envelope, choices, usage if with_usage and call.knobs.usage else None, input_tokens
            )
        )
        return
    payload = {**envelope, "choices": choices}
    if call.knobs.usage:
        payload["usage"] = usage
    await call.reply(payload, input_tokens=input_tokens, output_tokens=output_tokens)


def _completion_frames(
    envelope: dict[str, Any],
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    input_tokens: int,
) -> Iterator[Frame]:
    first = True
    for choice in choices:
        for token in engine.tokenize(choice["text"]) or [""]:
            piece = {
                "text": token,
                "index": choice["index"],
                "logprobs": None,
                "finish_reason": None,
            }
            yield Frame(
                sse({**envelope, "choices": [piece]}),
                output_tokens=1,
                input_tokens=input_tokens if first else 0,
            )
            first = False
        done = {
            "text": "",
            "index": choice["index"],
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
        }
        yield Frame(sse({**envelope, "choices": [done]}))
    if usage is not None:
        yield Frame(sse({**envelope, "choices": [], "usage": usage}))
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
    await _audio_text(call, task="transcribe")


async def translations(call: Call) -> None:
    """Like OpenAI's: always into English, and no ``language`` field (a 400 names it)."""
    if "language" in call.body:
        raise Invalid("Unrecognized request argument supplied: language", "language")
    await _audio_text(call, task="translate")


async def _audio_text(call: Call, *, task: str) -> None:
    upload = call.body.get("file")
    if not isinstance(upload, bytes):
        raise Invalid("file is required", "file")
    seed = (b"audio:" if task == "transcribe" else b"english:") + upload
    tokens = engine.pseudo_tokens(seed, 8 + min(len(upload) // 2_000, 120))
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
        payload = {"task": task, "language": "english", "duration": seconds, **payload}
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


_IMAGE_KINDS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF")


async def image_edits(call: Call) -> None:
    """Edits as OpenAI answers them: a prompt is required; images must be PNG, JPEG or WebP
    (dall-e-2: one square PNG); a mask must be a PNG the size of the first image."""
    text = call.body.get("prompt")
    if not isinstance(text, str) or not text:
        raise Invalid("prompt must be a non-empty string", "prompt")
    found = call.body.get("image")
    images = found if isinstance(found, list) else [found] if isinstance(found, bytes) else []
    if not images:
        raise Invalid("image is required", "image")
    for data in images:
        if not data.startswith(_IMAGE_KINDS):
            raise Invalid(
                "Invalid image file or mode for image 1, please check your image file.", "image"
            )
    if call.model.startswith("dall-e-2") and (len(images) > 1 or not _square_png(images[0])):
        raise Invalid("Uploaded image must be a PNG and square.", "image")
    mask = call.body.get("mask")
    if mask is not None:
        if not isinstance(mask, bytes) or media.png_size(mask) is None:
            raise Invalid("Invalid mask image file, please check your mask file.", "mask")
        first = media.png_size(images[0])
        if first is not None and media.png_size(mask) != first:
            raise Invalid("Invalid mask: image and mask must have the same dimensions.", "mask")
    await _image_reply(call, b"edit:" + text.encode() + b"".join(images))


async def image_variations(call: Call) -> None:
    """Variations take one square PNG (dall-e-2's rule) and no prompt."""
    image = call.body.get("image")
    if not isinstance(image, bytes):
        raise Invalid("image is required", "image")
    if not _square_png(image):
        raise Invalid("Uploaded image must be a PNG and square.", "image")
    await _image_reply(call, b"variation:" + image)


def _square_png(data: bytes) -> bool:
    size = media.png_size(data)
    return size is not None and size[0] == size[1]


async def _image_reply(call: Call, seed: bytes) -> None:
    raw_n = call.body.get("n") or "1"
    if not isinstance(raw_n, str) or not raw_n.isdigit() or not 1 <= int(raw_n) <= 10:
        raise Invalid("n must be an integer from 1 to 10", "n")
    as_url = call.body.get("response_format") == "url"
    data = []
    key = hashlib.sha256(seed).hexdigest()
    for index in range(int(raw_n)):
        b64 = base64.b64encode(media.png(engine.digest(call.model, key, index))).decode()
        data.append({"url": f"data:image/png;base64,{b64}"} if as_url else {"b64_json": b64})
    await call.reply({"created": int(time.time()), "data": data})


# --- models -------------------------------------------------------------------------------------


def models() -> dict[str, Any]:
    data = [
        {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "simulator"}
        for name in MODELS
    ]
    return {"object": "list", "data": data}
