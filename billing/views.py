"""The billing page, the doors to Stripe Checkout and the customer portal, and Stripe's webhook.
Each view parses, calls one function of billing.checkout or billing.webhooks, and responds."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import stripe
from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.timezone import now
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts import orgs
from accounts.models import Account, User
from accounts.orgs import requires
from accounts.roles import Perm
from billing import checkout, live, money, stripe_api, webhooks, windows
from billing.models import LedgerEntry, Plan, Subscription

log = logging.getLogger(__name__)
LEDGER_PAGE_SIZE = 20


class TopUpForm(forms.Form):
    amount = forms.CharField(max_length=20, label="Amount in dollars")

    def clean_amount(self) -> int:
        text = self.cleaned_data["amount"]
        try:
            micros = money.from_dollars(text)
        except ValueError as exc:
            raise forms.ValidationError(
                "Enter an amount in dollars, like 25 or 12.50.", code="invalid"
            ) from exc
        try:
            checkout.validate_topup(micros)
        except checkout.CheckoutError as exc:
            raise forms.ValidationError(str(exc), code="amount") from exc
        return micros


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _meter(account: Account) -> dict[str, Any]:
    """The account's token window right now: live from the limiter, else as last persisted."""
    plan = account.plan
    if not plan.window_tokens or plan.window_kind == Plan.WindowKind.NONE:
        return {"capped": False}
    at = now()
    state = live.window_state(account.pk)
    if state and state.get("start"):
        started: datetime | None = windows.from_ms(state["start"])
        used = int(state.get("used", 0)) + int(state.get("reserved", 0))
    else:
        started, used = account.window_started_at, account.window_used_tokens
    bounds = windows.bounds(
        kind=plan.window_kind, hours=plan.window_hours, started_at=started, at=at
    )
    if bounds is None:
        used, resets_at = 0, None
    else:
        resets_at = bounds[1]
    used = max(0, min(used, plan.window_tokens))
    return {
        "capped": True,
        "used": used,
        "limit": plan.window_tokens,
        "left": plan.window_tokens - used,
        "percent": used * 100 // plan.window_tokens,
        "resets_at": resets_at,
    }


def _plan_rows(account: Account, sub: Subscription | None) -> list[dict[str, Any]]:
    rows = []
    paying = sub is not None and bool(sub.stripe_subscription_id) and sub.is_live
    for plan in Plan.objects.filter(is_public=True):
        if plan.pk == account.plan_id:
            action = "current"
        elif checkout.subscribable(plan):
            is_up = plan.monthly_price_micros > account.plan.monthly_price_micros
            action = "upgrade" if is_up else "downgrade"
        elif plan.monthly_price_micros == 0 and paying:
            action = "cancel"
        else:
            action = "unavailable"
        rows.append(
            {"plan": plan, "price": money.format_usd(plan.monthly_price_micros), "action": action}
        )
    return rows


def _ledger_row(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "entry": entry,
        "amount": money.format_usd(entry.amount_micros, places=2),
        "balance_after": money.format_usd(entry.balance_after_micros),
        "is_credit": entry.amount_micros > 0,
    }


def _render_page(
    request: HttpRequest, *, form: TopUpForm | None = None, status: int = 200
) -> HttpResponse:
    account = orgs.current_membership(request).account
    sub = Subscription.objects.filter(account=account).select_related("plan").first()
    entries = LedgerEntry.objects.filter(account=account)
    page = Paginator(entries, LEDGER_PAGE_SIZE).get_page(request.GET.get("page"))
    receipts = entries.filter(kind=LedgerEntry.Kind.TOPUP)[:10]
    context = {
        "account": account,
        "plan": account.plan,
        "subscription": sub,
        "meter": _meter(account),
        "balance": money.format_usd(account.balance_micros),
        "ledger_page": page,
        "ledger_rows": [_ledger_row(e) for e in page.object_list],
        "receipts": [{"entry": e, "amount": money.format_usd(e.amount_micros)} for e in receipts],
        "plan_rows": _plan_rows(account, sub),
        "presets": [
            (money.format_usd(m, places=0), money.format_usd(m).lstrip("$"))
            for m in checkout.TOPUP_PRESETS_MICROS
        ],
        "topup_min": money.format_usd(checkout.TOPUP_MIN_MICROS),
        "form": form or TopUpForm(),
        "billing_on": stripe_api.is_enabled(),
        "can_change_plan": orgs.allowed(request, Perm.PLAN_CHANGE),
        "can_topup": orgs.allowed(request, Perm.BILLING_TOPUP),
    }
    return render(request, "billing/billing.html", context, status=status)


@requires(Perm.BILLING_VIEW)
@require_GET
def billing_page(request: HttpRequest) -> HttpResponse:
    return _render_page(request)


def _back(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("billing:billing"))


def _stripe_failed(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, stripe_api.BillingDisabled):
        messages.error(request, "Billing is off on this server: an operator credits balances.")
    else:
        log.warning("stripe call failed", extra={"error": str(exc)})
        messages.error(request, "Stripe could not be reached just now. Nothing was charged.")
    return redirect("billing:billing")


@requires(Perm.BILLING_TOPUP)
@require_POST
def topup(request: HttpRequest) -> HttpResponse:
    form = TopUpForm(request.POST)
    if not form.is_valid():
        return _render_page(request, form=form, status=400)
    success = request.build_absolute_uri(reverse("billing:success"))
    try:
        target = checkout.start_topup(
            account=orgs.current_membership(request).account,
            user=_user(request),
            amount_micros=form.cleaned_data["amount"],
            success_url=success + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=_back(request) + "?canceled=1",
        )
    except (stripe.StripeError, stripe_api.BillingDisabled) as exc:
        return _stripe_failed(request, exc)
    return HttpResponseRedirect(target.url, status=303)


@requires(Perm.PLAN_CHANGE)
@require_POST
def subscribe(request: HttpRequest) -> HttpResponse:
    account = orgs.current_membership(request).account
    plan = Plan.objects.filter(slug=request.POST.get("plan", ""), is_public=True).first()
    if plan is None:
        messages.error(request, "Choose one of the plans on offer.")
        return redirect("billing:billing")
    try:
        if plan.monthly_price_micros == 0:
            target = checkout.start_downgrade_to_free(
                account=account, user=_user(request), return_url=_back(request)
            )
        else:
            target = checkout.start_subscription(
                account=account,
                user=_user(request),
                plan=plan,
                success_url=request.build_absolute_uri(reverse("billing:success"))
                + "?session_id={CHECKOUT_SESSION_ID}",
                cancel_url=_back(request),
            )
    except checkout.CheckoutError as exc:
        messages.error(request, str(exc))
        return redirect("billing:billing")
    except (stripe.StripeError, stripe_api.BillingDisabled) as exc:
        return _stripe_failed(request, exc)
    return HttpResponseRedirect(target.url, status=303)


@requires(Perm.BILLING_TOPUP)
@require_POST
def portal(request: HttpRequest) -> HttpResponse:
    try:
        target = checkout.open_portal(
            account=orgs.current_membership(request).account,
            user=_user(request),
            return_url=_back(request),
        )
    except (stripe.StripeError, stripe_api.BillingDisabled) as exc:
        return _stripe_failed(request, exc)
    return HttpResponseRedirect(target.url, status=303)


@requires(Perm.BILLING_VIEW)
@require_GET
def success(request: HttpRequest) -> HttpResponse:
    """Where Checkout sends people back. It credits nothing: only the signed webhook does."""
    account = orgs.current_membership(request).account
    session_id = request.GET.get("session_id", "")[:200]
    entry = (
        LedgerEntry.objects.filter(
            account=account, idempotency_key=f"stripe:checkout:{session_id}"
        ).first()
        if session_id
        else None
    )
    context = {
        "account": account,
        "entry": entry,
        "session_id": session_id,
        "balance": money.format_usd(account.balance_micros),
        "amount": money.format_usd(entry.amount_micros) if entry else "",
    }
    return render(request, "billing/success.html", context)


@requires(Perm.BILLING_VIEW)
@require_GET
def receipt(request: HttpRequest, entry_id: int) -> HttpResponse:
    account = orgs.current_membership(request).account
    entry = get_object_or_404(
        LedgerEntry, pk=entry_id, account=account, kind=LedgerEntry.Kind.TOPUP
    )
    context = {
        "account": account,
        "entry": entry,
        "amount": money.format_usd(entry.amount_micros),
        "balance_after": money.format_usd(entry.balance_after_micros),
    }
    return render(request, "billing/receipt.html", context)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        outcome = webhooks.receive(
            payload=request.body, signature=request.headers.get("Stripe-Signature")
        )
    except webhooks.BadSignature as exc:
        log.warning("stripe webhook refused: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    except webhooks.BadPayload as exc:
        log.warning("stripe webhook malformed: %s", exc)
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"received": True, "outcome": outcome})
