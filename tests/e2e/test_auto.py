"""model="auto": the cheapest model the caller may use that can serve the request (the rule is
written in gateway/auto.py), named in the answer and in the usage record."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway import metering
from gateway.models import CatalogModel, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="  # noqa: E501
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(live: dict[str, Any], secret: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=secret or live["secret"], max_retries=0
    )


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters))


@pytest.fixture
def catalog(live: dict[str, Any]) -> dict[str, Any]:
    """sim-gpt and sim-claude cost $1 + $2 per 1M; add a cheap text-only model with a small
    context window, and a cheaper one still that has no route."""
    up = live["openai"]
    factories.model(
        "sim-cheap",
        routes=[(up, "sim-gpt")],
        input_price_micros=100_000,
        output_price_micros=200_000,
        supports_tools=False,
        supports_vision=False,
        context_window=2_000,
    )
    factories.model("sim-unrouted", input_price_micros=1, output_price_micros=1)
    return live


def test_it_picks_the_cheapest_model_that_fits(catalog):
    done = client(catalog).responses.create(model="auto", input="[[say: cheap]]")
    assert done.model == "sim-cheap"
    (record,) = records(endpoint="responses")
    assert record.model == "sim-cheap"
    assert record.route == "sim-openai:sim-gpt"


def test_it_skips_models_without_tools_when_the_request_has_tools(catalog):
    done = client(catalog).responses.create(model="auto", input="Hello", tools=[WEATHER])
    # sim-claude and sim-gpt tie on price; the smaller model id wins.
    assert done.model == "sim-claude"


def test_it_skips_models_without_vision_for_an_image(catalog):
    image = {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}"}
    done = client(catalog).responses.create(
        model="auto",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What?"}, image]}],
    )
    assert done.model == "sim-claude"


def test_it_skips_models_whose_context_window_is_too_small(catalog):
    done = client(catalog).responses.create(
        model="auto", input="[[say: long]]", max_output_tokens=5_000
    )
    assert done.model == "sim-claude"


def test_it_only_picks_models_the_key_may_use(catalog):
    _, secret = factories.api_key(catalog["account"], name="gpt only", allowed_models=["sim-gpt"])
    done = client(catalog, secret).responses.create(model="auto", input="[[say: hi]]")
    assert done.model == "sim-gpt"


def test_it_refuses_clearly_when_nothing_fits(catalog):
    _, secret = factories.api_key(catalog["account"], name="cheap", allowed_models=["sim-cheap"])
    with pytest.raises(openai.BadRequestError) as caught:
        client(catalog, secret).responses.create(model="auto", input="Hi", tools=[WEATHER])
    assert "tools" in caught.value.message
    assert caught.value.code == "bad_request"
    (record,) = records(endpoint="responses")
    assert record.status == 400 and record.cost_micros == 0


def test_it_picks_the_cheapest_embedding_model(catalog):
    for model_id, price in (("embed-a", 50_000), ("embed-b", 20_000)):
        factories.model(
            model_id,
            routes=[(catalog["openai"], "sim-embed")],
            kind=CatalogModel.Kind.EMBEDDING,
            input_price_micros=price,
            output_price_micros=0,
        )
    done = client(catalog).embeddings.create(model="auto", input="hello")
    assert done.model == "embed-b"
    (record,) = records(endpoint="embeddings")
    assert record.model == "embed-b"


def test_chat_completions_accept_auto_too(catalog):
    """Needs exchange.resolve_model to call gateway.auto.choose for "auto"."""
    done = client(catalog).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "[[say: via chat]]"}]
    )
    assert done.model == "sim-cheap"
    assert done.choices[0].message.content == "via chat"
    (record,) = records(endpoint="chat")
    assert record.model == "sim-cheap"
