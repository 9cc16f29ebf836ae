"""People, accounts, keys and catalog rows for tests."""

from __future__ import annotations

from typing import Any

import factory
from factory import Faker, PostGenerationMethodCall, Sequence, post_generation  # type: ignore[attr-defined]

from accounts import keys
from accounts.models import Account, ApiKey, ManagementKey, Membership, User
from billing import plans
from billing.models import Plan
from gateway.models import CatalogModel, Provider, Route


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = Sequence(lambda n: f"person{n}@example.com")
    name = Faker("name")
    password = PostGenerationMethodCall("set_password", "correct horse battery")

    @post_generation
    def save_password(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            obj.save()


def plan(slug: str = "test") -> Plan:
    plans.seed()
    return Plan.objects.get(slug=slug)


def account(
    *, owner: User | None = None, plan_slug: str = "test", balance_micros: int = 0
) -> Account:
    if owner is None:
        owner = UserFactory.create()
    acct = Account.objects.create(
        name=owner.email, plan=plan(plan_slug), balance_micros=balance_micros
    )
    Membership.objects.create(user=owner, account=acct, role=Membership.Role.OWNER)
    return acct


def api_key(acct: Account, **kwargs: Any) -> tuple[ApiKey, str]:
    kwargs.setdefault("name", "test key")
    issued = keys.issue(account=acct, **kwargs)
    return issued.key, issued.secret


def management_key(
    acct: Account, *, scopes: tuple[str, ...] = ("keys:read", "keys:write"), name: str = "script"
) -> tuple[ManagementKey, str]:
    issued = keys.issue_management(account=acct, name=name, scopes=scopes)
    return issued.key, issued.secret


def provider(*, base_url: str, protocol: str = "openai", slug: str | None = None) -> Provider:
    slug = slug or f"sim-{protocol}"
    found, _ = Provider.objects.update_or_create(
        slug=slug,
        defaults={
            "name": slug,
            "protocol": protocol,
            "base_url": base_url,
            "api_key": "sim-key",
            # The simulator preset: our id in x-request-id, the tests' knobs passed through.
            "preset": "simulator",
            "request_id_header": "x-request-id",
            "forward_headers": ["x-sim-options"],
        },
    )
    return found


def model(
    model_id: str,
    *,
    routes: list[tuple[Provider, str]] | None = None,
    **fields: Any,
) -> CatalogModel:
    defaults: dict[str, Any] = {
        "display_name": model_id,
        "owned_by": "Test Lab",
        "kind": CatalogModel.Kind.CHAT,
        "supports_tools": True,
        "supports_vision": True,
        "supports_json": True,
        "supports_thinking": True,
        "context_window": 128_000,
        "max_output_tokens": 4096,
        "input_price_micros": 1_000_000,
        "output_price_micros": 2_000_000,
        "tier": "standard",
    }
    defaults.update(fields)
    entry, _ = CatalogModel.objects.update_or_create(model_id=model_id, defaults=defaults)
    for priority, (prov, upstream) in enumerate(routes or []):
        Route.objects.update_or_create(
            model=entry, provider=prov, upstream_model=upstream, defaults={"priority": priority}
        )
    return entry
