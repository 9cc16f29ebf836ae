"""The audit log: an append-only record of every security- and money-relevant action.

``record`` is the one way in. It takes who did it (a person from a request, a key, an operator's
command, a webhook), what (a dotted action name from ``ACTIONS``), on what, and the before and
after values, and drops anything that looks like a secret before it is stored: no key, password,
token or hash is ever written, whatever a caller passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

from accounts.models import Account, AuditEvent, User
from accounts.throttle import client_address

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

_SECRET_WORDS = ("secret", "password", "token", "hash", "api_key", "apikey", "private", "signature")
_SECRET_NAMES = frozenset({"key", "raw", "full_key", "credential", "credentials"})


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


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
    """Append one event. The actor is ``user`` (or the request's signed-in person) unless
    ``actor_kind`` says otherwise; the address and user agent come from ``request``. ``target``
    may be a model instance (its class name, pk and str become the target)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to accounts.audit.ACTIONS")
    if user is None and request is not None and isinstance(request.user, User):
        user = request.user
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
