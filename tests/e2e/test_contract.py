"""Seed 000's contract on every API route: the error table (codes and envelopes on both surfaces)
and the rate-limit headers on every answer to a key. ``ROUTES`` lists every API route of the URL
map; a route added without an entry here fails ``test_every_api_route_has_an_entry``."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import Account
from billing import ledger
from billing.models import Plan
from gateway.models import CatalogModel
from tests import factories
from tests.e2e.test_media import png_bytes

pytestmark = pytest.mark.e2e

OPENAI, ANTHROPIC, PUBLIC = "openai", "anthropic", "public"
LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Token-Budget-Remaining",
)
API_PREFIXES = ("openai/", "anthropic/", "v1/")


def _wav(seconds: float = 1.0, rate: int = 8_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return out.getvalue()


HI: Any = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Call:
    """One route's calls: ``ok`` is answered with ``ok_status`` (a fake id's 404 counts: the key
    authenticated); ``bad`` (if given) is refused with a 400 ``bad_request``."""

    method: str
    path: str
    surface: str
    ok: dict[str, Any] = field(default_factory=dict)
    ok_status: int = 200
    bad: dict[str, Any] | None = None


def _chat(prefix: str) -> Call:
    return Call(
        "POST",
        f"{prefix}chat/completions",
        OPENAI,
        ok={"json": {"model": "sim-gpt", "messages": HI, "max_tokens": 5}},
        bad={"json": {"model": "sim-gpt", "messages": HI, "max_tokens": 5, "temperature": 2.5}},
    )


def _messages(prefix: str) -> Call:
    return Call(
        "POST",
        f"{prefix}messages",
        ANTHROPIC,
        ok={"json": {"model": "sim-claude", "messages": HI, "max_tokens": 5}},
        bad={"json": {"model": "sim-claude", "messages": HI, "max_tokens": 5, "top_p": 1.5}},
    )


def _count_tokens(prefix: str) -> Call:
    return Call(
        "POST",
        f"{prefix}messages/count_tokens",
        ANTHROPIC,
        ok={"json": {"model": "sim-claude", "messages": HI}},
        bad={"json": {"model": "sim-claude"}},
    )


def _media(prefix: str) -> dict[str, Call]:
    return {
        f"{prefix}embeddings": Call(
            "POST",
            f"{prefix}embeddings",
            OPENAI,
            ok={"json": {"model": "sim-embed", "input": "hi"}},
            bad={"json": {"model": "sim-embed"}},
        ),
        f"{prefix}audio/transcriptions": Call(
            "POST",
            f"{prefix}audio/transcriptions",
            OPENAI,
            ok={"data": {"model": "sim-whisper"}, "files": {"file": ("a.wav", _wav())}},
            bad={"data": {"model": "sim-whisper"}, "files": {"other": ("a.wav", b"x")}},
        ),
        f"{prefix}audio/speech": Call(
            "POST",
            f"{prefix}audio/speech",
            OPENAI,
            ok={"json": {"model": "sim-tts", "input": "hi", "voice": "alloy"}},
            bad={"json": {"model": "sim-tts", "voice": "alloy"}},
        ),
        f"{prefix}images/generations": Call(
            "POST",
            f"{prefix}images/generations",
            OPENAI,
            ok={"json": {"model": "sim-image", "prompt": "a cat"}},
            bad={"json": {"model": "sim-image"}},
        ),
        f"{prefix}responses/input_tokens": Call(
            "POST",
            f"{prefix}responses/input_tokens",
            OPENAI,
            ok={"json": {"model": "sim-gpt", "input": "hi"}},
            bad={"json": {"model": "sim-gpt", "input": 42}},
        ),
        f"{prefix}responses": Call(
            "POST",
            f"{prefix}responses",
            OPENAI,
            ok={"json": {"model": "sim-gpt", "input": "hi", "max_output_tokens": 5}},
            bad={"json": {"model": "sim-gpt", "input": "hi", "temperature": 3}},
        ),
    }


def _legacy_and_edits(prefix: str) -> dict[str, Call]:
    png = png_bytes(8, 8)
    return {
        f"{prefix}completions": Call(
            "POST",
            f"{prefix}completions",
            OPENAI,
            ok={"json": {"model": "sim-gpt", "prompt": "hi", "max_tokens": 5}},
            bad={"json": {"model": "sim-gpt", "prompt": "hi", "temperature": 3}},
        ),
        f"{prefix}audio/translations": Call(
            "POST",
            f"{prefix}audio/translations",
            OPENAI,
            ok={"data": {"model": "sim-whisper"}, "files": {"file": ("a.wav", _wav())}},
            bad={"data": {"model": "sim-whisper"}, "files": {"other": ("a.wav", b"x")}},
        ),
        f"{prefix}images/edits": Call(
            "POST",
            f"{prefix}images/edits",
            OPENAI,
            ok={
                "data": {"model": "sim-image", "prompt": "a hat"},
                "files": {"image": ("a.png", png, "image/png")},
            },
            bad={"data": {"model": "sim-image", "prompt": "a hat"}},
        ),
        f"{prefix}images/variations": Call(
            "POST",
            f"{prefix}images/variations",
            OPENAI,
            ok={"data": {"model": "sim-image"}, "files": {"image": ("a.png", png, "image/png")}},
            bad={"data": {"model": "sim-image"}},
        ),
    }


def _anthropic_files(prefix: str) -> dict[str, Call]:
    return {
        f"{prefix}files": Call(
            "GET", f"{prefix}files", ANTHROPIC, bad={"method": "POST", "data": {"x": "1"}}
        ),
        f"{prefix}files/<str:file_id>": Call(
            "GET", f"{prefix}files/file_nope", ANTHROPIC, ok_status=404
        ),
        f"{prefix}files/<str:file_id>/content": Call(
            "GET", f"{prefix}files/file_nope/content", ANTHROPIC, ok_status=404
        ),
    }


def _openai_batches(prefix: str) -> dict[str, Call]:
    return {
        f"{prefix}files": Call(
            "GET",
            f"{prefix}files",
            OPENAI,
            bad={"method": "POST", "data": {"purpose": "batch"}},
        ),
        f"{prefix}files/<str:file_id>": Call(
            "GET", f"{prefix}files/file-nope", OPENAI, ok_status=404
        ),
        f"{prefix}files/<str:file_id>/content": Call(
            "GET", f"{prefix}files/file-nope/content", OPENAI, ok_status=404
        ),
        f"{prefix}batches": Call(
            "GET", f"{prefix}batches", OPENAI, bad={"method": "POST", "json": {}}
        ),
        f"{prefix}batches/<str:batch_id>": Call(
            "GET", f"{prefix}batches/batch_nope", OPENAI, ok_status=404
        ),
        f"{prefix}batches/<str:batch_id>/cancel": Call(
            "POST", f"{prefix}batches/batch_nope/cancel", OPENAI, ok_status=404
        ),
    }


def _message_batches(prefix: str) -> dict[str, Call]:
    base = f"{prefix}messages/batches"
    return {
        base: Call("GET", base, ANTHROPIC, bad={"method": "POST", "json": {"requests": []}}),
        f"{base}/<str:batch_id>": Call("GET", f"{base}/msgbatch_nope", ANTHROPIC, ok_status=404),
        f"{base}/<str:batch_id>/cancel": Call(
            "POST", f"{base}/msgbatch_nope/cancel", ANTHROPIC, ok_status=404
        ),
        f"{base}/<str:batch_id>/results": Call(
            "GET", f"{base}/msgbatch_nope/results", ANTHROPIC, ok_status=404
        ),
    }


def _usage(path: str, surface: str) -> Call:
    return Call("GET", path, surface, bad={"params": {"period": "year"}})


ROUTES: dict[str, Call] = {
    "openai/v1/chat/completions": _chat("openai/v1/"),
    "v1/chat/completions": _chat("v1/"),
    "anthropic/v1/messages": _messages("anthropic/v1/"),
    "v1/messages": _messages("v1/"),
    "anthropic/v1/messages/count_tokens": _count_tokens("anthropic/v1/"),
    "v1/messages/count_tokens": _count_tokens("v1/"),
    "openai/v1/models": Call("GET", "openai/v1/models", OPENAI),
    "openai/v1/models/<path:model_id>": Call("GET", "openai/v1/models/sim-gpt", OPENAI),
    "anthropic/v1/models": Call(
        "GET", "anthropic/v1/models", ANTHROPIC, bad={"params": {"limit": "many"}}
    ),
    "anthropic/v1/models/<path:model_id>": Call("GET", "anthropic/v1/models/sim-claude", ANTHROPIC),
    "v1/models": Call("GET", "v1/models", OPENAI),
    "v1/models/<path:model_id>": Call("GET", "v1/models/nope", OPENAI, ok_status=404),
    **_media("openai/v1/"),
    **_media("v1/"),
    **_legacy_and_edits("openai/v1/"),
    **_legacy_and_edits("v1/"),
    **_anthropic_files("anthropic/v1/"),
    **_openai_batches("openai/v1/"),
    **_openai_batches("v1/"),
    **_message_batches("anthropic/v1/"),
    **_message_batches("v1/"),
    "v1/usage": _usage("v1/usage", OPENAI),
    "openai/v1/usage": _usage("openai/v1/usage", OPENAI),
    "anthropic/v1/usage": _usage("anthropic/v1/usage", ANTHROPIC),
    # The usage API's OpenAPI document and its docs page: public, no key.
    "v1/openapi.json": Call("GET", "v1/openapi.json", PUBLIC),
    "v1/docs": Call("GET", "v1/docs", PUBLIC),
    "v1/": Call("GET", "v1/", PUBLIC, ok_status=404),  # django-ninja's root: not served
}


def api_routes() -> set[str]:
    """Every route of the URL map under the API prefixes (the 404 fallbacks are regexes)."""
    found: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                found.add(prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns, "")
    return {route for route in found if route.startswith(API_PREFIXES)}


def test_every_api_route_has_an_entry() -> None:
    routes = api_routes()
    missing = sorted(routes - set(ROUTES))
    assert not missing, f"API routes without an entry in ROUTES: {missing}"
    assert not sorted(set(ROUTES) - routes), "entries for routes that no longer exist"


@pytest.fixture
def contract(live: dict[str, Any]) -> dict[str, Any]:
    """``live`` plus the media models, and an account on the Test plan (RPM, TPM and a token
    window, so every header has a value) with a balance for the unit-priced endpoints."""
    up = live["openai"]
    unit_priced = {"input_price_micros": None, "output_price_micros": None}
    factories.model(
        "sim-embed",
        routes=[(up, "sim-embed")],
        kind=CatalogModel.Kind.EMBEDDING,
        input_price_micros=20_000,
        output_price_micros=0,
    )
    for model_id, kind, unit in (
        ("sim-whisper", CatalogModel.Kind.TRANSCRIPTION, CatalogModel.Unit.SECONDS),
        ("sim-tts", CatalogModel.Kind.SPEECH, CatalogModel.Unit.CHARACTERS),
        ("sim-image", CatalogModel.Kind.IMAGE, CatalogModel.Unit.IMAGES),
    ):
        factories.model(
            model_id,
            routes=[(up, model_id)],
            kind=kind,
            unit=unit,
            unit_price_micros=100,
            **unit_priced,
        )
    acct = factories.account(owner=factories.UserFactory.create(), plan_slug="test")
    ledger.credit(account=acct, amount_micros=10_000_000, idempotency_key="contract-topup")
    _, secret = factories.api_key(acct)
    return {**live, "test_account": acct, "test_secret": secret}


def send(live: dict[str, Any], call: Call, secret: str | None, **kwargs: Any) -> httpx.Response:
    method = kwargs.pop("method", call.method)
    headers: dict[str, str] = {}
    if call.surface == ANTHROPIC:
        headers["anthropic-version"] = "2023-06-01"
        if secret:
            headers["x-api-key"] = secret
    elif secret:
        headers["authorization"] = f"Bearer {secret}"
    return httpx.request(
        method, f"{live['url']}/{call.path}", headers=headers, timeout=30, **kwargs
    )


def assert_error(response: httpx.Response, surface: str, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["x-request-id"]
    body = response.json()
    if surface == ANTHROPIC:
        kinds = {400: "invalid_request_error", 401: "authentication_error"}
        kinds |= {403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
        kinds |= {500: "api_error", 503: "overloaded_error"}
        assert body["type"] == "error" and response.headers["request-id"]
        assert (body["error"]["type"], body["error"]["code"]) == (kinds[status], code)
    else:
        assert body["error"]["code"] == code, body
        assert body["error"]["message"]


def assert_limit_headers(response: httpx.Response) -> None:
    values = {name: int(response.headers[name]) for name in LIMIT_HEADERS}
    assert 0 <= values["X-RateLimit-Remaining"] <= values["X-RateLimit-Limit"] == 30
    assert 0 <= values["X-Token-Budget-Remaining"] <= 1_000_000
    assert values["X-RateLimit-Reset"] % 60 == 0


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_the_route_answers_by_the_error_table_with_the_limit_headers(contract, route):
    call = ROUTES[route]
    if call.surface == PUBLIC:
        response = send(contract, call, None)
        assert response.status_code == call.ok_status, response.status_code
        return
    # No key: 401 unauthorized in the surface's envelope; no limits to show without a key.
    anonymous = send(contract, call, None, **call.ok)
    assert_error(anonymous, call.surface, 401, "unauthorized")
    assert not any(name in anonymous.headers for name in LIMIT_HEADERS)
    wrong = send(contract, call, "tf-prod-" + "x" * 40, **call.ok)
    assert_error(wrong, call.surface, 401, "unauthorized")

    secret = contract["test_secret"]
    answer = send(contract, call, secret, **call.ok)
    assert answer.status_code == call.ok_status, answer.text[:300]
    if call.ok_status == 404:
        assert_error(answer, call.surface, 404, answer.json()["error"].get("code", ""))
    assert_limit_headers(answer)
    if call.bad is not None:
        refused = send(contract, call, secret, **call.bad)
        assert_error(refused, call.surface, 400, "bad_request")
        assert_limit_headers(refused)


@pytest.mark.parametrize("surface", [OPENAI, ANTHROPIC])
def test_a_model_the_key_may_not_use_is_a_403_forbidden_with_the_headers(contract, surface):
    _, secret = factories.api_key(contract["test_account"], allowed_models=["sim-gpt"])
    call = _chat("openai/v1/") if surface == OPENAI else _messages("anthropic/v1/")
    body = {"model": "sim-claude", "messages": HI, "max_tokens": 5}
    refused = send(contract, call, secret, json=body)
    assert_error(refused, surface, 403, "forbidden")
    assert_limit_headers(refused)


@pytest.mark.parametrize("surface", [OPENAI, ANTHROPIC])
def test_an_upstream_that_cannot_serve_is_a_503_model_unavailable(contract, surface):
    factories.model("sim-down", routes=[(contract["openai"], "sim-gpt+status=500")])
    call = _chat("openai/v1/") if surface == OPENAI else _messages("anthropic/v1/")
    body = {"model": "sim-down", "messages": HI, "max_tokens": 5}
    failed = send(contract, call, contract["test_secret"], json=body)
    assert_error(failed, surface, 503, "model_unavailable")
    assert_limit_headers(failed)


def test_both_sdks_see_the_table_codes(contract):
    bad_key = "tf-prod-" + "y" * 40
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(
            base_url=f"{contract['url']}/openai/v1/", api_key=bad_key, max_retries=0
        ).models.list()
    assert caught.value.code == "unauthorized"
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(
            base_url=f"{contract['url']}/anthropic/", api_key=bad_key, max_retries=0
        ).messages.create(model="sim-claude", max_tokens=5, messages=HI)
    body: Any = refused.value.body
    assert body["error"]["code"] == "unauthorized"


def test_a_tpm_refusal_names_its_limit_on_both_surfaces(contract):
    acct = contract["test_account"]
    _, secret = factories.api_key(acct, tpm_limit=50)
    client = openai.OpenAI(base_url=f"{contract['url']}/openai/v1/", api_key=secret, max_retries=0)
    client.chat.completions.create(model="sim-gpt", messages=HI, max_tokens=40)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="sim-gpt", messages=HI, max_tokens=40)
    assert caught.value.code == "rate_limit_exceeded"
    error: Any = caught.value.body
    assert (error["type"], error["limit"]) == ("tokens", "tpm")
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert_limit_headers(caught.value.response)
    with pytest.raises(anthropic.RateLimitError) as refused:
        anthropic.Anthropic(
            base_url=f"{contract['url']}/anthropic/", api_key=secret, max_retries=0
        ).messages.create(model="sim-claude", max_tokens=40, messages=HI)
    body: Any = refused.value.body
    assert (body["error"]["code"], body["error"]["limit"]) == ("rate_limit_exceeded", "tpm")


def test_a_token_budget_refusal_shows_the_tokens_really_left(contract):
    """The reported case: 0 shown with 164 left, and a smaller call then succeeded. The header
    shows what is left, the refusal says so, and a request that fits is served."""
    Plan.objects.filter(slug="test").update(
        window_tokens=300, tpm_limit=None, account_tpm_limit=None
    )
    acct = factories.account(owner=factories.UserFactory.create(), plan_slug="test")
    _, secret = factories.api_key(acct)
    client = openai.OpenAI(base_url=f"{contract['url']}/openai/v1/", api_key=secret, max_retries=0)
    first = client.chat.completions.with_raw_response.create(
        model="sim-gpt", messages=HI, max_tokens=100
    )
    left = int(first.headers["X-Token-Budget-Remaining"])
    assert 0 < left < 300
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="sim-gpt", messages=HI, max_tokens=1000)
    assert caught.value.code == "token_budget_exceeded"
    error: Any = caught.value.body
    assert (error["type"], error["limit"]) == ("tokens", "token_window")
    # The header is the window left now (the first request settled at what it used, so more
    # than its reservation left); the message says the same number.
    shown = int(caught.value.response.headers["X-Token-Budget-Remaining"])
    assert left <= shown < 300
    assert f"{shown:,} tokens left" in caught.value.message
    # What is left is really there: a request that fits in it is served.
    served = client.chat.completions.with_raw_response.create(
        model="sim-gpt", messages=HI, max_tokens=5
    )
    assert served.http_response.status_code == 200
    assert int(served.headers["X-Token-Budget-Remaining"]) < shown
    assert Account.objects.get(pk=acct.pk).balance_micros == 0


# --- /v1/models: pricing and capabilities, and both SDKs still parse the list ----------------


def test_both_sdks_list_models_with_pricing_and_capabilities(contract):
    secret = contract["test_secret"]
    listed = openai.OpenAI(
        base_url=f"{contract['url']}/openai/v1/", api_key=secret, max_retries=0
    ).models.list()
    gpt = next(m for m in listed.data if m.id == "sim-gpt")
    extra: Any = gpt.model_extra
    assert extra["pricing"] == {
        "currency": "USD",
        "unit": "1M tokens",
        "input_micros": 1_000_000,
        "output_micros": 2_000_000,
        "cached_input_micros": None,
    }
    assert extra["capabilities"]["tools"] is True
    assert extra["capabilities"]["kind"] == "chat"
    assert extra["capabilities"]["context_window"] == 128_000
    tts = next(m for m in listed.data if m.id == "sim-tts")
    tts_extra: Any = tts.model_extra
    assert tts_extra["pricing"] == {"currency": "USD", "unit": "1M characters", "unit_micros": 100}

    client = anthropic.Anthropic(
        base_url=f"{contract['url']}/anthropic/", api_key=secret, max_retries=0
    )
    claude = next(m for m in client.models.list(limit=100).data if m.id == "sim-claude")
    assert claude.capabilities is not None
    assert claude.capabilities.image_input.supported is True
    assert claude.capabilities.thinking.types.enabled.supported is True
    assert claude.max_tokens == 8192 and claude.max_input_tokens == 128_000
    claude_extra: Any = claude.model_extra
    assert claude_extra["pricing"]["output_micros"] == 2_000_000
    one = client.models.retrieve("sim-claude")
    assert one.capabilities is not None and one.capabilities.structured_outputs.supported


# --- temperature and top_p: each surface's range ----------------------------------------------


def test_sampling_parameters_outside_the_surface_range_are_400s_and_never_sent(contract):
    secret = contract["test_secret"]
    oai = openai.OpenAI(base_url=f"{contract['url']}/openai/v1/", api_key=secret, max_retries=0)
    ant = anthropic.Anthropic(
        base_url=f"{contract['url']}/anthropic/", api_key=secret, max_retries=0
    )
    served = httpx.get(f"{contract['sim']}/_sim/stats").json()["requests"]
    refused: list[tuple[str, Any]] = []
    for param, value in (("temperature", 2.01), ("temperature", -0.1), ("top_p", 1.5)):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.chat.completions.create(
                model="sim-claude", messages=HI, max_tokens=5, **{param: value}
            )
        refused.append((param, caught.value.body))
        with pytest.raises(openai.BadRequestError):
            oai.responses.create(model="sim-gpt", input="hi", **{param: value})
    for param, value in (("temperature", 1.5), ("temperature", -1), ("top_p", 1.01)):
        with pytest.raises(anthropic.BadRequestError) as wrong:
            # (This SDK release no longer types temperature/top_p; the API still takes them.)
            ant.messages.create(
                model="sim-gpt", messages=HI, max_tokens=5, extra_body={param: value}
            )
        refused.append((param, wrong.value.body["error"]))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(
            model="sim-gpt", messages=HI, max_tokens=5, extra_body={"temperature": "hot"}
        )
    assert all(body["param"] == param for param, body in refused if "param" in body)
    assert all(body["code"] == "bad_request" for _, body in refused)
    assert httpx.get(f"{contract['sim']}/_sim/stats").json()["requests"] == served
    # The ends of each range are served.
    oai.chat.completions.create(model="sim-gpt", messages=HI, max_tokens=5, temperature=2)
    ant.messages.create(
        model="sim-claude", messages=HI, max_tokens=5, extra_body={"temperature": 1, "top_p": 1}
    )


# --- the simulator: the same conversation, the same reply ---------------------------------------


@pytest.mark.parametrize("model", ["sim-claude", "sim-gpt"])
def test_the_same_prompt_gets_the_same_reply_through_both_surfaces(contract, model):
    secret = contract["test_secret"]
    oai = openai.OpenAI(base_url=f"{contract['url']}/openai/v1/", api_key=secret, max_retries=0)
    ant = anthropic.Anthropic(
        base_url=f"{contract['url']}/anthropic/", api_key=secret, max_retries=0
    )
    text = "Tell me about the sea"
    via_openai = oai.chat.completions.create(
        model=model,
        max_tokens=30,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    )
    as_string = ant.messages.create(
        model=model,
        max_tokens=30,
        system="Be brief.",
        messages=[{"role": "user", "content": text}],
    )
    as_block = ant.messages.create(
        model=model,
        max_tokens=30,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
    )
    replies = {
        via_openai.choices[0].message.content,
        as_string.content[0].text,
        as_block.content[0].text,
    }
    assert len(replies) == 1 and replies != {""}, replies
    other = ant.messages.create(
        model=model, max_tokens=30, messages=[{"role": "user", "content": "Tell me about trees"}]
    )
    assert other.content[0].text not in replies
