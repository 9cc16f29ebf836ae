"""Billing data: plans an operator edits, and the append-only balance ledger."""

from __future__ import annotations

from django.db import models


class Plan(models.Model):
    class WindowKind(models.TextChoices):
        ROLLING = "rolling", "Rolling hours"
        CALENDAR_MONTH = "calendar_month", "Calendar month"
        NONE = "none", "No window"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=200, blank=True)
    # Empty limits mean "no cap" (Enterprise contracts).
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="requests per minute")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="tokens per minute")
    # RPM and TPM above apply to each key on its own; these cap the account, all keys together.
    account_rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="requests per minute, all the account's keys together"
    )
    account_tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="tokens per minute, all the account's keys together"
    )
    max_keys = models.PositiveIntegerField(
        null=True, blank=True, help_text="active API keys an account may hold"
    )
    window_kind = models.CharField(max_length=20, choices=WindowKind, default=WindowKind.ROLLING)
    window_hours = models.PositiveIntegerField(default=24, help_text="length of a rolling window")
    window_tokens = models.BigIntegerField(null=True, blank=True, help_text="tokens per window")
    # Monthly subscription price in micro-dollars (1 USD = 1,000,000).
    monthly_price_micros = models.BigIntegerField(default=0)
    model_tiers = models.JSONField(
        default=list, blank=True, help_text='e.g. ["standard", "premium"]'
    )
    is_public = models.BooleanField(default=True, help_text="offered on the billing page")
    is_default = models.BooleanField(default=False, help_text="new accounts start on it")
    sort_order = models.PositiveIntegerField(default=0)
    stripe_price_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["sort_order", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(monthly_price_micros__gte=0), name="plan_price_not_negative"
            ),
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def allows_tier(self, tier: str) -> bool:
        return "*" in self.model_tiers or tier in self.model_tiers


class LedgerEntry(models.Model):
    """One change to an account's balance. Rows are only ever appended: history is the audit trail,
    and the account's ``balance_micros`` always equals the sum of its entries."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        USAGE = "usage", "Usage charge"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"

    account = models.ForeignKey("accounts.Account", on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=20, choices=Kind)
    # Signed micro-dollars: credits are positive, charges negative.
    amount_micros = models.BigIntegerField()
    balance_after_micros = models.BigIntegerField()
    # Replays of the same event (a Stripe event id, a request id) are no-ops because of this.
    idempotency_key = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=300, blank=True)
    reference = models.CharField(
        max_length=200, blank=True, help_text="Stripe object or request id"
    )
    created_by = models.ForeignKey(
        "accounts.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount_micros:+d}µ$ ({self.account_id})"


class StripeEvent(models.Model):
    """A Stripe webhook event that has been applied. The row is inserted in the same transaction as
    the event's effect, and its id is unique, so a replayed event changes nothing."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    # Stripe's own `created` time of the event (seconds resolution), not when it reached us.
    created = models.DateTimeField()
    account = models.ForeignKey(
        "accounts.Account",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="stripe_events",
    )
    # What applying it did: "credited", "plan moved", "stale", "ignored", ...
    outcome = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class Subscription(models.Model):
    """An account's Stripe subscription as the latest applied event describes it. Events carry
    Stripe's `created` time; an event older than ``last_event_created`` never overrides a newer one,
    so out-of-order delivery ends in the right state."""

    account = models.OneToOneField(
        "accounts.Account", on_delete=models.CASCADE, related_name="subscription"
    )
    # Stripe's subscription status: active, trialing, past_due, unpaid, canceled, incomplete, ...
    status = models.CharField(max_length=30, blank=True)
    plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    stripe_subscription_id = models.CharField(max_length=100, blank=True, db_index=True)
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_price_id = models.CharField(max_length=100, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    # After a failed payment the plan is kept until then; billing.tasks moves the account to Test.
    grace_until = models.DateTimeField(null=True, blank=True)
    last_event_created = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.account_id}: {self.plan or '-'} ({self.status or 'none'})"

    @property
    def is_live(self) -> bool:
        return self.status in ("active", "trialing", "past_due")
