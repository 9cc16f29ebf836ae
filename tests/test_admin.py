"""The operator's admin: every page renders, money moves only through the ledger (once per form),
and secrets (key hashes, upstream API keys) never reach the page."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils.timezone import now

from accounts.models import Account, ApiKey, ManagementKey, User
from billing import ledger
from billing.models import LedgerEntry, Plan
from gateway import catalog, presets
from gateway.models import CatalogModel, ModelAlias, Provider, Route, UsageRecord
from tests import factories

pytestmark = pytest.mark.django_db


@dataclass
class World:
    alice: User
    charlie: User
    alice_account: Account
    charlie_account: Account
    key: ApiKey
    provider: Provider
    model: CatalogModel
    entry: LedgerEntry
    usage: UsageRecord


@pytest.fixture
def world() -> World:
    alice = factories.UserFactory.create(email="alice@example.com")
    charlie = factories.UserFactory.create(email="charlie@example.com")
    alice_account = factories.account(owner=alice, plan_slug="pro")
    alice_account.name = "Alice Labs"
    alice_account.save(update_fields=["name"])
    charlie_account = factories.account(owner=charlie)
    charlie_account.name = "Charlie Corp"
    charlie_account.save(update_fields=["name"])
    key, _ = factories.api_key(alice_account, name="alice backend")
    factories.management_key(alice_account, name="alice deploy script")
    factories.management_key(charlie_account, name="charlie ci", scopes=("keys:read",))
    factories.api_key(charlie_account, name="charlie script", environment="dev")
    provider = factories.provider(base_url="https://upstream.example/v1", slug="upstream-one")
    other = factories.provider(
        base_url="https://claude.example", protocol="anthropic", slug="upstream-two"
    )
    model = factories.model("zebra-chat-1", routes=[(provider, "zebra-chat-1-0312")])
    factories.model(
        "yak-embed-2",
        routes=[(other, "yak-embed")],
        kind=CatalogModel.Kind.EMBEDDING,
        output_price_micros=None,
    )
    ModelAlias.objects.create(name="zebra-chat-*", model=model)
    ModelAlias.objects.create(name="yak-embed-latest", model=model, priority=3)
    entry = ledger.credit(
        account=alice_account,
        amount_micros=12_500_000,
        idempotency_key="stripe:evt_topup_1",
        reference="pi_alice_1",
        description="Top-up",
    )
    assert entry is not None
    ledger.credit(
        account=charlie_account, amount_micros=1_000_000, idempotency_key="stripe:evt_topup_2"
    )
    usage = UsageRecord.objects.create(
        request_id="req_alice_0001",
        account=alice_account,
        api_key=key,
        surface="openai",
        model="zebra-chat-1",
        status=200,
        input_tokens=120,
        output_tokens=30,
        billed_micros=180,
        latency_ms=420,
        created_at=now(),
    )
    UsageRecord.objects.create(
        request_id="req_charlie_0001",
        account=charlie_account,
        surface="anthropic",
        model="yak-embed-2",
        status=429,
        created_at=now(),
    )
    return World(
        alice=alice,
        charlie=charlie,
        alice_account=alice_account,
        charlie_account=charlie_account,
        key=key,
        provider=provider,
        model=model,
        entry=entry,
        usage=usage,
    )


def _url(model: type[Any], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


# What each changelist should show once the world exists: two rows' worth of text.
CHANGELIST_ROWS: dict[type[Any], tuple[str, ...]] = {
    User: ("alice@example.com", "charlie@example.com"),
    Account: ("Alice Labs", "Charlie Corp", "$12.50"),
    ApiKey: ("alice backend", "charlie script", "tf-prod-"),
    ManagementKey: ("alice deploy script", "charlie ci", "tf-mgmt-"),
    Plan: ("Token Pro", "Enterprise", "$20.00"),
    LedgerEntry: ("stripe:evt_topup_1", "stripe:evt_topup_2", "$12.50"),
    Provider: ("upstream-one", "upstream-two"),
    CatalogModel: ("zebra-chat-1", "yak-embed-2", "$1.00"),
    Route: ("zebra-chat-1-0312", "yak-embed"),
    ModelAlias: ("zebra-chat-*", "yak-embed-latest", "pattern"),
    UsageRecord: ("req_alice_0001", "req_charlie_0001", "$0.00018"),
}
READ_ONLY = {LedgerEntry, UsageRecord}
ISSUED_ELSEWHERE = {ApiKey, ManagementKey}  # issued by owners, who see the secret once


def test_it_registers_every_model_an_operator_needs() -> None:
    assert set(CHANGELIST_ROWS) <= set(admin.site._registry)
    assert admin.site.site_header == "Token Factory admin"


@pytest.mark.parametrize("model", list(CHANGELIST_ROWS), ids=lambda m: m.__name__)
def test_it_renders_every_changelist_with_its_rows(
    admin_client: Client, world: World, model: type[Any]
) -> None:
    response = admin_client.get(_url(model, "changelist"))

    assert response.status_code == 200
    page = response.content.decode()
    for text in CHANGELIST_ROWS[model]:
        assert text in page
    assert "Token Factory admin" in page


@pytest.mark.parametrize("model", list(CHANGELIST_ROWS), ids=lambda m: m.__name__)
def test_it_renders_every_add_page_or_refuses_where_rows_come_from_elsewhere(
    admin_client: Client, world: World, model: type[Any]
) -> None:
    response = admin_client.get(_url(model, "add"))

    expected = 403 if model in READ_ONLY | ISSUED_ELSEWHERE else 200
    assert response.status_code == expected


@pytest.mark.parametrize("model", list(CHANGELIST_ROWS), ids=lambda m: m.__name__)
def test_it_renders_every_change_page(admin_client: Client, world: World, model: type[Any]) -> None:
    obj = model._default_manager.order_by("pk").first()

    response = admin_client.get(_url(model, "change", obj.pk))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("model", "query", "found", "not_found"),
    [
        (User, "alice", "alice@example.com", "charlie@example.com"),
        (Account, "alice@example.com", "Alice Labs", "Charlie Corp"),
        (ApiKey, "Charlie Corp", "charlie script", "alice backend"),
        (LedgerEntry, "evt_topup_2", "stripe:evt_topup_2", "stripe:evt_topup_1"),
        (LedgerEntry, "pi_alice_1", "stripe:evt_topup_1", "stripe:evt_topup_2"),
        (CatalogModel, "zebra", "zebra-chat-1", "yak-embed-2"),
        (Provider, "upstream-two", "claude.example", "upstream.example"),
        (Route, "yak", "yak-embed", "zebra-chat-1-0312"),
        (UsageRecord, "req_charlie", "req_charlie_0001", "req_alice_0001"),
        (UsageRecord, "Alice Labs", "req_alice_0001", "req_charlie_0001"),
    ],
)
def test_it_searches(
    admin_client: Client, world: World, model: type[Any], query: str, found: str, not_found: str
) -> None:
    response = admin_client.get(_url(model, "changelist"), {"q": query})

    assert response.status_code == 200
    page = response.content.decode()
    assert found in page
    assert not_found not in page


def _adjustment_form(client: Client, account: Account) -> str:
    """Open the intermediate page as the action does; returns the form's idempotency uuid."""
    response = client.post(
        _url(Account, "changelist"),
        {"action": "adjust_balance", "_selected_action": [account.pk]},
    )
    assert response.status_code == 200
    assert b"Post adjustment" in response.content
    return str(response.context["form"]["idempotency_key"].value())


def _submit(client: Client, account: Account, submission: str, amount: str, reason: str) -> Any:
    return client.post(
        _url(Account, "changelist"),
        {
            "action": "adjust_balance",
            "_selected_action": [account.pk],
            "apply": "1",
            "amount": amount,
            "reason": reason,
            "idempotency_key": submission,
        },
    )


def test_it_credits_once_when_the_same_adjustment_form_is_posted_twice(
    admin_client: Client, admin_user: User, world: World
) -> None:
    account = world.alice_account
    submission = _adjustment_form(admin_client, account)

    first = _submit(admin_client, account, submission, "25.50", "goodwill for the outage")
    second = _submit(admin_client, account, submission, "25.50", "goodwill for the outage")

    assert first.status_code == second.status_code == 302
    account.refresh_from_db()
    assert account.balance_micros == 12_500_000 + 25_500_000
    entry = LedgerEntry.objects.get(account=account, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert entry.amount_micros == 25_500_000
    assert entry.balance_after_micros == account.balance_micros
    assert entry.description == "goodwill for the outage"
    assert entry.created_by == admin_user
    assert submission in entry.idempotency_key


def test_it_posts_again_for_a_new_form_and_takes_negative_amounts(
    admin_client: Client, world: World
) -> None:
    account = world.alice_account

    _submit(admin_client, account, _adjustment_form(admin_client, account), "1", "a")
    _submit(admin_client, account, _adjustment_form(admin_client, account), "-0.000125", "b")

    account.refresh_from_db()
    assert account.balance_micros == 12_500_000 + 1_000_000 - 125
    assert sorted(
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).values_list(
            "amount_micros", flat=True
        )
    ) == [-125, 1_000_000]


def test_it_adjusts_each_selected_account_once(admin_client: Client, world: World) -> None:
    accounts = [world.alice_account.pk, world.charlie_account.pk]
    submission = str(uuid.uuid4())
    data = {
        "action": "adjust_balance",
        "_selected_action": accounts,
        "apply": "1",
        "amount": "2",
        "reason": "promo",
        "idempotency_key": submission,
    }

    admin_client.post(_url(Account, "changelist"), data)
    admin_client.post(_url(Account, "changelist"), data)

    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).count() == 2
    world.charlie_account.refresh_from_db()
    assert world.charlie_account.balance_micros == 3_000_000


@pytest.mark.parametrize(
    ("amount", "reason"), [("0", "nothing"), ("abc", "typo"), ("1.0000001", "too precise")]
)
def test_it_refuses_an_adjustment_that_is_not_a_usable_amount(
    admin_client: Client, world: World, amount: str, reason: str
) -> None:
    response = _submit(admin_client, world.alice_account, str(uuid.uuid4()), amount, reason)

    assert response.status_code == 200
    assert response.context["form"].errors
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


def test_it_refuses_an_adjustment_without_a_reason(admin_client: Client, world: World) -> None:
    response = _submit(admin_client, world.alice_account, str(uuid.uuid4()), "5", "   ")

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


def test_it_does_not_let_the_balance_be_edited_on_the_account_form(
    admin_client: Client, world: World
) -> None:
    response = admin_client.get(_url(Account, "change", world.alice_account.pk))

    assert 'name="balance_micros"' not in response.content.decode()
    assert "$12.50" in response.content.decode()


def test_it_never_shows_the_key_hash(admin_client: Client, world: World) -> None:
    pages = [
        admin_client.get(_url(ApiKey, "change", world.key.pk)),
        admin_client.get(_url(ApiKey, "changelist")),
        admin_client.get(_url(Account, "change", world.alice_account.pk)),
    ]

    for response in pages:
        assert response.status_code == 200
        assert world.key.key_hash not in response.content.decode()
        assert "key_hash" not in response.content.decode()


def test_it_revokes_selected_keys(admin_client: Client, world: World) -> None:
    response = admin_client.post(
        _url(ApiKey, "changelist"), {"action": "revoke_keys", "_selected_action": [world.key.pk]}
    )

    assert response.status_code == 302
    world.key.refresh_from_db()
    assert world.key.revoked_at is not None
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1


def test_it_lists_and_revokes_management_keys_without_their_hashes(
    admin_client: Client, world: World
) -> None:
    script = ManagementKey.objects.get(name="alice deploy script")
    pages = [
        admin_client.get(_url(ManagementKey, "changelist")),
        admin_client.get(_url(ManagementKey, "change", script.pk)),
    ]
    for response in pages:
        assert response.status_code == 200
        assert script.key_hash not in response.content.decode()
        assert "key_hash" not in response.content.decode()

    response = admin_client.post(
        _url(ManagementKey, "changelist"),
        {"action": "revoke_keys", "_selected_action": [script.pk]},
    )

    assert response.status_code == 302
    script.refresh_from_db()
    assert script.revoked_at is not None
    assert ManagementKey.objects.filter(revoked_at__isnull=True).count() == 1
    assert admin_client.get(_url(ManagementKey, "delete", script.pk)).status_code == 403


def test_it_does_not_let_ledger_entries_be_added_changed_or_deleted(
    admin_client: Client, world: World
) -> None:
    entry = world.entry
    changed = {"amount_micros": "999", "description": "rewritten", "kind": "topup"}

    assert admin_client.get(_url(LedgerEntry, "add")).status_code == 403
    assert admin_client.post(_url(LedgerEntry, "add"), changed).status_code == 403
    assert admin_client.post(_url(LedgerEntry, "change", entry.pk), changed).status_code == 403
    assert admin_client.get(_url(LedgerEntry, "delete", entry.pk)).status_code == 403
    deleted = admin_client.post(_url(LedgerEntry, "delete", entry.pk), {"post": "yes"})
    assert deleted.status_code == 403
    bulk = admin_client.post(
        _url(LedgerEntry, "changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.amount_micros == 12_500_000
    assert entry.description == "Top-up"
    assert LedgerEntry.objects.count() == 2


def _provider_data(provider: Provider, **overrides: str) -> dict[str, str]:
    data = {
        "name": provider.name,
        "slug": provider.slug,
        "protocol": provider.protocol,
        "base_url": provider.base_url,
        "is_active": "on",
        "api_key_env": provider.api_key_env,
        "api_key": "",
        "connect_timeout_ms": "",
        "first_byte_timeout_ms": "",
        "total_timeout_ms": "",
        # The fields a preset fills, as the form renders them for this provider.
        "url_style": provider.url_style,
        "output_limit_field": provider.output_limit_field,
        "reports_stream_usage": "on" if provider.reports_stream_usage else "",
        "forward_headers": orjson.dumps(provider.forward_headers).decode(),
        "extra_headers": orjson.dumps(provider.extra_headers).decode(),
        "request_id_header": provider.request_id_header,
    }
    data.update(overrides)
    return data


def test_it_never_echoes_a_stored_provider_key(admin_client: Client, world: World) -> None:
    provider = world.provider
    provider.api_key = "sk-upstream-very-secret"
    provider.save(update_fields=["api_key"])

    for url in (_url(Provider, "change", provider.pk), _url(Provider, "changelist")):
        page = admin_client.get(url).content.decode()
        assert "sk-upstream-very-secret" not in page
    assert "stored key" in admin_client.get(_url(Provider, "changelist")).content.decode()


def test_it_keeps_the_stored_provider_key_when_the_field_is_left_blank(
    admin_client: Client, world: World
) -> None:
    provider = world.provider
    url = _url(Provider, "change", provider.pk)

    kept = admin_client.post(url, _provider_data(provider, name="Renamed"))
    provider.refresh_from_db()
    assert kept.status_code == 302
    assert (provider.name, provider.api_key) == ("Renamed", "sim-key")

    admin_client.post(url, _provider_data(provider, api_key="sk-new"))
    provider.refresh_from_db()
    assert provider.api_key == "sk-new"

    admin_client.post(url, _provider_data(provider, clear_api_key="on"))
    provider.refresh_from_db()
    assert provider.api_key == ""


def test_it_says_whether_the_key_variable_is_set_without_showing_it(
    admin_client: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_UPSTREAM_KEY", "sk-from-the-environment")
    Provider.objects.filter(pk=world.provider.pk).update(api_key_env="TF_TEST_UPSTREAM_KEY")
    Provider.objects.exclude(pk=world.provider.pk).update(api_key_env="TF_TEST_UNSET_KEY")

    page = admin_client.get(_url(Provider, "changelist")).content.decode()

    assert "$TF_TEST_UPSTREAM_KEY (set)" in page
    assert "$TF_TEST_UNSET_KEY not set" in page
    assert "sk-from-the-environment" not in page


def _model_data(model: CatalogModel, **overrides: str) -> dict[str, str]:
    data = {
        "model_id": model.model_id,
        "display_name": model.display_name,
        "owned_by": model.owned_by,
        "description": "",
        "kind": model.kind,
        "supports_tools": "on",
        "context_window": str(model.context_window),
        "max_output_tokens": str(model.max_output_tokens),
        "input_price_micros": "1.00",
        "output_price_micros": "2.00",
        "cached_input_price_micros": "",
        "unit": model.unit,
        "unit_price_micros": "",
        "tier": model.tier,
        "is_active": "on",
        "routes-TOTAL_FORMS": "0",
        "routes-INITIAL_FORMS": "0",
        "routes-MIN_NUM_FORMS": "0",
        "routes-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_it_edits_prices_in_dollars_and_drops_the_catalog_snapshot(
    admin_client: Client,
    world: World,
    django_capture_on_commit_callbacks: Any,
) -> None:
    model = factories.model("unrouted-chat")
    catalog._snapshot = catalog.load()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            _url(CatalogModel, "change", model.pk),
            _model_data(model, input_price_micros="0.15", output_price_micros="0.6"),
        )

    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.input_price_micros, model.output_price_micros) == (150_000, 600_000)
    assert catalog._snapshot is None
    assert catalog.load().models["unrouted-chat"].input_price_micros == 150_000


def test_it_refuses_a_negative_price(admin_client: Client, world: World) -> None:
    model = factories.model("unrouted-chat")

    response = admin_client.post(
        _url(CatalogModel, "change", model.pk), _model_data(model, input_price_micros="-1")
    )

    assert response.status_code == 200
    model.refresh_from_db()
    assert model.input_price_micros == 1_000_000


def test_it_deactivates_models_and_drops_the_catalog_snapshot(
    admin_client: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    catalog._snapshot = catalog.load()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            _url(CatalogModel, "changelist"),
            {"action": "deactivate", "_selected_action": [world.model.pk]},
        )

    world.model.refresh_from_db()
    assert world.model.is_active is False
    assert catalog._snapshot is None
    assert "zebra-chat-1" not in catalog.load().models


def test_it_drops_the_catalog_snapshot_when_a_route_is_deleted(
    admin_client: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    route = Route.objects.get(upstream_model="zebra-chat-1-0312")
    catalog._snapshot = catalog.load()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(_url(Route, "delete", route.pk), {"post": "yes"})

    assert not Route.objects.filter(pk=route.pk).exists()
    assert catalog._snapshot is None


def test_it_shows_plan_prices_in_dollars_and_saves_micros(
    admin_client: Client, world: World
) -> None:
    plan = Plan.objects.get(slug="pro")
    url = _url(Plan, "change", plan.pk)

    assert 'value="20.00"' in admin_client.get(url).content.decode()
    response = admin_client.post(
        url,
        {
            "name": plan.name,
            "slug": plan.slug,
            "description": plan.description,
            "is_public": "on",
            "sort_order": str(plan.sort_order),
            "rpm_limit": "150",
            "tpm_limit": str(plan.tpm_limit),
            "model_tiers": '["standard", "premium"]',
            "window_kind": plan.window_kind,
            "window_hours": str(plan.window_hours),
            "window_tokens": str(plan.window_tokens),
            "monthly_price_micros": "24.99",
            "stripe_price_id": "",
        },
    )

    assert response.status_code == 302
    plan.refresh_from_db()
    assert (plan.rpm_limit, plan.monthly_price_micros) == (150, 24_990_000)


def test_it_creates_a_user_who_logs_in_with_an_email(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        _url(User, "add"),
        {
            "email": "Dora@Example.com",
            "usable_password": "true",
            "password1": "a long enough passphrase",
            "password2": "a long enough passphrase",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(email="dora@example.com")
    assert user.check_password("a long enough passphrase")


def _cache_caller(key: ApiKey) -> None:
    from gateway import auth

    auth._cache[key.key_hash] = (auth.caller_for(key), time.monotonic())


def _is_cached(key: ApiKey) -> bool:
    from gateway import auth

    return key.key_hash in auth._cache


def test_it_makes_the_gateway_forget_the_keys_of_a_deactivated_account(
    admin_client: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    account = world.alice_account
    _cache_caller(world.key)
    data = {
        "name": account.name,
        "plan": str(account.plan_id),
        "stripe_customer_id": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "0",
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(_url(Account, "change", account.pk), data)

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.is_active is False
    assert account.memberships.count() == 1
    assert not _is_cached(world.key)


def test_it_makes_the_gateway_reload_the_limits_of_an_edited_plan(
    admin_client: Client, world: World, django_capture_on_commit_callbacks: Any
) -> None:
    _cache_caller(world.key)
    plan = world.alice_account.plan
    form = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(plan.pk),
        "form-0-rpm_limit": "7",
        "form-0-tpm_limit": str(plan.tpm_limit),
        "form-0-window_tokens": str(plan.window_tokens),
        "form-0-is_public": "on",
        "form-0-sort_order": str(plan.sort_order),
        "_save": "Save",
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(_url(Plan, "changelist"), form)

    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.rpm_limit == 7
    assert not _is_cached(world.key)


def test_it_moves_an_account_to_another_plan_through_assign_plan(
    admin_client: Client,
    world: World,
    key_announcements: list[list[str]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    account = world.alice_account
    _cache_caller(world.key)
    key_announcements.clear()
    max_plan = Plan.objects.get(slug="max")
    data = {
        "name": account.name,
        "plan": str(max_plan.pk),
        "is_active": "on",
        "stripe_customer_id": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "0",
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(_url(Account, "change", account.pk), data)

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.plan == max_plan and account.is_active
    # One announcement with the account's live keys: what billing.plans.assign_plan sends.
    assert key_announcements == [[world.key.key_hash]]
    assert not _is_cached(world.key)


def test_it_fills_a_new_provider_from_a_preset_on_save(admin_client: Client, db: None) -> None:
    data = {
        "preset": "azure",
        "resource": "contoso-eu",
        "name": "Contoso Azure",
        "slug": "contoso",
        "protocol": "",
        "base_url": "",
        "region": "",
        "is_active": "on",
        "api_key_env": "",
        "api_key": "azure-secret",
        "url_style": "standard",
        "output_limit_field": "max_tokens",
        "reports_stream_usage": "on",
        "forward_headers": "[]",
        "extra_headers": "{}",
    }
    response = admin_client.post(_url(Provider, "add"), data)

    assert response.status_code == 302
    made = Provider.objects.get(slug="contoso")
    assert (made.protocol, made.base_url, made.preset) == (
        "openai",
        "https://contoso-eu.openai.azure.com",
        "azure",
    )
    assert (made.auth_style, made.url_style, made.api_version) == ("api-key", "azure", "2024-10-21")
    assert made.output_limit_field == "max_completion_tokens"
    assert made.api_key_env == "AZURE_OPENAI_API_KEY"


def test_it_asks_for_what_a_preset_url_needs(admin_client: Client, db: None) -> None:
    data = {"preset": "bedrock", "name": "Bedrock", "slug": "bedrock", "is_active": "on"}
    data |= {"url_style": "standard", "output_limit_field": "max_tokens"}
    data |= {"forward_headers": "[]", "extra_headers": "{}"}

    page = admin_client.post(_url(Provider, "add"), data).content.decode()

    assert "the bedrock preset needs: region" in page
    assert not Provider.objects.filter(slug="bedrock").exists()


def test_the_provider_form_loads_its_preset_script_as_a_static_file(
    admin_client: Client, db: None
) -> None:
    page = admin_client.get(_url(Provider, "add")).content.decode()

    assert "js/provider_preset.js" in page
    assert "data-presets=" in page


def test_switching_preset_replaces_what_the_old_preset_set_and_keeps_the_operators_edits(
    admin_client: Client, db: None
) -> None:
    made = Provider(name="Upstream", slug="upstream", api_key="k")
    presets.apply(made, presets.get("azure"), resource="contoso")
    made.request_id_header = "x-ms-client-request-id"  # an operator's own edit
    made.save()
    data = {
        "preset": "openai",
        "name": made.name,
        "slug": made.slug,
        "protocol": made.protocol,
        "base_url": made.base_url,
        "region": "",
        "is_active": "on",
        "api_key_env": made.api_key_env,
        "api_key": "",
        "auth_style": made.auth_style,
        "url_style": made.url_style,
        "api_version": made.api_version,
        "output_limit_field": made.output_limit_field,
        "reports_stream_usage": "on",
        "request_id_header": made.request_id_header,
        "forward_headers": "[]",
        "extra_headers": "{}",
    }

    response = admin_client.post(_url(Provider, "change", made.pk), data)

    assert response.status_code == 302
    made.refresh_from_db()
    assert (made.preset, made.base_url, made.auth_style) == (
        "openai",
        "https://api.openai.com/v1",
        "bearer",
    )
    assert (made.url_style, made.api_version) == ("standard", "")
    assert made.request_id_header == "x-ms-client-request-id"
