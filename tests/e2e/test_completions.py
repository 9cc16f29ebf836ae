"""The legacy completions API through the official OpenAI SDK, against the running gateway in front
of the simulator: forwarded to an upstream that serves /completions, translated to chat for one
that does not (a 404 there, as OpenAI answers for chat models) and for an Anthropic-protocol
upstream; streamed and not; exactly one usage record each, billed on the upstream's usage."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from billing import money
from gateway import metering
from gateway.models import CatalogModel, ModelAlias, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

INPUT_PRICE = 1_000_000
OUTPUT_PRICE = 2_000_000


def oai(live: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=live["secret"], max_retries=0
    )


def records() -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(endpoint="completions").order_by("created_at"))


def sim_stats(live: dict[str, Any]) -> dict[str, Any]:
    return httpx.get(f"{live['sim']}/_sim/stats").json()


def sim_reset(live: dict[str, Any]) -> None:
    httpx.post(f"{live['sim']}/_sim/reset")


def cost(record: UsageRecord) -> int:
    return money.request_cost(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        input_price_micros=INPUT_PRICE,
        output_price_micros=OUTPUT_PRICE,
    )


@pytest.fixture
def instruct(live: dict[str, Any]) -> dict[str, Any]:
    """A model whose upstream serves /completions itself (an instruct model)."""
    factories.model("sim-instruct", routes=[(live["openai"], "sim-instruct")])
    return live


# sim-instruct: forwarded; sim-gpt: the upstream 404s /completions, so chat; sim-claude: Messages.
MODELS = ["sim-instruct", "sim-gpt", "sim-claude"]


@pytest.mark.parametrize("model", MODELS)
def test_it_completes_a_prompt_with_the_sdk_and_bills_the_upstreams_usage(instruct, model):
    client = oai(instruct)
    client.completions.create(model=model, prompt="warm up", max_tokens=2)  # learns the route
    sim_reset(instruct)
    done = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5)
    assert done.object == "text_completion"
    assert done.model == model
    (choice,) = done.choices
    assert choice.index == 0 and choice.text and choice.finish_reason == "length"
    stats = sim_stats(instruct)
    assert done.usage.prompt_tokens == stats["input_tokens"] > 0
    assert done.usage.completion_tokens == stats["output_tokens"] == 5
    record = records()[-1]
    assert record.status == 200 and record.model == model and not record.is_estimate
    assert (record.input_tokens, record.output_tokens) == (
        done.usage.prompt_tokens,
        done.usage.completion_tokens,
    )
    assert record.cost_micros == cost(record) > 0


@pytest.mark.parametrize("model", MODELS)
def test_it_streams_a_completion_with_usage_when_asked(instruct, model):
    client = oai(instruct)
    client.completions.create(model=model, prompt="warm up", max_tokens=2)
    sim_reset(instruct)
    stream = client.completions.create(
        model=model,
        prompt="Tell me a story",
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text and finishes[-1] == "length"
    assert all(c.object == "text_completion" and c.model == model for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    stats = sim_stats(instruct)
    assert (usage.prompt_tokens, usage.completion_tokens) == (stats["input_tokens"], 6)
    record = records()[-1]
    assert record.stream and record.status == 200 and not record.is_estimate
    assert (record.input_tokens, record.output_tokens) == (usage.prompt_tokens, 6)
    assert record.cost_micros == cost(record)


@pytest.mark.parametrize("model", ["sim-instruct", "sim-gpt"])
def test_a_stream_without_include_usage_has_no_usage_chunk_but_is_billed(instruct, model):
    chunks = list(
        oai(instruct).completions.create(model=model, prompt="hello", max_tokens=3, stream=True)
    )
    assert all(c.usage is None for c in chunks)
    record = records()[-1]
    assert record.output_tokens == 3 and record.input_tokens > 0 and not record.is_estimate


@pytest.mark.parametrize("model", MODELS)
def test_it_serves_several_prompts_and_echo(instruct, model):
    client = oai(instruct)
    done = client.completions.create(model=model, prompt=["first prompt", "second"], max_tokens=4)
    assert sorted(c.index for c in done.choices) == [0, 1]
    assert done.choices[0].text != done.choices[1].text
    record = records()[-1]
    assert record.output_tokens == done.usage.completion_tokens == 8
    echoed = client.completions.create(model=model, prompt="Echo me", echo=True, max_tokens=3)
    assert echoed.choices[0].text.startswith("Echo me")
    assert len(echoed.choices[0].text) > len("Echo me")
    streamed = client.completions.create(
        model=model, prompt="Echo me", echo=True, max_tokens=3, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices).startswith("Echo me")


def test_it_numbers_n_choices_per_prompt_and_passes_stop(instruct):
    # The simulator's chat side answers one choice and ignores stop; its /completions honours both.
    client = oai(instruct)
    done = client.completions.create(
        model="sim-instruct", prompt=["first prompt", "second prompt"], n=2, max_tokens=4
    )
    assert sorted(c.index for c in done.choices) == [0, 1, 2, 3]
    assert records()[-1].output_tokens == done.usage.completion_tokens == 16
    said = client.completions.create(
        model="sim-instruct", prompt="[[say: alpha beta STOP gamma]]", stop=["STOP"], max_tokens=10
    )
    assert said.choices[0].text.strip() == "alpha beta"
    assert said.choices[0].finish_reason == "stop"


def test_it_streams_several_prompts_translated(instruct):
    chunks = list(
        oai(instruct).completions.create(
            model="sim-claude",
            prompt=["one", "two"],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert sorted(texts) == [0, 1] and all(texts.values())
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert records()[-1].output_tokens == 6


def test_an_upstream_that_serves_completions_gets_logprobs_suffix_and_token_prompts(instruct):
    client = oai(instruct)
    done = client.completions.create(
        model="sim-instruct", prompt=[1, 2, 3], logprobs=2, suffix="end", max_tokens=3
    )
    assert done.usage.prompt_tokens == 3
    logprobs = done.choices[0].logprobs
    assert logprobs is not None and len(logprobs.tokens or []) == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": 1}, "logprobs"),
        ({"suffix": "tail"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"max_tokens": 0, "echo": True}, "max_tokens"),
    ],
)
def test_it_refuses_what_a_chat_upstream_cannot_do_at_no_cost(instruct, fields, param):
    client = oai(instruct)
    body: dict[str, Any] = {"model": "sim-claude", "prompt": "hi", "max_tokens": 3, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**body)
    assert caught.value.body["param"] == param
    (record,) = records()
    assert record.status == 400 and record.cost_micros == 0 and record.billed_micros == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": [{"text": "x"}]}, "prompt"),
        ({"n": 0}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": 9}, "logprobs"),
    ],
)
def test_it_refuses_bad_input_in_the_openai_envelope(instruct, fields, param):
    response = httpx.post(
        f"{instruct['url']}/v1/completions",
        json={"model": "sim-instruct", "prompt": "hi", **fields},
        headers={"authorization": f"Bearer {instruct['secret']}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    (record,) = records()
    assert record.cost_micros == 0


def test_it_defaults_to_sixteen_tokens_like_openai(instruct):
    done = oai(instruct).completions.create(model="sim-gpt", prompt="a long story please")
    assert done.usage.completion_tokens == 16
    assert done.choices[0].finish_reason == "length"


@pytest.mark.parametrize("model", MODELS)
def test_a_client_that_hangs_up_mid_stream_is_billed_what_it_got_once(instruct, model):
    upstream = instruct["anthropic"] if model == "sim-claude" else instruct["openai"]
    factories.model(f"{model}-long", routes=[(upstream, f"{model}+tps=50+tokens=400")])
    with httpx.stream(
        "POST",
        f"{instruct['url']}/openai/v1/completions",
        json={"model": f"{model}-long", "prompt": "go", "max_tokens": 400, "stream": True},
        headers={"authorization": f"Bearer {instruct['secret']}"},
    ) as response:
        assert response.status_code == 200
        for i, _ in enumerate(response.iter_raw()):
            if i >= 3:
                break
    deadline = time.monotonic() + 5
    while not records() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a second record would have arrived by now
    (record,) = records()
    assert (record.status, record.error_code) == (499, "client_disconnected")
    assert 0 < record.output_tokens < 100


@pytest.mark.parametrize("model", MODELS)
def test_an_alias_serves_completions_under_the_name_asked_for(instruct, model):
    ModelAlias.objects.create(name="legacy-*", model=CatalogModel.objects.get(model_id=model))
    client = oai(instruct)
    done = client.completions.create(model="legacy-text", prompt="hi", max_tokens=3)
    assert done.model == "legacy-text"
    chunks = list(
        client.completions.create(model="legacy-text", prompt="hi", max_tokens=3, stream=True)
    )
    assert {c.model for c in chunks} == {"legacy-text"}
    assert {r.model for r in records()} == {model}


def test_several_prompts_bill_those_served_when_a_later_one_fails(live, settings):
    """Translated to chat, the prompts run one by one: when the second fails, the first was
    still served by the upstream, and it is billed (the record says the request failed)."""
    settings.GATEWAY_MAX_ATTEMPTS = 1  # no retry: the second prompt's failure ends the request
    # The simulator's 1st request for it is the /completions try (a 404: a chat model), the 2nd
    # the first prompt as chat, the 3rd the second prompt: that one fails.
    factories.model("partial-gpt", routes=[(live["openai"], "partial-gpt+fail_every=3")])
    sim_reset(live)
    with pytest.raises(openai.APIStatusError) as failed:
        oai(live).completions.create(
            model="partial-gpt", prompt=["first prompt", "second prompt"], max_tokens=4
        )
    assert failed.value.status_code >= 500
    (record,) = [r for r in records() if r.model == "partial-gpt"]
    assert record.status == failed.value.status_code
    assert record.output_tokens == 4 and record.input_tokens > 0  # the first prompt's
    assert record.cost_micros == cost(record) > 0
