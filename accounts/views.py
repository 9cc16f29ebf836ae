"""Dashboard pages: sign-up, keys and plans (the home page is gateway/pages/home.py). Each view
parses a form, calls one function of accounts.services or accounts.keys, and renders."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django_ratelimit.decorators import ratelimit

from accounts import audit, budgets, keys, orgs, throttle, verification
from accounts.forms import (
    KeyCreateForm,
    KeyRotateForm,
    ManagementKeyCreateForm,
    PlanSwitchForm,
    SignupForm,
)
from accounts.models import Account, ApiKey, ManagementKey, Membership, User
from accounts.orgs import current_membership, requires
from accounts.roles import Perm, can
from accounts.services import SignupError, request_sign_up
from billing import plans
from billing.models import Plan
from billing.money import format_usd

# The one-shot reveal of a new key, set after create or rotate and taken by the next keys page.
# The secret is split so that no server-side store ever holds it: the session (a database row)
# keeps it XORed with a random pad, and the pad lives only in a short-lived cookie in the
# browser that asked for the key. Either half alone is noise.
REVEAL_SESSION_KEY = "tf_reveal_key"
REVEAL_COOKIE = "tf_reveal_pad"
REVEAL_COOKIE_MAX_AGE_S = 300


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _account(request: HttpRequest) -> Account:
    return orgs.current_membership(request).account


def window_text(plan: Plan) -> str:
    tokens = f"{plan.window_tokens:,} tokens" if plan.window_tokens else "unlimited tokens"
    if plan.window_kind == Plan.WindowKind.ROLLING:
        return f"{tokens} per {plan.window_hours}-hour window"
    if plan.window_kind == Plan.WindowKind.CALENDAR_MONTH:
        return f"{tokens} per calendar month"
    return "No token window"


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "landing.html", {"public_plans": Plan.objects.filter(is_public=True)})


@ratelimit(key=throttle.client_key, rate=throttle.signup_client_rate, method="POST", group="signup")
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """The same answer whether or not the address already has an account: check your inbox."""
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        try:
            request_sign_up(
                email=email,
                password=form.cleaned_data["password1"],
                base_url=request.build_absolute_uri("/").rstrip("/"),
            )
        except SignupError as exc:
            form.add_error("password1" if exc.field == "password" else "email", exc.message)
        else:
            return render(request, "registration/signup_sent.html", {"email": email.lower()})
    return render(request, "registration/signup.html", {"form": form})


@require_http_methods(["GET"])
def verify_email(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    user = verification.verify_email(uidb64=uidb64, token=token)
    if user is None or not user.is_active:
        return render(request, "registration/verify_failed.html", status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, "Your e-mail address is confirmed. Create a key to make a call.")
    return redirect("dashboard")


def _keys_page(
    request: HttpRequest,
    account: Account,
    form: KeyCreateForm | None = None,
    status: int = 200,
    management_form: ManagementKeyCreateForm | None = None,
) -> HttpResponse:
    reveal = _unseal(request)
    membership = orgs.current_membership(request)
    context: dict[str, Any] = {
        "account": account,
        "plan": account.plan,
        "keys": orgs.keys_for(membership).select_related("replaced_by", "created_by"),
        "all_keys": can(membership.role, Perm.KEYS_ALL),
        "can_manage": can(membership.role, Perm.MANAGEMENT_KEYS),
        "form": form or KeyCreateForm(plan=account.plan),
        "rotate_form": KeyRotateForm(),
        "reveal": reveal,
        "verified": keys.account_verified(account),
        "management_keys": ManagementKey.objects.filter(account=account),
        "management_form": management_form or ManagementKeyCreateForm(),
    }
    response = render(request, "accounts/keys.html", context, status=status)
    # The page may hold a key shown once: never let a cache or the back button keep it.
    response["Cache-Control"] = "no-store"
    if REVEAL_COOKIE in request.COOKIES:
        response.delete_cookie(REVEAL_COOKIE, path=reverse("keys"), samesite="Strict")
    return response


def _reveal_redirect(
    request: HttpRequest, issued: keys.IssuedKey | keys.IssuedManagementKey, action: str
) -> HttpResponse:
    """Back to the keys page, which shows ``issued``'s secret once (see REVEAL_SESSION_KEY)."""
    secret = issued.secret.encode()
    pad = secrets.token_bytes(len(secret))
    request.session[REVEAL_SESSION_KEY] = {
        "id": issued.key.pk,
        "account": issued.key.account_id,
        "name": issued.key.name,
        "sealed": bytes(a ^ b for a, b in zip(secret, pad, strict=True)).hex(),
        "action": action,
    }
    response = redirect("keys")
    response.set_cookie(
        REVEAL_COOKIE,
        pad.hex(),
        max_age=REVEAL_COOKIE_MAX_AGE_S,
        path=reverse("keys"),
        secure=request.is_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


def _unseal(request: HttpRequest) -> dict[str, Any] | None:
    """The new key to show, once: the session's half and the browser's half put together."""
    stored = request.session.get(REVEAL_SESSION_KEY)
    if not isinstance(stored, dict):
        return None
    if stored.get("account", _account(request).pk) != _account(request).pk:
        return None  # made in another organisation: shown when the person is back in it
    request.session.pop(REVEAL_SESSION_KEY, None)
    try:
        sealed = bytes.fromhex(stored["sealed"])
        pad = bytes.fromhex(request.COOKIES.get(REVEAL_COOKIE, ""))
    except (KeyError, TypeError, ValueError):
        return None
    if len(pad) != len(sealed):
        # The cookie expired or was refused: the key cannot be shown again, only replaced.
        messages.error(
            request,
            f"The new key “{stored.get('name', '')}” could not be shown (this browser did not "
            "keep the cookie that holds half of it). Rotate it to get a new one.",
        )
        return None
    secret = bytes(a ^ b for a, b in zip(sealed, pad, strict=True)).decode()
    return {
        "id": stored.get("id"),
        "name": stored.get("name"),
        "secret": secret,
        "action": stored.get("action"),
    }


@requires(Perm.KEYS_OWN)
@require_http_methods(["GET", "POST"])
def keys_page(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    if request.method != "POST":
        return _keys_page(request, account)
    form = KeyCreateForm(request.POST, plan=account.plan)
    if form.is_valid():
        data = form.cleaned_data
        try:
            issued = keys.issue(
                account=account,
                name=data["name"],
                environment=data["environment"],
                created_by=_user(request),
                expires_at=data["expires_at"],
                allowed_models=list(data["allowed_models"]),
                rpm_limit=data["rpm_limit"],
                tpm_limit=data["tpm_limit"],
            )
        except keys.KeyError_ as exc:
            form.add_error(None, str(exc))
        else:
            return _reveal_redirect(request, issued, "created")
    return _keys_page(request, account, form=form, status=400)


@requires(Perm.MANAGEMENT_KEYS)
@require_http_methods(["POST"])
def management_key_create(request: HttpRequest) -> HttpResponse:
    account = _account(request)
    form = ManagementKeyCreateForm(request.POST)
    if form.is_valid():
        access = form.cleaned_data["access"]
        try:
            issued = keys.issue_management(
                account=account,
                name=form.cleaned_data["name"],
                scopes=[ManagementKey.Scope.READ, access],
                created_by=_user(request),
            )
        except keys.KeyError_ as exc:
            form.add_error(None, str(exc))
        else:
            return _reveal_redirect(request, issued, "created")
    return _keys_page(request, account, status=400, management_form=form)


@requires(Perm.MANAGEMENT_KEYS)
@require_http_methods(["POST"])
def management_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ManagementKey, pk=key_id, account=_account(request))
    keys.revoke_management(key=key)
    messages.success(request, f"Revoked {key.name} ({key.hint}). It stopped working at once.")
    return redirect("keys")


def _own_key(request: HttpRequest, key_id: int) -> ApiKey:
    """A key this member may manage: any of the organisation's with KEYS_ALL, else their own."""
    rows = orgs.keys_for(orgs.current_membership(request)).select_related("account__plan")
    return get_object_or_404(rows, pk=key_id)


@requires(Perm.KEYS_OWN)
@require_http_methods(["POST"])
def key_rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    key = _own_key(request, key_id)
    form = KeyRotateForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(str(e) for e in form.errors.get("grace_hours", ["invalid value"]))
        messages.error(request, f"Grace period: {errors}")
        return redirect("keys")
    try:
        issued = keys.rotate(
            key=key, grace=timedelta(hours=form.cleaned_data["grace_hours"]), by=_user(request)
        )
    except keys.KeyError_ as exc:
        messages.error(request, str(exc).capitalize() + ".")
        return redirect("keys")
    return _reveal_redirect(request, issued, "rotated")


@requires(Perm.KEYS_OWN)
@require_http_methods(["GET", "POST"])
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """GET, or a POST without ``confirm=yes`` (no JavaScript to ask), shows a confirmation page."""
    key = _own_key(request, key_id)
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        keys.revoke(key=key)
        messages.success(request, f"Revoked {key.name} ({key.hint}). It stopped working at once.")
        return redirect("keys")
    return render(request, "accounts/key_revoke.html", {"key": key})


def _plans_page(request: HttpRequest, account: Account, status: int = 200) -> HttpResponse:
    rows = [
        {"plan": plan, "window": window_text(plan), "price": format_usd(plan.monthly_price_micros)}
        for plan in Plan.objects.filter(is_public=True)
    ]
    context = {
        "account": account,
        "current": account.plan,
        "rows": rows,
        "can_change": orgs.allowed(request, Perm.PLAN_CHANGE),
    }
    return render(request, "accounts/plans.html", context, status=status)


class LogoutView(auth_views.LogoutView):
    """Django's log-out, which then says so on the page it lands on."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.success(request, "You are logged out.")
        return response


def _public_plans_page(request: HttpRequest) -> HttpResponse:
    rows = [
        {"plan": plan, "window": window_text(plan), "price": format_usd(plan.monthly_price_micros)}
        for plan in Plan.objects.filter(is_public=True)
    ]
    return render(request, "accounts/plans.html", {"account": None, "current": None, "rows": rows})


@require_http_methods(["GET", "POST"])
def plans_page(request: HttpRequest) -> HttpResponse:
    """Anyone may read the plans (the landing page links here); switching needs a log-in and
    PLAN_CHANGE in the organisation (403 otherwise)."""
    if not request.user.is_authenticated:
        if request.method == "POST":
            return redirect_to_login(request.get_full_path())
        return _public_plans_page(request)
    account = _account(request)
    if request.method != "POST":
        return _plans_page(request, account)
    if not orgs.allowed(request, Perm.PLAN_CHANGE):
        raise PermissionDenied(
            f"Your role in {account.name} does not allow changing its plan. Ask an owner or admin."
        )
    form = PlanSwitchForm(request.POST)
    slug = form.cleaned_data["plan"] if form.is_valid() else request.POST.get("plan", "")
    plan = Plan.objects.filter(slug=slug, is_public=True).first()
    if plan is None:
        offered = ", ".join(Plan.objects.filter(is_public=True).values_list("slug", flat=True))
        messages.error(
            request, f"There is no plan called {slug!r} to switch to. Plans on offer: {offered}."
        )
        return _plans_page(request, account, status=400)
    if plan.pk == account.plan_id:
        messages.info(request, f"You are already on {plan.name}.")
    elif settings.STRIPE_SECRET_KEY and plan.monthly_price_micros > 0:
        # With billing on, a paid plan starts with a payment: the billing page subscribes.
        messages.info(
            request,
            f"{plan.name} is {format_usd(plan.monthly_price_micros)} a month: subscribe below "
            "and it applies as soon as Stripe confirms the payment.",
        )
        return redirect("billing:billing")
    else:
        plans.assign_plan(account=account, plan=plan)
        note = (
            " Billing is off on this server, so no payment is taken."
            if plan.monthly_price_micros > 0
            else ""
        )
        messages.success(
            request, f"You are now on {plan.name}. Its limits apply to every key.{note}"
        )
    return redirect("plans")


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change, with the change in the audit log."""

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        audit.record(
            action="user.password_changed", account=audit.home_account_id(user), target=user
        )
        return response


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's reset-link page, with the reset in the audit log (done by the link's holder)."""

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        audit.record(
            action="user.password_reset",
            account=audit.home_account_id(user),
            user=user,
            target=user,
        )
        return response


# --- budgets -------------------------------------------------------------------------------


@requires(Perm.BUDGETS)
@require_http_methods(["GET", "POST"])
def budgets_page(request: HttpRequest) -> HttpResponse:
    """Members and keys with their month-to-date spend against their monthly caps; a cap is
    typed in dollars (empty: none)."""
    account = current_membership(request).account
    error = ""
    if request.method == "POST":
        kind = request.POST.get("kind", "")
        target_id = request.POST.get("id", "")
        if kind not in ("member", "key") or not target_id.isdigit():
            error = "Choose a member or a key to set a budget for."
        else:
            try:
                cap = budgets.parse_usd(request.POST.get("budget_usd", ""))
                if kind == "member":
                    member = get_object_or_404(Membership, pk=int(target_id), account=account)
                    budgets.set_member_budget(membership=member, budget_micros=cap, request=request)
                    label = member.user.email
                else:
                    key = get_object_or_404(ApiKey, pk=int(target_id), account=account)
                    budgets.set_key_budget(key=key, budget_micros=cap, request=request)
                    label = f"the key {key.name}"
            except budgets.BudgetError as exc:
                error = str(exc)
            else:
                shown = "no cap" if cap is None else f"{format_usd(cap)} a month"
                messages.success(request, f"The budget of {label} is now {shown}.")
                return redirect("budgets")
    return render(
        request,
        "accounts/budgets.html",
        {"overview": budgets.overview(account=account), "error": error},
        status=400 if error else 200,
    )
