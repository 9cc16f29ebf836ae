"""Plans: the ones every install starts with, looking one up by name, and putting an account on
one."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts import audit, keys
from accounts.models import Account
from billing.models import Plan

STANDARD = ["standard"]
ALL_TIERS = ["*"]

# As the Token Factory docs list them. Prices are micro-dollars per month (1 USD = 1,000,000).
DEFAULT_PLANS: list[dict[str, Any]] = [
    {
        "slug": "test",
        "name": "Test",
        "description": "Try every standard model free, with a daily token window.",
        "rpm_limit": 30,
        "tpm_limit": 10_000,
        "account_rpm_limit": 60,
        "account_tpm_limit": 20_000,
        "max_keys": 3,
        "window_kind": Plan.WindowKind.ROLLING,
        "window_hours": 24,
        "window_tokens": 1_000_000,
        "monthly_price_micros": 0,
        "model_tiers": STANDARD,
        "is_default": True,
        "sort_order": 10,
    },
    {
        "slug": "pro",
        "name": "Token Pro",
        "description": "For products in production: premium models and a 5-hour window.",
        "rpm_limit": 120,
        "tpm_limit": 100_000,
        "account_rpm_limit": 360,
        "account_tpm_limit": 300_000,
        "max_keys": 10,
        "window_kind": Plan.WindowKind.ROLLING,
        "window_hours": 5,
        "window_tokens": 3_000_000,
        "monthly_price_micros": 20_000_000,
        "model_tiers": ["standard", "premium"],
        "sort_order": 20,
    },
    {
        "slug": "max",
        "name": "Token Max",
        "description": "Heavy agents and teams.",
        "rpm_limit": 500,
        "tpm_limit": 500_000,
        "account_rpm_limit": 1_500,
        "account_tpm_limit": 1_500_000,
        "max_keys": 25,
        "window_kind": Plan.WindowKind.ROLLING,
        "window_hours": 5,
        "window_tokens": 5_000_000,
        "monthly_price_micros": 100_000_000,
        "model_tiers": ALL_TIERS,
        "sort_order": 30,
    },
    {
        "slug": "ultra",
        "name": "Token Ultra",
        "description": "High-volume pipelines with a monthly window.",
        "rpm_limit": 2_000,
        "tpm_limit": 2_000_000,
        "account_rpm_limit": 6_000,
        "account_tpm_limit": 6_000_000,
        "max_keys": 100,
        "window_kind": Plan.WindowKind.CALENDAR_MONTH,
        "window_hours": 0,
        "window_tokens": 20_000_000,
        "monthly_price_micros": 200_000_000,
        "model_tiers": ALL_TIERS,
        "sort_order": 40,
    },
    {
        "slug": "enterprise",
        "name": "Enterprise",
        "description": "Custom contract, assigned by an operator: no RPM, TPM or window caps.",
        "rpm_limit": None,
        "tpm_limit": None,
        "account_rpm_limit": None,
        "account_tpm_limit": None,
        "max_keys": None,
        "window_kind": Plan.WindowKind.NONE,
        "window_hours": 0,
        "window_tokens": None,
        "monthly_price_micros": 0,
        "model_tiers": ALL_TIERS,
        "is_public": False,
        "sort_order": 90,
    },
]


class UnknownPlan(ValueError):
    pass


def seed() -> int:
    """Create the default plans that do not exist yet; never overwrite an operator's edits."""
    created = 0
    for spec in DEFAULT_PLANS:
        defaults = {k: v for k, v in spec.items() if k != "slug"}
        if (
            spec.get("is_default")
            and Plan.objects.filter(is_default=True).exclude(slug=spec["slug"]).exists()
        ):
            defaults["is_default"] = False
        _, was_created = Plan.objects.get_or_create(slug=spec["slug"], defaults=defaults)
        created += was_created
    return created


def default() -> Plan:
    plan = Plan.objects.filter(is_default=True).first()
    if plan is None:
        seed()
        plan = Plan.objects.filter(is_default=True).first() or Plan.objects.first()
    assert plan is not None
    return plan


def by_name(name: str) -> Plan:
    """Find a plan by slug or name, case-insensitively ("pro", "Token Pro")."""
    text = name.strip()
    plan = (
        Plan.objects.filter(slug__iexact=text).first()
        or Plan.objects.filter(name__iexact=text).first()
    )
    if plan is None:
        known = ", ".join(Plan.objects.values_list("slug", flat=True))
        raise UnknownPlan(f"no plan called {name!r}; known plans: {known}")
    return plan


def assign_plan(*, account: Account, plan: Plan) -> bool:
    """Put ``account`` on ``plan``: the one way an account's plan changes (the plans page, Stripe's
    subscription events, the admin). Its keys' new limits apply on every gateway process once
    this commits. False when the account was already on that plan."""
    with transaction.atomic():
        before = (
            Account.objects.select_for_update(of=("self",))
            .filter(pk=account.pk)
            .values_list("plan__slug", flat=True)
            .first()
        )
        changed = Account.objects.filter(pk=account.pk).exclude(plan=plan).update(plan=plan)
        account.plan = plan
        if changed:
            audit.record(
                action="plan.changed",
                account=account,
                target=account,
                before={"plan": before},
                after={"plan": plan.slug},
            )
            keys.announce_account_change(accounts=[account])
    return bool(changed)
