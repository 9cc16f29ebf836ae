"""tf- keys: what one looks like, how it is hashed, issued, verified, rotated and revoked.

Two kinds, never interchangeable: inference keys (``tf-prod-``/``tf-stag-``/``tf-dev-``, ApiKey)
call models and nothing else; management keys (``tf-mgmt-``, ManagementKey) manage an account's
inference keys through /api/keys/ within their scopes and cannot call models."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils.timezone import now

from accounts import audit, signals
from accounts.models import Account, ApiKey, ManagementKey, Membership, User

ENVIRONMENTS = ("prod", "stag", "dev")
RANDOM_LENGTH = 40
MAX_GRACE = timedelta(days=7)
_ALPHABET = string.ascii_lowercase + string.digits
KEY_PATTERN = re.compile(r"^tf-(prod|stag|dev)-[a-z0-9]{32,64}$")
MANAGEMENT_PREFIX = "tf-mgmt-"
MANAGEMENT_PATTERN = re.compile(r"^tf-mgmt-[a-z0-9]{32,64}$")
MANAGEMENT_SCOPES = tuple(ManagementKey.Scope.values)


class KeyError_(ValueError):
    """A key operation that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the full tf- key: shown once, never stored


def generate(environment: str) -> str:
    if environment not in ENVIRONMENTS:
        raise KeyError_(f"environment must be one of {', '.join(ENVIRONMENTS)}")
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"tf-{environment}-{random_part}"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hint_for(secret: str) -> str:
    prefix, _, random_part = secret.rpartition("-")
    return f"{prefix}-{random_part[:4]}...{random_part[-4:]}"


def looks_like_key(secret: str) -> bool:
    return bool(KEY_PATTERN.match(secret))


def _check_caps(account: Account, rpm_limit: int | None, tpm_limit: int | None) -> None:
    plan = account.plan
    if rpm_limit is not None and (rpm_limit < 1 or (plan.rpm_limit and rpm_limit > plan.rpm_limit)):
        raise KeyError_(f"rpm_limit must be between 1 and your plan's {plan.rpm_limit or 'no'} cap")
    if tpm_limit is not None and (tpm_limit < 1 or (plan.tpm_limit and tpm_limit > plan.tpm_limit)):
        raise KeyError_(f"tpm_limit must be between 1 and your plan's {plan.tpm_limit or 'no'} cap")


UNVERIFIED = "confirm your e-mail address first: open the link we mailed you when you signed up"


def account_verified(account: Account) -> bool:
    """Keys work only once one of the account's owners confirmed their address (accounts with
    no people, made by tools and tests, need no one)."""
    owners = Membership.objects.filter(account=account, role=Membership.Role.OWNER)
    return not owners.exists() or owners.filter(user__email_verified_at__isnull=False).exists()


def issue(
    *,
    account: Account,
    name: str,
    environment: str = "prod",
    created_by: User | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
) -> IssuedKey:
    """A new key, refused past the plan's cap on active keys (``Plan.max_keys``)."""
    with transaction.atomic():
        # Lock the account row: two keys created at once cannot both take the last place.
        locked = Account.objects.select_for_update().select_related("plan").get(pk=account.pk)
        cap = locked.plan.max_keys
        if cap is not None and active_count(locked) >= cap:
            raise KeyError_(
                f"your {locked.plan.name} plan allows {cap} active key{'s' if cap != 1 else ''}; "
                "revoke one you no longer use, or change plan, to create another"
            )
        issued = _issue(
            account=account,
            name=name,
            environment=environment,
            created_by=created_by,
            expires_at=expires_at,
            allowed_models=allowed_models,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
        )
        audit.record(
            action="key.created",
            account=account,
            target=issued.key,
            after=_settings(issued.key),
        )
        return issued


def _settings(key: ApiKey) -> dict[str, object]:
    """What an audit event keeps of a key: its settings and hint, never its secret or hash."""
    return {
        "name": key.name,
        "environment": key.environment,
        "hint": key.hint,
        "allowed_models": list(key.allowed_models),
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def active_count(account: Account) -> int:
    """The keys that count against the plan's cap: neither revoked, expired nor rotated away (a
    rotated key in its grace period is on its way out; its successor counts)."""
    return (
        ApiKey.objects.filter(account=account, revoked_at__isnull=True, replaced_by__isnull=True)
        .exclude(expires_at__lte=now())
        .count()
    )


def _issue(
    *,
    account: Account,
    name: str,
    environment: str,
    created_by: User | None,
    expires_at: datetime | None,
    allowed_models: list[str] | None,
    rpm_limit: int | None,
    tpm_limit: int | None,
) -> IssuedKey:
    name = name.strip()
    if not name:
        raise KeyError_("give the key a name, e.g. 'production backend'")
    if expires_at is not None and expires_at <= now():
        raise KeyError_("expires_at must be in the future")
    if not account_verified(account):
        raise KeyError_(UNVERIFIED)
    _check_caps(account, rpm_limit, tpm_limit)
    secret = generate(environment)
    key = ApiKey.objects.create(
        account=account,
        name=name[:100],
        environment=environment,
        key_hash=hash_key(secret),
        hint=hint_for(secret),
        created_by=created_by,
        expires_at=expires_at,
        allowed_models=sorted(set(allowed_models or [])),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
    )
    announce_change(key_hashes=[key.key_hash])
    return IssuedKey(key=key, secret=secret)


def verify(secret: str) -> ApiKey | None:
    """The usable key for ``secret``, or None. The lookup is by hash, so the secret itself is
    never compared; the stored hash is compared in constant time all the same."""
    if not looks_like_key(secret):
        return None
    digest = hash_key(secret)
    key = ApiKey.objects.select_related("account__plan").filter(key_hash=digest).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    if not key.is_usable or not key.account.is_active:
        return None
    return key


def rotate(*, key: ApiKey, grace: timedelta | None = None, by: User | None = None) -> IssuedKey:
    """Issue a successor with the same settings; the old key keeps working for ``grace``."""
    if grace is None:
        grace = timedelta(hours=settings.KEY_ROTATION_GRACE_HOURS)
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise KeyError_("the grace period must be between 0 and 7 days")
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().select_related("account__plan").get(pk=key.pk)
        if not key.is_usable:
            raise KeyError_(f"this key is {key.status} and cannot be rotated; create a new one")
        if key.replaced_by_id is not None:
            raise KeyError_("this key was already rotated; rotate its successor instead")
        # A rotation replaces a key: it never needs a place under the plan's cap.
        successor = _issue(
            account=key.account,
            name=key.name,
            environment=key.environment,
            created_by=by,
            expires_at=key.expires_at,
            allowed_models=list(key.allowed_models),
            rpm_limit=key.rpm_limit,
            tpm_limit=key.tpm_limit,
        )
        if key.monthly_budget_micros is not None:
            # The successor keeps the cap (its month's spend starts from its own requests).
            successor.key.monthly_budget_micros = key.monthly_budget_micros
            successor.key.save(update_fields=["monthly_budget_micros"])
        ends = now() + grace
        key.expires_at = min(key.expires_at, ends) if key.expires_at else ends
        key.replaced_by = successor.key
        key.save(update_fields=["expires_at", "replaced_by"])
        audit.record(
            action="key.rotated",
            account=key.account_id,
            target=key,
            before={"hint": key.hint},
            after={
                "successor_id": successor.key.pk,
                "hint": successor.key.hint,
                "old_key_expires_at": key.expires_at.isoformat(),
            },
        )
    announce_change(key_hashes=[key.key_hash])
    return successor


def revoke(*, key: ApiKey) -> ApiKey:
    """Revoke at once, on every gateway process."""
    with transaction.atomic():
        updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now())
        key.refresh_from_db(fields=["revoked_at"])
        if updated:
            assert key.revoked_at is not None
            audit.record(
                action="key.revoked",
                account=key.account_id,
                target=key,
                before={"status": "active"},
                after={"status": "revoked", "revoked_at": key.revoked_at.isoformat()},
            )
    if updated:
        announce_change(key_hashes=[key.key_hash])
    return key


def update(
    *,
    key: ApiKey,
    name: str | None = None,
    allowed_models: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
) -> ApiKey:
    fields: list[str] = []
    before = _settings(key)
    if name is not None:
        if not name.strip():
            raise KeyError_("a key's name cannot be empty")
        key.name, fields = name.strip()[:100], [*fields, "name"]
    if allowed_models is not None:
        key.allowed_models, fields = sorted(set(allowed_models)), [*fields, "allowed_models"]
    if rpm_limit is not None or tpm_limit is not None:
        _check_caps(key.account, rpm_limit, tpm_limit)
        key.rpm_limit, key.tpm_limit = rpm_limit, tpm_limit
        fields += ["rpm_limit", "tpm_limit"]
    after = _settings(key)
    changed = [field for field in fields if before[field] != after[field]]
    if fields:
        with transaction.atomic():
            key.save(update_fields=fields)
            if changed:
                audit.record(
                    action="key.limits_changed",
                    account=key.account_id,
                    target=key,
                    before={field: before[field] for field in changed},
                    after={field: after[field] for field in changed},
                )
        announce_change(key_hashes=[key.key_hash])
    return key


def announce_change(*, key_hashes: Iterable[str]) -> None:
    """Once this transaction commits, tell every process that caches key facts (the gateway's
    processes) that these keys changed: the one place a key change is announced."""
    hashes = list(key_hashes)
    if hashes:
        transaction.on_commit(lambda: signals.key_changed.send(sender=ApiKey, key_hashes=hashes))


def announce_account_change(*, accounts: Iterable[Account]) -> None:
    """The live keys of these accounts (a list or a queryset) changed with them: their plan,
    its limits, or whether the account is active."""
    announce_change(
        key_hashes=ApiKey.objects.filter(account__in=accounts, revoked_at__isnull=True).values_list(
            "key_hash", flat=True
        )
    )


# --- management keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedManagementKey:
    key: ManagementKey
    secret: str  # the full tf-mgmt- key: shown once, never stored


def looks_like_management_key(secret: str) -> bool:
    return bool(MANAGEMENT_PATTERN.match(secret))


def issue_management(
    *, account: Account, name: str, scopes: Iterable[str], created_by: User | None = None
) -> IssuedManagementKey:
    """A management key for scripts that manage ``account``'s inference keys."""
    name = name.strip()
    if not name:
        raise KeyError_("give the key a name, e.g. 'deploy script'")
    if not account_verified(account):
        raise KeyError_(UNVERIFIED)
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in MANAGEMENT_SCOPES]
    if unknown or not wanted:
        raise KeyError_(f"scopes must be some of {', '.join(MANAGEMENT_SCOPES)}")
    if ManagementKey.Scope.WRITE in wanted and ManagementKey.Scope.READ not in wanted:
        wanted = sorted([*wanted, ManagementKey.Scope.READ])
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_LENGTH))
    secret = f"{MANAGEMENT_PREFIX}{random_part}"
    with transaction.atomic():
        key = ManagementKey.objects.create(
            account=account,
            name=name[:100],
            key_hash=hash_key(secret),
            hint=hint_for(secret),
            scopes=wanted,
            created_by=created_by,
        )
        audit.record(
            action="management_key.created",
            account=account,
            target=key,
            after={"name": key.name, "hint": key.hint, "scopes": list(key.scopes)},
        )
    return IssuedManagementKey(key=key, secret=secret)


def verify_management(secret: str) -> ManagementKey | None:
    """The live management key for ``secret``, or None (an inference key is never one)."""
    if not looks_like_management_key(secret):
        return None
    digest = hash_key(secret)
    key = ManagementKey.objects.select_related("account__plan").filter(key_hash=digest).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    if key.is_revoked or not key.account.is_active:
        return None
    ManagementKey.objects.filter(pk=key.pk).update(last_used_at=now())
    return key


def revoke_management(*, key: ManagementKey) -> ManagementKey:
    with transaction.atomic():
        updated = ManagementKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=now()
        )
        key.refresh_from_db(fields=["revoked_at"])
        if updated:
            audit.record(
                action="management_key.revoked",
                account=key.account_id,
                target=key,
                before={"status": "active"},
                after={"status": "revoked"},
            )
    return key
