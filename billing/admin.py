"""Admin for plans (data an operator edits) and the ledger (read-only: balances move only through
billing.ledger)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest

from accounts import keys
from accounts.admin_audit import AuditedAdmin
from accounts.models import Account
from billing import money
from billing.models import LedgerEntry, Plan, StripeEvent, Subscription


def dollars_text(micros: int) -> str:
    """Micro-dollars as a plain dollar amount a person can edit ("20.00", "0.000125")."""
    return money.format_usd(micros).replace("$", "").replace(",", "")


class DollarsField(forms.Field):
    """A form field that shows and takes dollars while the model stores integer micro-dollars."""

    widget = forms.TextInput

    def __init__(self, *, min_micros: int | None = 0, **kwargs: Any) -> None:
        self.min_micros = min_micros
        kwargs.pop("max_length", None)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("placeholder", "0.00")
        self.widget.attrs.setdefault("inputmode", "decimal")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int):
            return dollars_text(value)
        return value

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        if isinstance(value, int):
            return value
        try:
            micros = money.from_dollars(str(value))
        except ValueError as exc:
            raise ValidationError(
                "Enter a dollar amount, e.g. 12.50 (at most 6 decimal places).", code="invalid"
            ) from exc
        if self.min_micros is not None and micros < self.min_micros:
            raise ValidationError(
                f"Must be at least {money.format_usd(self.min_micros)}.", code="min_value"
            )
        return micros


def dollars_formfield(db_field: models.Field[Any, Any], label: str) -> DollarsField:
    return DollarsField(
        required=not db_field.blank,
        label=label,
        help_text=db_field.help_text or "in dollars; stored as micro-dollars",
    )


@admin.register(Plan)
class PlanAdmin(AuditedAdmin[Plan]):
    list_display = (
        "name",
        "slug",
        "rpm_limit",
        "tpm_limit",
        "account_rpm_limit",
        "account_tpm_limit",
        "max_keys",
        "window_kind",
        "window_hours",
        "window_tokens",
        "monthly_price",
        "tiers",
        "is_public",
        "is_default",
        "sort_order",
    )
    list_editable = ("rpm_limit", "tpm_limit", "window_tokens", "is_public", "sort_order")
    list_filter = ("window_kind", "is_public")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (
            None,
            {"fields": ("name", "slug", "description", "is_public", "is_default", "sort_order")},
        ),
        (
            "Limits",
            {
                "description": "RPM and TPM apply to each key on its own; the account limits "
                "apply to all of an account's keys together.",
                "fields": (
                    "rpm_limit",
                    "tpm_limit",
                    "account_rpm_limit",
                    "account_tpm_limit",
                    "max_keys",
                    "model_tiers",
                ),
            },
        ),
        ("Token window", {"fields": ("window_kind", "window_hours", "window_tokens")}),
        ("Price", {"fields": ("monthly_price_micros", "stripe_price_id")}),
    )

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "monthly_price_micros":
            return dollars_formfield(db_field, "Monthly price ($)")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Plan, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            # Every key on this plan may now do something else.
            keys.announce_account_change(accounts=Account.objects.filter(plan=obj))

    @admin.display(description="monthly price", ordering="monthly_price_micros")
    def monthly_price(self, obj: Plan) -> str:
        return money.format_usd(obj.monthly_price_micros)

    @admin.display(description="tiers")
    def tiers(self, obj: Plan) -> str:
        return ", ".join(str(t) for t in obj.model_tiers) or "—"


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin[LedgerEntry]):
    """The audit trail: viewable, never edited here. Corrections are new entries, posted with the
    "Adjust balance" action on accounts."""

    list_display = (
        "created_at",
        "account",
        "kind",
        "amount",
        "balance_after",
        "description",
        "idempotency_key",
    )
    list_filter = ("kind",)
    list_select_related = ("account",)
    date_hierarchy = "created_at"
    search_fields = ("account__name", "reference", "idempotency_key")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEntry | None = None) -> bool:
        return False

    @admin.display(description="amount", ordering="amount_micros")
    def amount(self, obj: LedgerEntry) -> str:
        return money.format_usd(obj.amount_micros)

    @admin.display(description="balance after", ordering="balance_after_micros")
    def balance_after(self, obj: LedgerEntry) -> str:
        return money.format_usd(obj.balance_after_micros)


class _ReadOnly(admin.ModelAdmin[Any]):
    """Stripe's record of what happened: operators read it, only webhooks write it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(_ReadOnly):
    list_display = ("received_at", "type", "event_id", "account", "outcome")
    list_filter = ("type",)
    search_fields = ("event_id", "account__name", "outcome")
    date_hierarchy = "received_at"


@admin.register(Subscription)
class SubscriptionAdmin(_ReadOnly):
    list_display = (
        "account",
        "plan",
        "status",
        "current_period_end",
        "grace_until",
        "stripe_subscription_id",
    )
    list_filter = ("status", "plan")
    search_fields = ("account__name", "stripe_subscription_id", "stripe_customer_id")
