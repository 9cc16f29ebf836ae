"""The audit log: an append-only record of every security- and money-relevant action.

``record`` is the one way in. It takes who did it (a person from a request, a key, an operator's
command, a webhook), what (a dotted action name from ``ACTIONS``), on what, and the before and
after values, and drops anything that looks like a secret before it is stored: no key, password,
token or hash is ever written, whatever a caller passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from accounts.models import Account, AuditEvent, Membership, User
from accounts.throttle import client_address
from billing import money

# Every action the log knows, with the words the dashboard shows for it.
ACTIONS: dict[str, str] = {
    "user.signup": "Signed up",
    "user.login": "Logged in",
    "user.login_failed": "Failed log-in",
    "user.logout": "Logged out",
    "user.password_changed": "Changed password",
    "user.password_reset": "Reset password",
    "user.sso_login": "Logged in with single sign-on",
    "org.created": "Created organisation",
    "org.renamed": "Renamed organisation",
    "org.deleted": "Deleted organisation",
    "org.settings_changed": "Changed organisation settings",
    "org.ownership_transferred": "Transferred ownership",
    "member.invited": "Invited a member",
    "member.invitation_revoked": "Withdrew an invitation",
    "member.joined": "Joined",
    "member.role_changed": "Changed a member's role",
    "member.removed": "Removed a member",
    "member.left": "Left the organisation",
    "member.budget_changed": "Changed a member's budget",
    "key.created": "Created a key",
    "key.rotated": "Rotated a key",
    "key.revoked": "Revoked a key",
    "key.limits_changed": "Changed a key's limits",
    "management_key.created": "Created a management key",
    "management_key.revoked": "Revoked a management key",
    "plan.changed": "Changed plan",
    "billing.topup": "Topped up",
    "billing.refund": "Refunded",
    "billing.adjustment": "Adjusted the balance",
    "usage.exported": "Exported usage",
    "audit.exported": "Exported the audit log",
    "admin.changed": "Operator edited",
    "admin.added": "Operator added",
    "admin.deleted": "Operator deleted",
}

# A name is secret when it contains one of these, or has "token" as one of its words (so an
# access_token or X-Auth-Token goes, a plan's window_tokens stays).
_SECRET_WORDS = (
    "secret",
    "password",
    "passwd",
    "hash",
    "api_key",
    "apikey",
    "api-key",
    "private",
    "signature",
    "authorization",
    "cookie",
    "credential",
)
_SECRET_NAMES = frozenset({"key", "raw", "full_key", "auth"})


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SECRET_NAMES
        or any(word in lowered for word in _SECRET_WORDS)
        or "token" in re.split(r"[^a-z0-9]+", lowered)
    )


def scrub(value: Any) -> Any:
    """``value`` with every mapping entry whose name looks secret removed, and any string that
    looks like one of our keys (tf-..., whsec_, sk_) masked."""
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items() if not is_secret_name(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str) and value.startswith(("tf-", "sk_", "sk-", "whsec_", "rk_")):
        return value[:8] + "..." if len(value) > 24 else value
    return value


@dataclass(frozen=True)
class Actor:
    """Who is acting when it is not simply the signed-in person of the request: a management
    key (label: its hint), an operator (label: their e-mail or the command), a webhook (label:
    the event id)."""

    kind: str
    label: str = ""
    user: User | None = None


# The request being served (set by AuditMiddleware) and, when someone other than its signed-in
# person acts, who. The functions that do each action (accounts.keys, billing.ledger,
# billing.plans, ...) record through these, so no view has to pass them along.
_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)
_actor: ContextVar[Actor | None] = ContextVar("audit_actor", default=None)


@contextmanager
def acting(actor: Actor) -> Iterator[Actor]:
    """Everything recorded inside the block is done by ``actor`` (commands, webhooks, tests)."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def act_as(actor: Actor) -> None:
    """Make ``actor`` the one acting for the rest of the current request (AuditMiddleware
    forgets it when the request ends): the management API's key authentication uses it."""
    _actor.set(actor)


def operator(label: str, user: User | None = None) -> Actor:
    return Actor(kind=AuditEvent.ActorKind.OPERATOR, label=label, user=user)


def current_actor() -> Actor | None:
    """The actor set by ``acting`` or ``act_as``, if any (None: the request's person acts)."""
    return _actor.get()


def home_account_id(user: User) -> int | None:
    """The organisation a person's own events (log-ins, password changes) are shown in: their
    oldest membership's."""
    return (
        Membership.objects.filter(user=user)
        .order_by("created_at", "id")
        .values_list("account_id", flat=True)
        .first()
    )


def _is_admin_path(path: str) -> bool:
    return path.startswith(reverse("admin:index"))


class AuditMiddleware:
    """Remembers the request being served, so an event recorded anywhere while serving it has
    its address and user agent; in the admin, a staff member acts as an operator."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_token = _request.set(request)
        actor = None
        if _is_admin_path(request.path_info) and getattr(request.user, "is_staff", False):
            user = request.user if isinstance(request.user, User) else None
            actor = operator(user.email if user else "admin", user)
        actor_token = _actor.set(actor)
        try:
            return self.get_response(request)
        finally:
            _actor.reset(actor_token)
            _request.reset(request_token)


def record(
    *,
    action: str,
    account: Account | int | None = None,
    request: HttpRequest | None = None,
    user: User | None = None,
    actor_kind: str | None = None,
    actor_label: str = "",
    target: Any = None,
    target_kind: str = "",
    target_id: str | int = "",
    target_label: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Append one event. The actor is, first found: ``actor_kind``/``user`` as given, the actor
    set by ``acting``/``act_as`` (an operator, a management key, a webhook), the request's
    signed-in person. The address and user agent come from ``request`` (by default the request
    being served). ``target`` may be a model instance (its class name, pk and str become the
    target)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to accounts.audit.ACTIONS")
    if request is None:
        request = _request.get()
    acting_now = _actor.get()
    if actor_kind is None and user is None and acting_now is not None:
        actor_kind, user = acting_now.kind, acting_now.user
        actor_label = actor_label or acting_now.label
    if user is None and actor_kind is None and request is not None:
        signed_in = getattr(request, "user", None)
        user = signed_in if isinstance(signed_in, User) else None
    kind = actor_kind or (AuditEvent.ActorKind.USER if user is not None else "system")
    if target is not None:
        target_kind = target_kind or type(target).__name__.lower()
        target_id = target_id or getattr(target, "pk", "") or ""
        target_label = target_label or str(target)
    return AuditEvent.objects.create(
        action=action,
        account_id=account.pk if isinstance(account, Account) else account,
        actor_kind=kind,
        actor_user=user,
        actor_label=(actor_label or (user.email if user is not None else ""))[:200],
        target_kind=target_kind[:32],
        target_id=str(target_id)[:64],
        target_label=str(target_label)[:200],
        ip=client_address(request) if request is not None else None,
        user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:300] if request else "",
        before=scrub(before),
        after=scrub(after),
    )


# --- log-ins and log-outs: Django's auth signals, connected in accounts.apps -------------------


def _logged_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    if request is not None and getattr(request, "tf_sso_pending", None) is not None:
        return  # a single sign-on log-in: accounts/sso_adapter.py records user.sso_login
    record(action="user.login", account=home_account_id(user), request=request, user=user)


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if isinstance(user, User):
        record(action="user.logout", account=home_account_id(user), request=request, user=user)


def _login_failed(
    sender: Any, credentials: Mapping[str, Any], request: HttpRequest | None = None, **kw: Any
) -> None:
    """Only the address someone typed is kept (Django hands the password masked anyway)."""
    attempted = next(
        (
            str(credentials[name])
            for name in (User.USERNAME_FIELD, "username", "email")
            if credentials.get(name)
        ),
        "",
    )
    record(
        action="user.login_failed",
        request=request,
        actor_kind=AuditEvent.ActorKind.USER,
        actor_label=attempted,
        target_kind="user",
        target_label=attempted,
    )


# --- reading the log: the dashboard page and its CSV ------------------------------------------

# The first word of an action name, as the page's category filter offers them.
CATEGORIES: dict[str, str] = {
    "user": "Sign-ups and log-ins",
    "org": "Organisation",
    "member": "Members",
    "key": "API keys",
    "management_key": "Management keys",
    "plan": "Plan",
    "billing": "Money",
    "usage": "Usage exports",
    "audit": "Audit exports",
    "admin": "Operator edits",
}


@dataclass(frozen=True)
class Filters:
    """What the audit page shows: ``action`` is a whole action name or a category (its first
    word); ``actor`` and ``target`` match part of the name shown; dates are inclusive, UTC."""

    action: str = ""
    actor: str = ""
    target: str = ""
    since: date | None = None
    until: date | None = None

    def as_dict(self) -> dict[str, str]:
        return {
            name: str(value)
            for name, value in (
                ("action", self.action),
                ("actor", self.actor),
                ("target", self.target),
                ("since", self.since or ""),
                ("until", self.until or ""),
            )
            if value
        }


def events(*, account_id: int, filters: Filters) -> QuerySet[AuditEvent]:
    """An organisation's events, newest first, narrowed by ``filters``."""
    rows = AuditEvent.objects.filter(account_id=account_id)
    if filters.action in ACTIONS:
        rows = rows.filter(action=filters.action)
    elif filters.action:
        rows = rows.filter(action__startswith=filters.action + ".")
    if filters.actor:
        rows = rows.filter(actor_label__icontains=filters.actor)
    if filters.target:
        rows = rows.filter(
            Q(target_label__icontains=filters.target)
            | Q(target_id=filters.target)
            | Q(target_kind__iexact=filters.target)
        )
    if filters.since is not None:
        rows = rows.filter(at__gte=datetime.combine(filters.since, dt_time.min, tzinfo=UTC))
    if filters.until is not None:
        end = datetime.combine(filters.until + timedelta(days=1), dt_time.min, tzinfo=UTC)
        rows = rows.filter(at__lt=end)
    return rows.order_by("-at", "-id")


def changes(event: AuditEvent) -> list[tuple[str, Any, Any]]:
    """The event's before and after as (field, before, after) rows; None where one side has
    nothing (an addition has no before, a deletion no after). Fields a new thing leaves unset
    are left out."""
    before = event.before if isinstance(event.before, dict) else {}
    after = event.after if isinstance(event.after, dict) else {}
    names = list(dict.fromkeys([*before, *after]))
    rows = [(name, before.get(name), after.get(name)) for name in names]
    # A new thing's unset settings say nothing: leave them out.
    kept = [row for row in rows if row[1] is not None or row[2] not in (None, "", [])]
    return [_in_dollars(*row) if row[0].endswith("_micros") else row for row in kept]


def _in_dollars(name: str, before: Any, after: Any) -> tuple[str, Any, Any]:
    """An amount in micro-dollars as people read it: ``monthly_budget: $0.50``."""

    def shown(value: Any) -> Any:
        return money.format_usd(value) if isinstance(value, int) and value is not True else value

    return name.removesuffix("_micros"), shown(before), shown(after)


def listen() -> None:
    """Connect the log-in signals (AccountsConfig.ready)."""
    user_logged_in.connect(_logged_in, dispatch_uid="audit.user_logged_in")
    user_logged_out.connect(_logged_out, dispatch_uid="audit.user_logged_out")
    user_login_failed.connect(_login_failed, dispatch_uid="audit.user_login_failed")
