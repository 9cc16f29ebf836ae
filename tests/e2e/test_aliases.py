"""Model aliases: names and glob patterns an operator maps to catalog models (gateway/catalog.py
``candidates``), resolved from the catalog snapshot, answered under the name the client asked
for, recorded with both names, and never widening what a key or plan may use."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from django.conf import settings
from django.test import Client

from gateway import catalog, metering, store
from gateway.catalog_seed import ALIASES
from gateway.models import CatalogModel, ModelAlias, UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e


def oai(live: dict[str, Any], secret: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live['url']}/openai/v1/", api_key=secret or live["secret"], max_retries=0
    )


def claude(live: dict[str, Any], secret: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{live['url']}/anthropic", api_key=secret or live["secret"], max_retries=0
    )


def alias(name: str, model_id: str, *, priority: int = 0, is_active: bool = True) -> ModelAlias:
    made = ModelAlias.objects.create(
        name=name,
        model=CatalogModel.objects.get(model_id=model_id),
        priority=priority,
        is_active=is_active,
    )
    catalog.invalidate()
    return made


def records(**filters: Any) -> list[UsageRecord]:
    metering.drain()
    return list(UsageRecord.objects.filter(**filters).order_by("created_at"))


def ask(live: dict[str, Any], model: str, secret: str | None = None) -> Any:
    return claude(live, secret).messages.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "[[say: hi]]"}]
    )


def test_it_serves_a_pattern_under_the_name_asked_for(live):
    alias("claude-opus-*", "sim-claude")
    done = ask(live, "claude-opus-4-8[1m]")
    assert done.model == "claude-opus-4-8[1m]"
    assert done.content[0].text == "hi"
    (record,) = records()
    assert record.model == "sim-claude"
    assert record.requested_model == "claude-opus-4-8[1m]"
    assert record.route == "sim-anthropic:sim-claude"
    assert record.cost_micros > 0


def test_it_names_the_alias_in_a_stream_on_either_surface(live):
    alias("gpt-5*", "sim-gpt")
    with claude(live).messages.stream(
        model="gpt-5.1-codex", max_tokens=50, messages=[{"role": "user", "content": "[[say: yo]]"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "gpt-5.1-codex"
    assert final.content[0].text == "yo"
    chunks = list(
        oai(live).chat.completions.create(
            model="gpt-5",
            messages=[{"role": "user", "content": "[[say: yo]]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.model for c in chunks} == {"gpt-5"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "yo"
    done = oai(live).responses.create(model="gpt-5-codex", input="[[say: ok]]")
    assert done.model == "gpt-5-codex"
    assert done.output_text == "ok"
    rows = records()
    assert [(r.model, r.requested_model) for r in rows] == [
        ("sim-gpt", "gpt-5.1-codex"),
        ("sim-gpt", "gpt-5"),
        ("sim-gpt", "gpt-5-codex"),
    ]
    assert all(r.output_tokens > 0 and r.status == 200 for r in rows)


def test_a_client_suffix_is_stripped_for_real_models_too(live):
    done = oai(live).chat.completions.create(
        model="sim-gpt[1m]", messages=[{"role": "user", "content": "[[say: fine]]"}]
    )
    assert done.model == "sim-gpt[1m]"
    assert done.choices[0].message.content == "fine"
    (record,) = records()
    assert (record.model, record.requested_model) == ("sim-gpt", "sim-gpt[1m]")
    plain = oai(live).chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": "[[say: fine]]"}]
    )
    assert plain.model == "sim-gpt"
    assert records()[-1].requested_model == ""


def test_exact_beats_pattern_longer_beats_shorter_then_priority(live):
    factories.model("sim-claude-b", routes=[(live["anthropic"], "sim-claude")])
    factories.model("sim-claude-c", routes=[(live["anthropic"], "sim-claude")])
    alias("claude-*", "sim-claude")
    alias("claude-opus-*", "sim-claude-b")
    alias("claude-opus-4-8", "sim-claude-c")
    alias("claude-sonnet-*", "sim-claude-c", priority=5)
    alias("claude-sonnet-*", "sim-claude-b", priority=1)
    alias("claude-haiku-*", "sim-claude-c", is_active=False)
    for name in ("claude-opus-4-8", "claude-opus-4-9", "claude-sonnet-9", "claude-haiku-4-5"):
        ask(live, name)
    served = [(r.requested_model, r.model) for r in records()]
    assert served == [
        ("claude-opus-4-8", "sim-claude-c"),  # exact
        ("claude-opus-4-9", "sim-claude-b"),  # the longer pattern
        ("claude-sonnet-9", "sim-claude-b"),  # same pattern: lower priority number
        ("claude-haiku-4-5", "sim-claude"),  # the inactive alias is skipped
    ]


def test_an_alias_never_widens_access(live):
    factories.model("sim-premium", routes=[(live["anthropic"], "sim-claude")], tier="premium")
    alias("claude-opus-*", "sim-premium")
    test_plan = factories.account(plan_slug="test")
    _, test_secret = factories.api_key(test_plan)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        ask(live, "claude-opus-4-8", test_secret)
    assert "claude-opus-4-8' (served by sim-premium)" in refused.value.message
    assert "premium tier" in refused.value.message
    # A key limited to some models cannot reach another one through an alias.
    _, limited = factories.api_key(live["account"], name="gpt only", allowed_models=["sim-gpt"])
    with pytest.raises(anthropic.PermissionDeniedError):
        ask(live, "claude-opus-4-8", limited)
    # A lower-tier fallback the operator adds serves whoever may not use the first choice.
    alias("claude-*", "sim-claude", priority=10)
    ask(live, "claude-opus-4-8", test_secret)
    ask(live, "claude-opus-4-8")  # the enterprise key still gets the premium model
    with pytest.raises(anthropic.PermissionDeniedError):
        ask(live, "claude-opus-4-8", limited)
    # A refused request names what was asked for: nothing was served.
    served = [(r.model, r.requested_model, r.status) for r in records()]
    assert served == [
        ("claude-opus-4-8", "", 403),
        ("claude-opus-4-8", "", 403),
        ("sim-claude", "claude-opus-4-8", 200),
        ("sim-premium", "claude-opus-4-8", 200),
        ("claude-opus-4-8", "", 403),
    ]
    assert all(r.cost_micros == 0 for r in records(status=403))


def test_an_unknown_name_is_still_a_404(live):
    alias("claude-opus-*", "sim-claude")
    with pytest.raises(anthropic.NotFoundError) as missing:
        ask(live, "claude-sonnet-5")
    assert "claude-sonnet-5" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        oai(live).chat.completions.create(
            model="gpt-5", messages=[{"role": "user", "content": "hi"}]
        )


def test_auto_still_names_the_model_it_chose(live):
    alias("auto*", "sim-claude")  # "auto" itself is never an alias
    done = oai(live).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "[[say: cheap]]"}]
    )
    assert done.model in ("sim-gpt", "sim-claude")
    (record,) = records()
    assert record.model == done.model
    assert record.requested_model == ""


def test_model_lists_show_exact_aliases_not_patterns(live):
    alias("claude-opus-*", "sim-claude")
    alias("claude-sonnet-5", "sim-claude")
    alias("claude-retired", "sim-claude", is_active=False)
    ids = [m.id for m in oai(live).models.list()]
    assert "claude-sonnet-5" in ids and "sim-claude" in ids
    assert "claude-opus-*" not in ids and "claude-retired" not in ids
    assert ids == sorted(ids)
    listed = {m.id: m for m in claude(live).models.list(limit=1000)}
    assert listed["claude-sonnet-5"].display_name == "claude-sonnet-5 (served by sim-claude)"
    # A single model is found by any name it answers to, a pattern's too.
    assert oai(live).models.retrieve("claude-opus-4-8").id == "claude-opus-4-8"
    assert claude(live).models.retrieve("claude-sonnet-5").id == "claude-sonnet-5"
    # A key that may not use the served model does not see the alias.
    _, limited = factories.api_key(live["account"], name="gpt only", allowed_models=["sim-gpt"])
    assert [m.id for m in oai(live, limited).models.list()] == ["sim-gpt"]


def test_an_admin_edit_applies_at_once(live, admin_client: Client):
    with pytest.raises(anthropic.NotFoundError):
        ask(live, "claude-sonnet-5")
    model = CatalogModel.objects.get(model_id="sim-claude")
    before = store.sync_client().get(catalog.VERSION_KEY) if settings.REDIS_URL else None
    response = admin_client.post(
        "/admin/gateway/modelalias/add/",
        {"name": "claude-sonnet-*", "model": model.pk, "priority": 0, "is_active": "on"},
    )
    assert response.status_code == 302, response.content
    if settings.REDIS_URL:
        # Every other process is told too (they check the version at most once a second).
        assert store.sync_client().get(catalog.VERSION_KEY) != before
    assert ask(live, "claude-sonnet-5").model == "claude-sonnet-5"
    made = ModelAlias.objects.get(name="claude-sonnet-*")
    response = admin_client.post(
        f"/admin/gateway/modelalias/{made.pk}/change/",
        {"name": "claude-sonnet-*", "model": model.pk, "priority": 0},
    )
    assert response.status_code == 302
    with pytest.raises(anthropic.NotFoundError):
        ask(live, "claude-sonnet-5")


def test_the_admin_refuses_names_that_could_never_match(live, admin_client: Client):
    model = CatalogModel.objects.get(model_id="sim-claude")
    for name, why in (
        ("claude-x[1m]", "suffix"),
        ("sim-gpt", "always wins"),
        ("claude x", "no spaces"),
    ):
        response = admin_client.post(
            "/admin/gateway/modelalias/add/", {"name": name, "model": model.pk, "priority": 0}
        )
        assert response.status_code == 200
        assert why in response.content.decode()
    assert not ModelAlias.objects.exists()


def test_the_seeded_aliases_serve_claude_code_and_codex_ids(live):
    counts = catalog.seed(simulator_url=live["sim"])
    assert counts["aliases"] == len(ALIASES)
    assert catalog.seed(simulator_url=live["sim"])["aliases"] == 0  # idempotent
    test_plan = factories.account(plan_slug="test")
    _, test_secret = factories.api_key(test_plan)
    for name in (
        "claude-opus-4-8[1m]",
        "claude-sonnet-5",
        "claude-haiku-4-5-20251001",
        "claude-fable-5",
    ):
        assert ask(live, name).model == name
        assert ask(live, name, test_secret).model == name
    done = oai(live).responses.create(model="gpt-5.1-codex-max", input="[[say: ok]]")
    assert done.output_text == "ok"
    oai(live, test_secret).responses.create(
        model="gpt-5.5", input="[[say: ok]]", max_output_tokens=100
    )
    served = [(r.requested_model, r.model) for r in records()]
    assert served == [
        ("claude-opus-4-8[1m]", "claude-opus-4-1"),
        ("claude-opus-4-8[1m]", "claude-haiku-4-5"),  # the Test plan has no premium tier
        ("claude-sonnet-5", "claude-sonnet-4-5"),
        ("claude-sonnet-5", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-fable-5", "claude-sonnet-4-5"),
        ("claude-fable-5", "claude-haiku-4-5"),
        ("gpt-5.1-codex-max", "gpt-4.1"),
        ("gpt-5.5", "gpt-4.1-mini"),
    ]
    protocols = {
        m.model_id: m.routes.get().provider.protocol
        for m in CatalogModel.objects.filter(model_id__in=[r for _, r in served])
    }
    assert protocols == {
        "claude-opus-4-1": "anthropic",
        "claude-sonnet-4-5": "anthropic",
        "claude-haiku-4-5": "anthropic",
        "gpt-4.1": "openai",
        "gpt-4.1-mini": "openai",
    }


def test_an_output_cap_meant_for_the_asked_model_fits_the_served_one(live):
    factories.model("sim-tiny", routes=[(live["anthropic"], "sim-claude")], max_output_tokens=5)
    alias("claude-big-*", "sim-tiny")
    with claude(live).messages.stream(
        model="claude-big-1", max_tokens=64_000, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        done = stream.get_final_message()
    assert done.stop_reason == "max_tokens"
    assert done.usage.output_tokens == 5
    # Asked by its own id, the model gets what the client sent (its limit is the client's call).
    direct = claude(live).messages.create(
        model="sim-tiny", max_tokens=50, messages=[{"role": "user", "content": "Hello"}]
    )
    assert direct.usage.output_tokens > 5
