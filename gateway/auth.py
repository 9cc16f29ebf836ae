"""Who is calling: tf- keys resolved to a Caller from a per-process cache, so an admitted request
costs no database query, while a revoked or changed key stops working on every process at once."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest

from accounts import keys
from accounts.models import ApiKey, Membership
from gateway import store
from tokenfactory.db import reconnecting

CHANGE_PREFIX = "tf:keychg:"
_MAX_ENTRIES = 50_000
_NEGATIVE_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: int
    key_hash: str
    account_id: int
    environment: str
    plan_slug: str
    plan_name: str
    rpm_limit: int | None  # this key's (the plan's per-key limit, or the key's own lower one)
    tpm_limit: int | None
    account_rpm_limit: int | None  # the plan's, for all the account's keys together
    account_tpm_limit: int | None
    window_kind: str
    window_hours: int
    window_tokens: int | None
    model_tiers: frozenset[str]
    allowed_models: frozenset[str]
    expires_at: float | None
    version: int  # the key's change counter when this process loaded it
    # Monthly spend caps in micro-dollars (None: no cap): the key's own, and the one of the member
    # who made the key (``member_id``: that Membership's id; None for a key nobody in the
    # organisation made).
    key_budget_micros: int | None = None
    member_id: int | None = None
    member_budget_micros: int | None = None

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()

    def may_use(self, model_id: str, tier: str) -> bool:
        if self.allowed_models and model_id not in self.allowed_models:
            return False
        return "*" in self.model_tiers or tier in self.model_tiers


_cache: OrderedDict[str, tuple[Caller | None, float]] = OrderedDict()


# The Caller a request's key resolved to, kept on the request (as Django keeps ``request.user``)
# so its answer can carry the caller's rate-limit headers whatever view built it.
_REQUEST_ATTR = "tf_caller"


def remember(request: HttpRequest, caller: Caller) -> None:
    setattr(request, _REQUEST_ATTR, caller)


def remembered(request: HttpRequest) -> Caller | None:
    found = getattr(request, _REQUEST_ATTR, None)
    return found if isinstance(found, Caller) else None


def bearer_from(request: HttpRequest) -> str:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def _lowest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def caller_for(key: ApiKey, version: int = 0) -> Caller:
    plan = key.account.plan
    member = (
        Membership.objects.filter(account_id=key.account_id, user_id=key.created_by_id)
        .values_list("pk", "monthly_budget_micros")
        .first()
        if key.created_by_id is not None
        else None
    )
    return Caller(
        key_id=key.pk,
        key_hash=key.key_hash,
        account_id=key.account_id,
        environment=key.environment,
        plan_slug=plan.slug,
        plan_name=plan.name,
        rpm_limit=_lowest(plan.rpm_limit, key.rpm_limit),
        tpm_limit=_lowest(plan.tpm_limit, key.tpm_limit),
        account_rpm_limit=plan.account_rpm_limit,
        account_tpm_limit=plan.account_tpm_limit,
        window_kind=plan.window_kind,
        window_hours=plan.window_hours,
        window_tokens=plan.window_tokens,
        model_tiers=frozenset(plan.model_tiers),
        allowed_models=frozenset(key.allowed_models),
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        version=version,
        key_budget_micros=key.monthly_budget_micros,
        member_id=member[0] if member else None,
        member_budget_micros=member[1] if member else None,
    )


@reconnecting
def _load(secret: str, version: int) -> Caller | None:
    key = keys.verify(secret)
    return caller_for(key, version) if key is not None else None


_local_versions: dict[str, int] = {}


def local_version(key_hash: str) -> int:
    """The key's change counter in this process (embedded mode: no Redis to keep it)."""
    return _local_versions.get(key_hash, 0)


async def key_version(key_hash: str) -> int:
    """The key's change counter now (Redis, or this process without Redis)."""
    redis = store.client()
    if redis is None:
        return local_version(key_hash)
    value = await redis.get(CHANGE_PREFIX + key_hash)
    return int(value) if value is not None else 0


async def authenticate(secret: str, *, refresh: bool = False) -> Caller | None:
    """The Caller for a raw key, or None when it is unknown, revoked or expired."""
    if not keys.looks_like_key(secret):
        return None
    digest = keys.hash_key(secret)
    hit = None if refresh else _cache.get(digest)
    ttl = settings.GATEWAY_KEY_CACHE_SECONDS
    if hit is not None:
        caller, loaded = hit
        age = time.monotonic() - loaded
        if (caller is not None and age < ttl) or (caller is None and age < _NEGATIVE_TTL_S):
            if caller is not None and caller.is_expired():
                return None
            return caller
    # Read the change counter before the row, so a change racing this load is seen as stale.
    version = await key_version(digest)
    caller = await sync_to_async(_load, thread_sensitive=False)(secret, version)
    _cache[digest] = (caller, time.monotonic())
    _cache.move_to_end(digest)
    while len(_cache) > _MAX_ENTRIES:
        _cache.popitem(last=False)
    return caller


async def is_stale(caller: Caller) -> bool:
    """True when the key changed after this process cached it (one Redis GET). Admission does the
    same check inside its own script, so gated requests pay nothing extra for it."""
    return await key_version(caller.key_hash) != caller.version


async def authenticate_fresh(secret: str) -> Caller | None:
    """The Caller for a raw key, checked against the key's change counter: what every
    key-authenticated path that does not go through admission (which checks the counter inside
    its own script) uses, so a key revoked or narrowed on another process stops here at once."""
    caller = await authenticate(secret)
    if caller is not None and await is_stale(caller):
        caller = await authenticate(secret, refresh=True)
    return caller


def invalidate(sender: object = None, *, key_hashes: Iterable[str], **kwargs: object) -> None:
    """Forget these keys here and make every other process reload them. The receiver of
    accounts.signals.key_changed (connected in gateway/apps.py)."""
    hashes = list(key_hashes)
    for key_hash in hashes:
        _cache.pop(key_hash, None)
    redis = store.sync_client()
    if redis is None:
        # A Caller cached before the change (a request between authenticating and admission)
        # is stale at admission, as the Redis counter makes it with several processes.
        for key_hash in hashes:
            _local_versions[key_hash] = local_version(key_hash) + 1
    elif hashes:
        # Every process compares this counter with the one it saw when it cached the key.
        pipe = redis.pipeline()
        for key_hash in hashes:
            pipe.incr(CHANGE_PREFIX + key_hash)
            pipe.expire(CHANGE_PREFIX + key_hash, 7 * 24 * 3600)
        pipe.execute()


def clear() -> None:
    _cache.clear()
