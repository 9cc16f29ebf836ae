"""``model: "auto"``: picking the model a request runs on, by one written rule.

The rule. Among the catalog's models of the endpoint's kind that

1. are active and priced, and have at least one active upstream route;
2. the caller may use (the plan's model tiers and the key's ``allowed_models``);
3. have what the request needs: tool calling when it sends ``tools``, vision when a message
   holds an image, thinking when it asks for reasoning, JSON mode when it sets a
   ``response_format``, and a context window of at least the estimated input tokens plus the
   requested output tokens (``max_tokens`` / ``max_completion_tokens``, else 1,024),

the one with the lowest list price wins: input plus output price per 1M tokens for chat and
embedding models, the unit price for audio and image models. Ties go to the smaller model id, so
the same request always lands on the same model. The response and the usage record name the
model chosen, never "auto".
"""

from __future__ import annotations

from typing import Any

from gateway import errors, tokens
from gateway.auth import Caller
from gateway.catalog import ModelInfo, Snapshot

AUTO = "auto"
DEFAULT_OUTPUT_TOKENS = 1024
_IMAGE_PARTS = ("image_url", "image", "input_image")


def is_auto(body: dict[str, Any]) -> bool:
    return body.get("model") == AUTO


def price_key(model: ModelInfo) -> int:
    """What "cheapest" compares: micro-dollars per 1M tokens (in + out), or per unit."""
    if model.unit != "tokens":
        return model.unit_price_micros or 0
    return (model.input_price_micros or 0) + (model.output_price_micros or 0)


def needs(body: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """What the request needs from a model, as the rule reads it."""
    wanted: dict[str, Any] = {"tools": False, "vision": False, "thinking": False, "json": False}
    wanted["context_tokens"] = 0
    if kind != "chat":
        return wanted
    wanted["tools"] = bool(body.get("tools"))
    wanted["vision"] = _has_image(body.get("messages")) or _has_image(body.get("system"))
    thinking = body.get("thinking")
    wanted["thinking"] = bool(body.get("reasoning_effort")) or (
        isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    )
    fmt = body.get("response_format")
    wanted["json"] = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    requested = 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            requested = value
            break
    wanted["context_tokens"] = tokens.count_request(body) + (requested or DEFAULT_OUTPUT_TOKENS)
    return wanted


def _has_image(content: Any) -> bool:
    if isinstance(content, list):
        return any(_has_image(item) for item in content)
    if isinstance(content, dict):
        if content.get("type") in _IMAGE_PARTS:
            return True
        return _has_image(content.get("content"))
    return False


def _fits(model: ModelInfo, wanted: dict[str, Any]) -> bool:
    if wanted["tools"] and not model.supports_tools:
        return False
    if wanted["vision"] and not model.supports_vision:
        return False
    if wanted["thinking"] and not model.supports_thinking:
        return False
    if wanted["json"] and not model.supports_json:
        return False
    context = int(wanted["context_tokens"])
    return not (context and model.context_window and model.context_window < context)


def choose(snapshot: Snapshot, caller: Caller, body: dict[str, Any], *, kind: str) -> ModelInfo:
    """The model ``auto`` means for this request and caller (the rule is in the module doc)."""
    usable = [
        m
        for m in snapshot.ordered
        if m.kind == kind and m.is_priced and m.routes and caller.may_use(m.model_id, m.tier)
    ]
    if not usable:
        raise errors.ModelUnavailable(
            f"'auto' found no {kind} model your key may use that is priced and has a live route. "
            "Name a model instead; GET /v1/models lists yours.",
            param="model",
        )
    wanted = needs(body, kind=kind)
    fitting = [m for m in usable if _fits(m, wanted)]
    if not fitting:
        asked = [name for name in ("tools", "vision", "thinking", "json") if wanted[name]]
        if wanted["context_tokens"]:
            asked.append(f"a context window of {wanted['context_tokens']:,} tokens")
        raise errors.BadRequest(
            f"'auto' found no {kind} model your key may use with "
            f"{', '.join(asked) or 'what this request needs'}. Name a model, or ask for less.",
            param="model",
        )
    return min(fitting, key=lambda m: (price_key(m), m.model_id))
