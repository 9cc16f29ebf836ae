"""Which organisation a signed-in request acts for, with which role, and the guard every
dashboard view puts in front of itself.

A person may belong to several organisations. The one they act for is kept in the session
(``ORG_SESSION_KEY``, set by the switcher); without it, or when that membership is gone, it is
their oldest membership. ``requires(perm)`` logs the person in if needed, resolves the membership,
answers 403 when the role lacks the permission (accounts/roles.py) and leaves ``request.membership``
and ``request.account`` for the view. When the organisation requires single sign-on and the
session began with a password, ``requires`` answers 403 with a page that says to sign in through
the provider (owners are exempt: accounts/sso.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse

from accounts import sso
from accounts.models import Account, ApiKey, Membership, User
from accounts.roles import Perm, can
from billing import plans

ORG_SESSION_KEY = "tf_org"

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


def memberships(user: User) -> list[Membership]:
    return list(
        Membership.objects.select_related("account__plan")
        .filter(user=user, account__is_active=True)
        .order_by("created_at", "id")
    )


def personal_membership(user: User) -> Membership:
    """The person's first membership, creating a personal organisation they own if they have
    none (someone removed from their only organisation still has a place to land)."""
    found = memberships(user)
    if found:
        return found[0]
    with transaction.atomic():
        account = Account.objects.create(name=user.name or user.email, plan=plans.default())
        return Membership.objects.create(user=user, account=account, role=Membership.Role.OWNER)


def membership_for(user: User, wanted: Any) -> Membership:
    """The person's membership in organisation ``wanted`` (an id kept in a session), or their
    first one when that is gone or was never chosen. The live meter's websocket uses it too."""
    membership = None
    if isinstance(wanted, int):
        membership = (
            Membership.objects.select_related("account__plan", "user")
            .filter(user=user, account_id=wanted, account__is_active=True)
            .first()
        )
    return membership or personal_membership(user)


def current_membership(request: HttpRequest) -> Membership:
    """The membership a signed-in request acts through (cached on the request)."""
    cached = getattr(request, "membership", None)
    if isinstance(cached, Membership):
        return cached
    user = request.user
    assert isinstance(user, User)
    wanted = request.session.get(ORG_SESSION_KEY)
    membership = membership_for(user, wanted)
    if membership.account_id != wanted:
        request.session[ORG_SESSION_KEY] = membership.account_id
    request.membership = membership  # type: ignore[attr-defined]
    request.account = membership.account  # type: ignore[attr-defined]
    return membership


def switch(request: HttpRequest, account_id: int) -> Membership | None:
    """Act for another organisation the person belongs to; None if they do not."""
    user = request.user
    assert isinstance(user, User)
    membership = (
        Membership.objects.select_related("account__plan")
        .filter(user=user, account_id=account_id, account__is_active=True)
        .first()
    )
    if membership is not None:
        request.session[ORG_SESSION_KEY] = membership.account_id
        request.membership = membership  # type: ignore[attr-defined]
        request.account = membership.account  # type: ignore[attr-defined]
    return membership


def allowed(request: HttpRequest, perm: Perm) -> bool:
    return can(current_membership(request).role, perm)


def keys_for(membership: Membership) -> QuerySet[ApiKey]:
    """The inference keys this member may see and manage: every key of the organisation with
    KEYS_ALL, otherwise the ones they made."""
    rows = ApiKey.objects.filter(account_id=membership.account_id)
    if not can(membership.role, Perm.KEYS_ALL):
        rows = rows.filter(created_by_id=membership.user_id)
    return rows


def usage_key_ids(membership: Membership) -> list[int] | None:
    """Whose usage this member sees: None for the whole organisation's (USAGE_ALL), otherwise
    the ids of the keys they made (USAGE_OWN)."""
    if can(membership.role, Perm.USAGE_ALL):
        return None
    return list(
        ApiKey.objects.filter(
            account_id=membership.account_id, created_by_id=membership.user_id
        ).values_list("pk", flat=True)
    )


def requires(*perms: Perm) -> Callable[[View], View]:
    """Guard a dashboard view: signed in, and the current role holds every one of ``perms``
    (403 otherwise). The view finds ``request.membership`` and ``request.account`` set."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = current_membership(request)
            refused = sso.refusal(request, membership)
            if refused is not None:
                context = {"reason": refused, "next": request.get_full_path()}
                return TemplateResponse(request, "accounts/sso_required.html", context, status=403)
            missing = [perm for perm in perms if not can(membership.role, perm)]
            if missing:
                raise PermissionDenied(
                    f"Your role in {membership.account.name} ({membership.role}) does not allow "
                    "this. Ask an owner or admin of the organisation."
                )
            return view(request, *args, **kwargs)

        guarded.required_perms = perms  # type: ignore[attr-defined]
        return cast(View, guarded)

    return decorate
