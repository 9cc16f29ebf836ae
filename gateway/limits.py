"""Whether a request may run, and settling it afterwards.

Admission checks and reserves, in one atomic step: the key's requests and tokens this minute (RPM,
TPM: input estimate plus the output ceiling), the same for all the account's keys together (the
plan's account-wide ceiling: more keys do not mean more capacity), the account's token window,
and, when the window cannot cover the request, the prepaid balance at the model's prices; and the
monthly spend caps of the key and of the member who made it (``accounts.budgets``), each holding
the request's cost ceiling. Settlement swaps the reservation for the exact usage and hands the
usage record to metering. With Redis both steps are one Lua script call each (one round trip on
the multiplexed connection of ``store.call``), shared by every gateway process; without Redis
(the embedded default, one process) the same rules run on in-process dictionaries.

The contract is named: ``admit`` builds one AdmitRequest, either limiter answers a Decision, and
settling takes a Settlement. When a limiter has no live copy of the account's window or balance
it answers "need_window"/"need_balance"; ``admit`` loads both from the account row and asks
again with them, and the limiter sets whichever is still absent and decides in the same atomic
step; "need_spend" likewise loads the month's spend of the key and the member from the usage
records. When windows open, close and reset is ``billing.windows``; prices are
``money.request_cost``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import NoScriptError, RedisError

from accounts import budgets
from accounts.models import Account
from billing import money, windows
from gateway import auth, metering, store
from gateway.auth import CHANGE_PREFIX, Caller
from gateway.catalog import ModelInfo
from gateway.metering import UsageRecord
from tokenfactory.db import reconnecting

INFLIGHT_KEY = "tf:inflight"
USAGE_STREAM = "tf:usage"
logger = logging.getLogger("tokenfactory.limits")
_UNLIMITED = -1
# Refusals that a minute's passing lifts: the key's RPM/TPM, or the account's (all keys together).
RATE_REFUSALS = ("rpm", "tpm", "account_rpm", "account_tpm")
_SHAS: dict[str, str] = {}


class Stale(Exception):
    """The key changed since this process cached it; reload it and admit again."""


class Unavailable(Exception):
    """Redis cannot be reached and GATEWAY_REDIS_DOWN is "closed": nothing may be admitted."""


class Refused(Exception):
    def __init__(
        self,
        reason: str,
        *,
        retry_after: int = 0,
        headers: dict[str, str] | None = None,
        tokens: int = 0,
        cap_micros: int = 0,
        spent_micros: int = 0,
        held_micros: int = 0,
        cost_micros: int = 0,
        resets_at_ms: int = 0,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.headers = headers or {}
        self.tokens = tokens  # what the refused request counted (window and TPM refusals)
        # A monthly spend cap's refusal ("key_budget", "member_budget"): the cap, what the month
        # spent so far, what requests in flight hold, what this one could cost, when it resets.
        self.cap_micros = cap_micros
        self.spent_micros = spent_micros
        self.held_micros = held_micros
        self.cost_micros = cost_micros
        self.resets_at_ms = resets_at_ms


@dataclass(slots=True)
class Admission:
    request_id: str
    caller: Caller
    model: ModelInfo
    minute: int
    tpm_reserved: int
    window_start_ms: int
    window_reserved: int
    paid: bool
    reserved_micros: int
    headers: dict[str, str] = field(default_factory=dict)
    account_tpm_reserved: int = 0
    settled: bool = False
    local: bool = False  # admitted on this process's counters while Redis was down
    # The monthly spend caps' holds (micro-dollars) and the month (its start) they were held in.
    budget_month_ms: int = 0
    key_budget_held: int = 0
    member_budget_held: int = 0


@dataclass(slots=True, kw_only=True)
class AdmitRequest:
    """Everything one admission decides on, by name: built once per request by ``admit``, read
    field by field by ``MemoryLimiter.admit`` and (as one JSON argument) by the Redis script.
    Limits of ``-1`` mean "no limit"."""

    now_ms: int
    request_id: str
    key_version: int
    counts_rpm: bool
    rpm_limit: int  # the key's
    tpm_limit: int
    account_rpm_limit: int  # all the account's keys together
    account_tpm_limit: int
    # Tokens, three ways (see ``admit``): what the minute's TPM counts, what the window must have
    # left to serve the request, and what the window holds while it runs (capped at what is left).
    tpm_tokens: int
    need_tokens: int
    reserve_tokens: int
    window_kind: str  # "none" (no window limit), "rolling" or "calendar_month"
    window_hours: int
    window_limit: int
    month_start_ms: int  # billing.windows.month_bounds_ms(now_ms), for calendar-month windows
    month_end_ms: int
    # Micro-dollars, when the balance pays: what it must cover (at the estimate) and what it holds
    # while the request runs (at the bound, capped at the balance).
    need_cost_micros: int
    cost_micros: int
    paid_only: bool  # a unit-priced request: the balance pays, never the token window
    inflight: dict[str, Any]  # what the reaper needs if this process dies before settling
    # The account's persisted window and balance, loaded from the database only after a limiter
    # answered "need_window" or "need_balance"; the limiter sets them only where still absent.
    restored_start_ms: int | None = None
    restored_end_ms: int | None = None
    restored_used: int | None = None
    balance_micros: int | None = None
    # Monthly spend caps in micro-dollars (-1: none): the key's, and the member's who made it
    # (``member_id``: the Membership, 0 for none). Each holds ``cost_micros`` (the request's
    # ceiling) while it runs; the month is [month_start_ms, month_end_ms). The month's spend so
    # far, loaded from the database only after a limiter answered "need_spend".
    key_budget_micros: int = _UNLIMITED
    member_id: int = 0
    member_budget_micros: int = _UNLIMITED
    restored_key_spent: int | None = None
    restored_member_spent: int | None = None


@dataclass(slots=True, kw_only=True)
class Decision:
    """What admission answered, by name. ``outcome`` is "ok", a refusal ("rpm", "tpm" for the
    key; "account_rpm", "account_tpm" for all the account's keys; "budget", "balance";
    "key_budget", "member_budget" for the monthly spend caps), "stale" (the key changed), or
    "need_window"/"need_balance"/"need_spend" (load the persisted state and ask again).
    Both limiters return one; the Redis script's reply becomes one in ``_decision`` only."""

    outcome: str
    rpm_used: int = 0
    reset_s: int = 0
    window_remaining: int = 0
    window_start_ms: int = 0
    window_end_ms: int = 0
    tpm_reserved: int = 0
    account_tpm_reserved: int = 0
    window_reserved: int = 0
    paid: bool = False
    cost_micros: int = 0
    balance_micros: int = 0
    # A spend cap: its refusal's cap, spent and held; an admission's holds.
    budget_cap_micros: int = 0
    budget_spent_micros: int = 0
    budget_held_micros: int = 0
    key_budget_held: int = 0
    member_budget_held: int = 0


@dataclass(slots=True, kw_only=True)
class Settlement:
    """What settling one request changes, by name: the reservation it made and what it used."""

    request_id: str
    account_id: int
    key_id: int | None
    minute: int
    tpm_reserved: int  # 0: the key has no TPM limit (or the reaper does not know it)
    tokens: int
    window_start_ms: int
    window_reserved: int
    paid: bool
    reserved_micros: int
    billed_micros: int
    account_tpm_reserved: int = 0  # 0: no account-wide TPM limit (or the reaper)
    # The monthly spend: the member whose keys' spend counts together (0: none), the month the
    # caps' holds were made in, the holds, and what the request cost at the model's prices.
    member_id: int = 0
    budget_month_ms: int = 0
    key_budget_held: int = 0
    member_budget_held: int = 0
    spent_micros: int = 0

    @classmethod
    def of(
        cls, admission: Admission, *, tokens: int, billed_micros: int, spent_micros: int = 0
    ) -> Settlement:
        caller = admission.caller
        return cls(
            request_id=admission.request_id,
            account_id=caller.account_id,
            key_id=caller.key_id,
            minute=admission.minute,
            tpm_reserved=admission.tpm_reserved if caller.tpm_limit is not None else 0,
            tokens=tokens,
            window_start_ms=admission.window_start_ms,
            window_reserved=admission.window_reserved,
            paid=admission.paid,
            reserved_micros=admission.reserved_micros,
            billed_micros=billed_micros,
            account_tpm_reserved=admission.account_tpm_reserved,
            member_id=caller.member_id or 0,
            budget_month_ms=admission.budget_month_ms,
            key_budget_held=admission.key_budget_held,
            member_budget_held=admission.member_budget_held,
            spent_micros=spent_micros,
        )


def _limit(value: int | None) -> int:
    return _UNLIMITED if value is None else value


def reservation_micros(
    model: ModelInfo,
    input_tokens: int,
    output_tokens: int,
    *,
    unit_cost_micros: int | None = None,
    price_factor_percent: int = 100,
) -> int:
    """What admission holds back from the balance: the request's price at its ceiling."""
    return money.request_cost(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price_micros=model.input_price_micros,
        output_price_micros=model.output_price_micros,
        unit_cost_micros=unit_cost_micros,
        price_factor_percent=price_factor_percent,
    )


async def admit(
    caller: Caller,
    model: ModelInfo,
    *,
    input_tokens: int,
    max_output_tokens: int,
    request_id: str,
    input_bound: int | None = None,
    requested_output_tokens: int = 0,
    counts_rpm: bool = True,
    price_factor_percent: int = 100,
    surface: str = "",
    unit_cost_micros: int | None = None,
) -> Admission:
    """Admit and reserve, or raise Refused (or Stale).

    ``input_tokens`` is the input's estimate and ``input_bound`` the most any upstream can count
    for it (``tokens.measure_input``); ``max_output_tokens`` the output ceiling (max_tokens, else
    the model's limit, times ``n``) and ``requested_output_tokens`` the max_tokens the client
    asked for (0: none). From them:

    - TPM (the key's and the account's) counts the larger of the requested output and the input
      estimate, as OpenAI's limiter does; settling corrects it to the real count. A request that
      counts more than the limit itself is refused outright ("tpm_too_large"), never admitted.
    - The window serves the request when what is left covers the input estimate plus the
      requested output, and holds the bound plus the ceiling, capped at what is left. The
      balance, when it pays, must cover the estimate's cost and holds the bound's, capped at the
      balance. So however densely a prompt tokenizes, the bound is held while it runs, and only
      a request that took all that was left can overrun it: a balance never ends below zero (a
      window never past its limit) by more than one request's underestimate.

    ``price_factor_percent`` scales the balance reservation (batch lines cost half).
    ``unit_cost_micros`` is set for a unit-priced request (audio seconds, characters, images): a
    plan's window counts tokens, so such a request is always paid from the prepaid balance,
    which must cover that cost."""
    now_ms = int(time.time() * 1000)
    month_start_ms, month_end_ms = windows.month_bounds_ms(now_ms)
    window_limit = _limit(caller.window_tokens)
    bound = max(input_tokens, input_bound if input_bound is not None else input_tokens)
    requested = min(max(0, requested_output_tokens), max_output_tokens)
    tpm_tokens = max(1, requested, input_tokens)
    for reason, limit in (
        ("tpm_too_large", caller.tpm_limit),
        ("account_tpm_too_large", caller.account_tpm_limit),
    ):
        if limit is not None and tpm_tokens > limit:
            raise Refused(reason, tokens=tpm_tokens)
    req = AdmitRequest(
        now_ms=now_ms,
        request_id=request_id,
        key_version=caller.version,
        counts_rpm=counts_rpm,
        rpm_limit=_limit(caller.rpm_limit),
        tpm_limit=_limit(caller.tpm_limit),
        account_rpm_limit=_limit(caller.account_rpm_limit),
        account_tpm_limit=_limit(caller.account_tpm_limit),
        tpm_tokens=tpm_tokens,
        need_tokens=max(1, input_tokens + requested),
        reserve_tokens=max(1, bound + max_output_tokens),
        window_kind=caller.window_kind if window_limit != _UNLIMITED else "none",
        window_hours=caller.window_hours,
        window_limit=window_limit,
        month_start_ms=month_start_ms,
        month_end_ms=month_end_ms,
        need_cost_micros=reservation_micros(
            model,
            input_tokens,
            requested,
            unit_cost_micros=unit_cost_micros,
            price_factor_percent=price_factor_percent,
        ),
        cost_micros=reservation_micros(
            model,
            bound,
            max_output_tokens,
            unit_cost_micros=unit_cost_micros,
            price_factor_percent=price_factor_percent,
        ),
        paid_only=unit_cost_micros is not None,
        key_budget_micros=_limit(caller.key_budget_micros),
        member_id=caller.member_id or 0,
        member_budget_micros=_limit(
            caller.member_budget_micros if caller.member_id is not None else None
        ),
        inflight={
            "account_id": caller.account_id,
            "key_id": caller.key_id,
            "model": model.model_id,
            "at_ms": now_ms,
            "surface": surface,
            "member_id": caller.member_id or 0,
            "budget_month_ms": month_start_ms,
        },
    )
    if req.window_kind not in ("none", "rolling", "calendar_month"):
        req.window_kind = "none"
    limiter = _limiter()
    try:
        return await _admit_on(limiter, caller, model, req)
    except RedisError as exc:
        logger.warning(
            "limits.redis_down", extra={"request_id": request_id, "error": type(exc).__name__}
        )
        if settings.GATEWAY_REDIS_DOWN != "open":
            raise Unavailable() from exc
    # Fail open: this process's own counters decide until Redis answers again.
    admission = await _admit_on(_memory, caller, model, req)
    admission.local = True
    return admission


async def _admit_on(
    limiter: RedisLimiter | MemoryLimiter, caller: Caller, model: ModelInfo, req: AdmitRequest
) -> Admission:
    for _ in range(4):
        decision = await limiter.admit(caller, req)
        if decision.outcome == "need_spend":
            # No live copy of the month's spend of the key or the member: the database's.
            key_spent, member_spent = await sync_to_async(
                budgets.spent_this_month, thread_sensitive=False
            )(
                account_id=caller.account_id,
                key_id=caller.key_id,
                member_id=req.member_id or None,
                month_start_ms=req.month_start_ms,
                month_end_ms=req.month_end_ms,
            )
            req.restored_key_spent, req.restored_member_spent = key_spent, member_spent
            continue
        if decision.outcome not in ("need_window", "need_balance"):
            return _admission(decision, caller, model, req)
        # The limiter has no live copy of the account's window or balance: load both (one row)
        # and ask again; the limiter sets whichever is still absent, atomically, and decides.
        started_ms, used, balance = await sync_to_async(_persisted, thread_sensitive=False)(
            caller.account_id
        )
        start, end, used = windows.restored_ms(
            kind=req.window_kind,
            hours=req.window_hours,
            started_ms=started_ms,
            used=used,
            now_ms=req.now_ms,
        )
        req.restored_start_ms, req.restored_end_ms, req.restored_used = start, end, used
        req.balance_micros = balance
    raise RuntimeError(f"admission kept asking for the account's state: {decision!r}")


def _headers(
    caller: Caller, rpm_used: int, reset_s: int, window_remaining: int | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    if caller.rpm_limit is not None:
        out["X-RateLimit-Limit"] = str(caller.rpm_limit)
        out["X-RateLimit-Remaining"] = str(max(0, caller.rpm_limit - rpm_used))
    out["X-RateLimit-Reset"] = str(reset_s)
    if window_remaining is not None:
        out["X-Token-Budget-Remaining"] = str(max(0, window_remaining))
    return out


def _admission(d: Decision, caller: Caller, model: ModelInfo, req: AdmitRequest) -> Admission:
    """An admitted request's Admission, or the refusal raised."""
    window_remaining = None if req.window_kind == "none" else d.window_remaining
    if d.outcome == "ok":
        return Admission(
            request_id=req.request_id,
            caller=caller,
            model=model,
            minute=req.now_ms // 60_000,
            tpm_reserved=d.tpm_reserved,
            account_tpm_reserved=d.account_tpm_reserved,
            window_start_ms=d.window_start_ms,
            window_reserved=d.window_reserved,
            paid=d.paid,
            reserved_micros=d.cost_micros,
            headers=_headers(caller, d.rpm_used, d.reset_s, window_remaining),
            budget_month_ms=req.month_start_ms,
            key_budget_held=d.key_budget_held,
            member_budget_held=d.member_budget_held,
        )
    if d.outcome == "stale":
        raise Stale()
    now_s = req.now_ms / 1000
    if d.outcome in RATE_REFUSALS:
        headers = _headers(caller, d.rpm_used, d.reset_s, window_remaining)
        retry = max(1, math.ceil(d.reset_s - now_s))
        raise Refused(d.outcome, retry_after=retry, headers=headers)
    if d.outcome == "budget":
        # What is left of the window is shown as it is: not enough for this request's estimate,
        # but a smaller request may still fit.
        headers = _headers(caller, d.rpm_used, d.reset_s, window_remaining)
        retry = max(1, math.ceil(d.window_end_ms / 1000 - now_s))
        raise Refused("budget", retry_after=retry, headers=headers, tokens=req.need_tokens)
    if d.outcome in ("key_budget", "member_budget"):
        headers = _headers(caller, d.rpm_used, d.reset_s, window_remaining)
        raise Refused(
            d.outcome,
            retry_after=max(1, math.ceil(req.month_end_ms / 1000 - now_s)),
            headers=headers,
            cap_micros=d.budget_cap_micros,
            spent_micros=d.budget_spent_micros,
            held_micros=d.budget_held_micros,
            cost_micros=req.cost_micros,
            resets_at_ms=req.month_end_ms,
        )
    if d.outcome == "balance":
        headers = _headers(caller, d.rpm_used, d.reset_s, d.window_remaining)
        headers["X-Balance-Micros"] = str(d.balance_micros)
        raise Refused("balance", headers=headers)
    raise RuntimeError(f"unexpected admission decision {d!r}")


async def settle(
    admission: Admission, *, tokens: int, billed_micros: int, record: UsageRecord
) -> None:
    """Swap the reservation for what was used and queue the usage record, exactly once."""
    if admission.settled:
        return
    admission.settled = True
    data = record.to_json()
    settlement = Settlement.of(
        admission, tokens=tokens, billed_micros=billed_micros, spent_micros=record.cost_micros
    )
    if admission.local or not store.enabled():
        _memory.settle(settlement, data)
        return
    try:
        await _redis_limiter.settle(settlement, data)
    except RedisError:
        # Redis went away after admission: the reservation lapses with its keys' TTLs, but the
        # record must not be lost; this process writes it to the database itself.
        logger.exception("limits.settle_failed", extra={"request_id": admission.request_id})
        metering.enqueue_local(data)
        return
    metering.kick()


@reconnecting
def _persisted(account_id: int) -> tuple[int, int, int]:
    """What the database keeps of the account's live state, in one read: the window's start in ms
    (0: none opened), the tokens used in it, and the prepaid balance in micro-dollars."""
    row = (
        Account.objects.filter(pk=account_id)
        .values_list("window_started_at", "window_used_tokens", "balance_micros")
        .first()
    )
    if row is None:
        return 0, 0, 0
    started, used, balance = row
    if started is None:
        return 0, 0, int(balance or 0)
    return windows.to_ms(started), int(used or 0), int(balance or 0)


def persist_windows(account_ids: set[int]) -> None:
    """Write the accounts' live windows to their rows (after their usage records landed), so a
    Redis that lost its state, or a restart, resumes each window where it was."""
    for account_id in account_ids:
        state = window_state(account_id)
        if not state or not state.get("start"):
            continue
        Account.objects.filter(pk=account_id).update(
            window_started_at=datetime.fromtimestamp(state["start"] / 1000, tz=UTC),
            window_used_tokens=state.get("used", 0),
        )


_REAP_EVERY_S = 30.0
_last_reap = 0.0


def reap_now_and_then() -> None:
    """``reap_abandoned``, at most every 30 s of this process (called at each metering drain)."""
    global _last_reap
    now = time.monotonic()
    if now - _last_reap < _REAP_EVERY_S:
        return
    _last_reap = now
    reap_abandoned()


def balance_moved(account_id: int, amount_micros: int) -> None:
    """A top-up or refund landed in the ledger: move the live spendable balance with it."""
    redis = store.sync_client()
    if redis is not None:
        # Only if a live copy exists; otherwise the next admission loads it from the database.
        redis.eval(_MOVE_BALANCE, 1, f"tf:bal:{account_id}", amount_micros)
    else:
        _memory.move_balance(account_id, amount_micros)


def window_state(account_id: int) -> dict[str, int] | None:
    """The live window (start_ms, end_ms, used, reserved), for pages and the live meter."""
    redis = store.sync_client()
    if redis is not None:
        raw = redis.hgetall(f"tf:win:{account_id}")
        if not raw:
            return None
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    found = _memory.windows.get(account_id)
    return dict(found) if found else None


def budget_state(kind: str, subject_id: int) -> dict[str, int] | None:
    """The live month spend of a key (``kind`` "key") or a member ("member"): month (its start,
    ms), spent and reserved, in micro-dollars; None when no live copy is kept."""
    name = budget_key(kind, subject_id)
    redis = store.sync_client()
    if redis is not None:
        raw = redis.hgetall(name)
        if not raw:
            return None
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    found = _memory.spend.get(name)
    return dict(found) if found else None


def live_balance(account_id: int) -> int | None:
    redis = store.sync_client()
    if redis is not None:
        value = redis.get(f"tf:bal:{account_id}")
        return int(value) if value is not None else None
    return _memory.balances.get(account_id)


def reset_memory() -> None:
    _memory.__init__()  # type: ignore[misc]


# --- the Redis limiter -------------------------------------------------------------------------
#
# Admission is one EVALSHA; settlement (with the usage record's append to the metering stream) is
# another. Each takes its inputs as one JSON object (AdmitRequest / the settlement's fields, read
# by name with cjson) and admission replies with a flat {name, value, name, value, ...} list that
# ``_decision`` turns into a Decision. Lua numbers are doubles: exact for every integer below
# 2**53 (milliseconds, tokens, micro-dollars up to $9 billion).

# The window rule of billing.windows.in_force_ms, line for line (tests/billing/test_windows.py
# runs this chunk on Redis against the Python). In: kind, now, wstart, wend and the request's
# month bounds and hours; out: wstart, wend and reset.
WINDOW_RULE_LUA = """
local reset = false
if kind == 'calendar_month' then
  if wstart ~= a.month_start_ms then
    wstart, wend, reset = a.month_start_ms, a.month_end_ms, true
  end
elseif kind == 'rolling' and (wstart == 0 or now >= wend) then
  wstart, wend, reset = now, now + a.window_hours * 3600000, true
end
"""

_ADMIT = (
    """
local a = cjson.decode(ARGV[1])
local now = a.now_ms
if tonumber(redis.call('GET', KEYS[5]) or '0') ~= a.key_version then
  return {'outcome', 'stale'}
end
if type(a.balance_micros) == 'number' and redis.call('EXISTS', KEYS[4]) == 0 then
  -- Loaded with the window from the account row: kept now, so a request that first needs the
  -- balance later does not need the database (which may be down by then).
  redis.call('SET', KEYS[4], a.balance_micros)
end
local reset_s = (math.floor(now / 60000) + 1) * 60
local rpm_used = 0
local counts_rpm = a.counts_rpm and a.rpm_limit >= 0
if counts_rpm then rpm_used = tonumber(redis.call('GET', KEYS[1]) or '0') end
local counts_arpm = a.counts_rpm and a.account_rpm_limit >= 0
local kind = a.window_kind
local wstart, wend, wused, wres = 0, 0, 0, 0
if kind ~= 'none' then
  local w = redis.call('HMGET', KEYS[3], 'start', 'end', 'used', 'reserved')
  if w[1] then
    wstart, wend, wused, wres = tonumber(w[1]), tonumber(w[2]), tonumber(w[3]), tonumber(w[4])
  elseif type(a.restored_used) == 'number' then
    -- First admission since Redis lost (or never had) the window: set all of it at once.
    wstart, wend, wused = a.restored_start_ms, a.restored_end_ms, a.restored_used
    redis.call('HSET', KEYS[3], 'start', wstart, 'end', wend, 'used', wused, 'reserved', 0)
  else
    return {'outcome', 'need_window'}
  end
"""
    + WINDOW_RULE_LUA
    + """
  if reset then wused, wres = 0, 0 end
end
local remaining = a.window_limit - wused - wres
if counts_rpm and rpm_used >= a.rpm_limit then
  return {'outcome', 'rpm', 'rpm_used', rpm_used, 'reset_s', reset_s,
    'window_remaining', remaining}
end
if counts_arpm and tonumber(redis.call('GET', KEYS[7]) or '0') >= a.account_rpm_limit then
  return {'outcome', 'account_rpm', 'rpm_used', rpm_used, 'reset_s', reset_s,
    'window_remaining', remaining}
end
local reserve = a.tpm_tokens
local tpm_limit = a.tpm_limit
if tpm_limit >= 0 then
  if tonumber(redis.call('GET', KEYS[2]) or '0') + reserve > tpm_limit then
    return {'outcome', 'tpm', 'rpm_used', rpm_used, 'reset_s', reset_s,
      'window_remaining', remaining}
  end
end
local areserve = 0
local atpm_limit = a.account_tpm_limit
if atpm_limit >= 0 then
  areserve = a.tpm_tokens
  if tonumber(redis.call('GET', KEYS[8]) or '0') + areserve > atpm_limit then
    return {'outcome', 'account_tpm', 'rpm_used', rpm_used, 'reset_s', reset_s,
      'window_remaining', remaining}
  end
end
-- The monthly spend caps (the key's, then its member's): the month's spend, what requests in
-- flight hold, and this request's ceiling must fit under each. Checked before anything is held.
local caps = {}
if a.key_budget_micros >= 0 then
  caps[#caps + 1] = {KEYS[9], a.key_budget_micros, a.restored_key_spent, 'key_budget'}
end
if a.member_budget_micros >= 0 then
  caps[#caps + 1] = {KEYS[10], a.member_budget_micros, a.restored_member_spent, 'member_budget'}
end
for _, c in ipairs(caps) do
  local h = redis.call('HMGET', c[1], 'month', 'spent', 'reserved')
  local spent, held = 0, 0
  if h[1] and tonumber(h[1]) >= a.month_start_ms then
    spent, held = tonumber(h[2]), tonumber(h[3])
  elseif type(c[3]) == 'number' then
    -- No live copy of this month's spend (Redis lost it, never had it, or holds an earlier
    -- month's): the database's, loaded after the 'need_spend' below.
    spent = c[3]
    redis.call('HSET', c[1], 'month', a.month_start_ms, 'spent', spent, 'reserved', 0)
    -- Kept a day past the month's end (relative to the request's clock, not the server's).
    redis.call('PEXPIRE', c[1], a.month_end_ms + 86400000 - now)
  else
    return {'outcome', 'need_spend'}
  end
  if spent + held + a.cost_micros > c[2] then
    return {'outcome', c[4], 'budget_cap_micros', c[2], 'budget_spent_micros', spent,
      'budget_held_micros', held, 'rpm_used', rpm_used, 'reset_s', reset_s,
      'window_remaining', remaining}
  end
end
local paid, cost, wreserve = 0, 0, 0
if kind ~= 'none' then
  if not a.paid_only and remaining > 0 and remaining >= a.need_tokens then
    wreserve = math.min(a.reserve_tokens, remaining)
  else
    paid = 1
    local bal = redis.call('GET', KEYS[4])
    if bal then
      bal = tonumber(bal)
    elseif type(a.balance_micros) == 'number' then
      bal = a.balance_micros
      redis.call('SET', KEYS[4], bal)
    else
      return {'outcome', 'need_balance'}
    end
    if bal <= 0 and not a.paid_only then
      return {'outcome', 'budget', 'window_end_ms', wend, 'rpm_used', rpm_used,
        'reset_s', reset_s, 'window_remaining', remaining}
    end
    if bal < a.need_cost_micros then
      return {'outcome', 'balance', 'balance_micros', bal, 'rpm_used', rpm_used,
        'reset_s', reset_s, 'window_remaining', remaining}
    end
    cost = math.min(bal, a.cost_micros)
    if cost > 0 then redis.call('DECRBY', KEYS[4], cost) end
  end
  redis.call('HSET', KEYS[3], 'start', wstart, 'end', wend, 'used', wused,
    'reserved', wres + wreserve)
  remaining = a.window_limit - wused - wres - wreserve
end
local kheld, mheld = 0, 0
for _, c in ipairs(caps) do
  if a.cost_micros > 0 then redis.call('HINCRBY', c[1], 'reserved', a.cost_micros) end
  if c[4] == 'key_budget' then kheld = a.cost_micros else mheld = a.cost_micros end
end
-- A minute's counters live two minutes; a key created now is the only one without a TTL.
if counts_rpm then
  rpm_used = redis.call('INCR', KEYS[1])
  if rpm_used == 1 then redis.call('EXPIRE', KEYS[1], 120) end
end
if tpm_limit >= 0 and redis.call('INCRBY', KEYS[2], reserve) == reserve then
  redis.call('EXPIRE', KEYS[2], 120)
end
if counts_arpm and redis.call('INCR', KEYS[7]) == 1 then redis.call('EXPIRE', KEYS[7], 120) end
if atpm_limit >= 0 and redis.call('INCRBY', KEYS[8], areserve) == areserve then
  redis.call('EXPIRE', KEYS[8], 120)
end
-- What the reaper needs to release this reservation if the process serving it dies.
local entry = a.inflight
entry.window_start_ms, entry.window_reserved, entry.paid, entry.cost_micros =
  wstart, wreserve, paid, cost
entry.key_budget_held, entry.member_budget_held = kheld, mheld
redis.call('HSET', KEYS[6], a.request_id, cjson.encode(entry))
return {'outcome', 'ok', 'rpm_used', rpm_used, 'reset_s', reset_s,
  'window_remaining', remaining, 'paid', paid, 'window_start_ms', wstart,
  'window_end_ms', wend, 'tpm_reserved', reserve, 'window_reserved', wreserve,
  'cost_micros', cost, 'account_tpm_reserved', areserve, 'key_budget_held', kheld,
  'member_budget_held', mheld}
"""
)

# ARGV[1]: the settlement (JSON, by name); ARGV[2]: the usage record, appended as it is.
_SETTLE = """
local s = cjson.decode(ARGV[1])
if redis.call('HDEL', KEYS[4], s.request_id) == 0 then return 0 end
local actual = s.tokens
if s.tpm_reserved > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  local now_used = redis.call('INCRBY', KEYS[1], actual - s.tpm_reserved)
  if now_used < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
if s.account_tpm_reserved > 0 and redis.call('EXISTS', KEYS[6]) == 1 then
  local now_used = redis.call('INCRBY', KEYS[6], actual - s.account_tpm_reserved)
  if now_used < 0 then redis.call('SET', KEYS[6], 0, 'KEEPTTL') end
end
local wstart = s.window_start_ms
if wstart > 0 and tonumber(redis.call('HGET', KEYS[2], 'start') or '0') == wstart then
  -- 0 - x, not -x: Lua's -0 reaches Redis as "-0", which it refuses as an integer.
  redis.call('HINCRBY', KEYS[2], 'reserved', 0 - s.window_reserved)
  redis.call('HINCRBY', KEYS[2], 'used', actual)
end
if s.paid and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], s.reserved_micros - s.billed_micros)
end
-- The month's spend of the key and of its member, where kept live (capped or not) and still
-- the month the request was admitted in: the hold released, the cost added.
for _, c in ipairs({{KEYS[7], s.key_budget_held}, {KEYS[8], s.member_budget_held}}) do
  if tonumber(redis.call('HGET', c[1], 'month') or '-1') == s.budget_month_ms then
    if c[2] > 0 and redis.call('HINCRBY', c[1], 'reserved', 0 - c[2]) < 0 then
      redis.call('HSET', c[1], 'reserved', 0)
    end
    if s.spent_micros > 0 then redis.call('HINCRBY', c[1], 'spent', s.spent_micros) end
  end
end
redis.call('XADD', KEYS[5], '*', 'r', ARGV[2])
return 1
"""

_MOVE_BALANCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return nil
"""

_DECISION_FIELDS = {f.name.encode(): f.name for f in dataclasses.fields(Decision)}


def _decision(reply: list[Any]) -> Decision:
    """The admission script's reply, ``{name, value, name, value, ...}``, as a Decision: the one
    place it is read."""
    values: dict[str, Any] = {}
    for i in range(0, len(reply), 2):
        name = _DECISION_FIELDS[reply[i]]
        values[name] = reply[i + 1]
    values["outcome"] = values["outcome"].decode()
    if "paid" in values:
        values["paid"] = bool(values["paid"])
    return Decision(**values)


def _sha(script: str) -> str:
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324
    return sha


class RedisLimiter:
    async def _run(self, script: str, keys: list[str], argv: list[Any]) -> Any:
        # One round trip: EVALSHA, falling back to EVAL the first time a server sees the script.
        try:
            return await store.call("EVALSHA", _sha(script), len(keys), *keys, *argv)
        except NoScriptError:
            return await store.call("EVAL", script, len(keys), *keys, *argv)

    async def admit(self, caller: Caller, req: AdmitRequest) -> Decision:
        minute = req.now_ms // 60_000
        keys = [
            f"tf:rpm:{caller.key_id}:{minute}",
            f"tf:tpm:{caller.key_id}:{minute}",
            f"tf:win:{caller.account_id}",
            f"tf:bal:{caller.account_id}",
            CHANGE_PREFIX + caller.key_hash,
            INFLIGHT_KEY,
            f"tf:arpm:{caller.account_id}:{minute}",
            f"tf:atpm:{caller.account_id}:{minute}",
            budget_key("key", caller.key_id),
            budget_key("member", req.member_id),
        ]
        return _decision(await self._run(_ADMIT, keys, [orjson.dumps(req)]))

    async def settle(self, s: Settlement, record: bytes) -> bool:
        keys = _settle_keys(s)
        return bool(await self._run(_SETTLE, keys, [orjson.dumps(s), record]))


def _settle_keys(s: Settlement) -> list[str]:
    return [
        f"tf:tpm:{s.key_id}:{s.minute}",
        f"tf:win:{s.account_id}",
        f"tf:bal:{s.account_id}",
        INFLIGHT_KEY,
        USAGE_STREAM,
        f"tf:atpm:{s.account_id}:{s.minute}",
        budget_key("key", s.key_id or 0),
        budget_key("member", s.member_id),
    ]


def budget_key(kind: str, subject_id: int) -> str:
    """The Redis hash of a key's ("key") or a member's ("member") month spend: month (its start,
    ms), spent and reserved, in micro-dollars."""
    return f"tf:spend:{kind}:{subject_id}"


# --- the in-process limiter (embedded default: one process, no Redis) ---------------------------


class MemoryLimiter:
    """The same rules as the Lua scripts, for one process. No awaits inside a decision, so each
    one is atomic on the event loop."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.windows: dict[int, dict[str, int]] = {}
        self.balances: dict[int, int] = {}
        self.balances_loaded_ms: dict[int, int] = {}
        self.inflight: dict[str, dict[str, Any]] = {}
        self.spend: dict[str, dict[str, int]] = {}  # budget_key(...): month, spent, reserved

    def _prune(self, minute: int) -> None:
        if len(self.counters) > 10_000:
            self.counters = {
                k: v for k, v in self.counters.items() if int(k.rsplit(":", 1)[1]) >= minute - 1
            }

    async def admit(self, caller: Caller, req: AdmitRequest) -> Decision:
        # Embedded, the key's change counter lives in this process. Standing in for Redis while
        # it is down (fail open), the caller's counter came from Redis and cannot be compared.
        if not store.enabled() and req.key_version != auth.local_version(caller.key_hash):
            return Decision(outcome="stale")
        now = req.now_ms
        minute = now // 60_000
        self._prune(minute)
        reset_s = (minute + 1) * 60
        rpm_key, tpm_key = f"rpm:{caller.key_id}:{minute}", f"tpm:{caller.key_id}:{minute}"
        if req.balance_micros is not None:
            # Loaded with the window from the account row: kept now (see the Lua script).
            self.balances.setdefault(caller.account_id, req.balance_micros)
        arpm_key, atpm_key = (
            f"arpm:{caller.account_id}:{minute}",
            f"atpm:{caller.account_id}:{minute}",
        )
        counts_rpm = req.counts_rpm and req.rpm_limit >= 0
        counts_arpm = req.counts_rpm and req.account_rpm_limit >= 0
        rpm_used = self.counters.get(rpm_key, 0) if counts_rpm else 0
        kind = req.window_kind
        wstart = wend = wused = wres = 0
        if kind != "none":
            w = self.windows.get(caller.account_id)
            if w is not None:
                wstart, wend, wused, wres = w["start"], w["end"], w["used"], w["reserved"]
            elif req.restored_used is not None:
                wstart, wend = req.restored_start_ms or 0, req.restored_end_ms or 0
                wused = req.restored_used
                self.windows[caller.account_id] = {
                    "start": wstart,
                    "end": wend,
                    "used": wused,
                    "reserved": 0,
                }
            else:
                return Decision(outcome="need_window")
            wstart, wend, reset = windows.in_force_ms(
                kind=kind, hours=req.window_hours, start_ms=wstart, end_ms=wend, now_ms=now
            )
            if reset:
                wused = wres = 0
        remaining = req.window_limit - wused - wres
        if counts_rpm and rpm_used >= req.rpm_limit:
            return Decision(
                outcome="rpm", rpm_used=rpm_used, reset_s=reset_s, window_remaining=remaining
            )
        if counts_arpm and self.counters.get(arpm_key, 0) >= req.account_rpm_limit:
            return Decision(
                outcome="account_rpm",
                rpm_used=rpm_used,
                reset_s=reset_s,
                window_remaining=remaining,
            )
        reserve = req.tpm_tokens
        if req.tpm_limit >= 0 and self.counters.get(tpm_key, 0) + reserve > req.tpm_limit:
            return Decision(
                outcome="tpm", rpm_used=rpm_used, reset_s=reset_s, window_remaining=remaining
            )
        areserve = 0
        if req.account_tpm_limit >= 0:
            areserve = req.tpm_tokens
            if self.counters.get(atpm_key, 0) + areserve > req.account_tpm_limit:
                return Decision(
                    outcome="account_tpm",
                    rpm_used=rpm_used,
                    reset_s=reset_s,
                    window_remaining=remaining,
                )
        caps = []
        if req.key_budget_micros >= 0:
            caps.append(
                (
                    budget_key("key", caller.key_id),
                    req.key_budget_micros,
                    req.restored_key_spent,
                    "key_budget",
                )
            )
        if req.member_budget_micros >= 0:
            caps.append(
                (
                    budget_key("member", req.member_id),
                    req.member_budget_micros,
                    req.restored_member_spent,
                    "member_budget",
                )
            )
        for name, cap, restored, outcome in caps:
            h = self.spend.get(name)
            if h is not None and h["month"] >= req.month_start_ms:
                spent, held = h["spent"], h["reserved"]
            elif restored is not None:
                spent, held = restored, 0
                self.spend[name] = {"month": req.month_start_ms, "spent": spent, "reserved": 0}
            else:
                return Decision(outcome="need_spend")
            if spent + held + req.cost_micros > cap:
                return Decision(
                    outcome=outcome,
                    budget_cap_micros=cap,
                    budget_spent_micros=spent,
                    budget_held_micros=held,
                    rpm_used=rpm_used,
                    reset_s=reset_s,
                    window_remaining=remaining,
                )
        paid = False
        cost = wreserve = 0
        if kind != "none":
            if not req.paid_only and remaining > 0 and remaining >= req.need_tokens:
                wreserve = min(req.reserve_tokens, remaining)
            else:
                paid = True
                balance = self.balances.get(caller.account_id)
                if balance is None or self._balance_stale(caller.account_id, now):
                    if req.balance_micros is None:
                        return Decision(outcome="need_balance")
                    balance = self.balances[caller.account_id] = req.balance_micros
                    self.balances_loaded_ms[caller.account_id] = now
                if balance <= 0 and not req.paid_only:
                    return Decision(
                        outcome="budget",
                        window_end_ms=wend,
                        rpm_used=rpm_used,
                        reset_s=reset_s,
                        window_remaining=remaining,
                    )
                if balance < req.need_cost_micros:
                    return Decision(
                        outcome="balance",
                        balance_micros=balance,
                        rpm_used=rpm_used,
                        reset_s=reset_s,
                        window_remaining=remaining,
                    )
                cost = min(balance, req.cost_micros)
                self.balances[caller.account_id] = balance - cost
            self.windows[caller.account_id] = {
                "start": wstart,
                "end": wend,
                "used": wused,
                "reserved": wres + wreserve,
            }
            remaining = req.window_limit - wused - wres - wreserve
        kheld = mheld = 0
        for name, _, _, outcome in caps:
            self.spend[name]["reserved"] += req.cost_micros
            if outcome == "key_budget":
                kheld = req.cost_micros
            else:
                mheld = req.cost_micros
        if counts_rpm:
            rpm_used += 1
            self.counters[rpm_key] = rpm_used
        if req.tpm_limit >= 0:
            self.counters[tpm_key] = self.counters.get(tpm_key, 0) + reserve
        if counts_arpm:
            self.counters[arpm_key] = self.counters.get(arpm_key, 0) + 1
        if req.account_tpm_limit >= 0:
            self.counters[atpm_key] = self.counters.get(atpm_key, 0) + areserve
        self.inflight[req.request_id] = {
            **req.inflight,
            "window_start_ms": wstart,
            "window_reserved": wreserve,
            "paid": int(paid),
            "cost_micros": cost,
            "key_budget_held": kheld,
            "member_budget_held": mheld,
        }
        return Decision(
            outcome="ok",
            rpm_used=rpm_used,
            reset_s=reset_s,
            window_remaining=remaining,
            paid=paid,
            window_start_ms=wstart,
            window_end_ms=wend,
            tpm_reserved=reserve,
            account_tpm_reserved=areserve,
            window_reserved=wreserve,
            cost_micros=cost,
            key_budget_held=kheld,
            member_budget_held=mheld,
        )

    def _balance_stale(self, account_id: int, now_ms: int) -> bool:
        """Embedded, the live balance lives in this process: a ledger write from another process
        (a shell, ``manage.py credit``) never reaches it. So a copy older than
        GATEWAY_BALANCE_RELOAD_MS is reloaded from the database, but only while the account is
        quiet (no paid request in flight, no usage record waiting for the flusher): then the
        database's balance is the whole truth. (Standing in for Redis while it is down, the copy
        is never reloaded: Redis-mode processes write the database only through the drain.)"""
        if store.enabled():
            return False
        loaded = self.balances_loaded_ms.get(account_id, 0)
        if now_ms - loaded < settings.GATEWAY_BALANCE_RELOAD_MS:
            return False
        if metering.pending_local():
            return False
        return not any(
            e.get("account_id") == account_id and e.get("paid") for e in self.inflight.values()
        )

    def move_balance(self, account_id: int, amount: int) -> None:
        if account_id in self.balances:
            self.balances[account_id] += amount

    def settle(self, s: Settlement, record: bytes) -> bool:
        """Never suspends (see ``settles_inline``); False when already settled (or reaped)."""
        if self.inflight.pop(s.request_id, None) is None:
            return False
        tpm_key = f"tpm:{s.key_id}:{s.minute}"
        if s.tpm_reserved > 0 and tpm_key in self.counters:
            self.counters[tpm_key] = max(0, self.counters[tpm_key] + s.tokens - s.tpm_reserved)
        atpm_key = f"atpm:{s.account_id}:{s.minute}"
        if s.account_tpm_reserved > 0 and atpm_key in self.counters:
            self.counters[atpm_key] = max(
                0, self.counters[atpm_key] + s.tokens - s.account_tpm_reserved
            )
        w = self.windows.get(s.account_id)
        if s.window_start_ms and w is not None and w["start"] == s.window_start_ms:
            w["reserved"] -= s.window_reserved
            w["used"] += s.tokens
        if s.paid and s.account_id in self.balances:
            self.balances[s.account_id] += s.reserved_micros - s.billed_micros
        for name, held in (
            (budget_key("key", s.key_id or 0), s.key_budget_held),
            (budget_key("member", s.member_id), s.member_budget_held),
        ):
            h = self.spend.get(name)
            if h is not None and h["month"] == s.budget_month_ms:
                h["reserved"] = max(0, h["reserved"] - held)
                h["spent"] += s.spent_micros
        metering.enqueue_local(record)
        return True


_redis_limiter = RedisLimiter()
_memory = MemoryLimiter()


def _limiter() -> RedisLimiter | MemoryLimiter:
    return _redis_limiter if store.enabled() else _memory


def settles_inline(admission: Admission) -> bool:
    """Settling ``admission`` touches only this process (its counters, its record buffer), so it
    never suspends: no cancellation can land halfway through it."""
    return admission.local or not store.enabled()


# --- reservations of processes that died ------------------------------------------------------


def reap_abandoned(*, older_than_ms: int | None = None) -> int:
    """Release reservations whose gateway process died before settling them (SIGKILL, OOM):
    the window and balance they held come back, and each leaves a usage record (status 499,
    ``gateway_lost``, nothing billed: what the dead process delivered is unknown). Settlement
    deletes the in-flight entry first, so a request settled meanwhile is never settled twice.
    Run by the metering drain; returns how many it released."""
    if older_than_ms is None:
        older_than_ms = settings.GATEWAY_TOTAL_TIMEOUT_MS + 60_000
    cutoff = int(time.time() * 1000) - older_than_ms
    redis = store.sync_client()
    if redis is None:
        entries = list(_memory.inflight.items())
    else:
        entries = [
            (_text(raw_id), entry)
            for raw_id, raw in redis.hgetall(INFLIGHT_KEY).items()
            if (entry := _inflight_entry(_text(raw))) is not None
        ]
    released = 0
    for request_id, entry in entries:
        if int(entry.get("at_ms", 0)) > cutoff:
            continue
        s, record = _abandoned(request_id, entry)
        if redis is None:
            released += _memory.settle(s, record)
        else:
            keys = _settle_keys(s)
            released += int(redis.eval(_SETTLE, len(keys), *keys, orjson.dumps(s), record) or 0)
    if released:
        logger.warning("limits.reaped_abandoned", extra={"released": released})
    return released


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _inflight_entry(text: str) -> dict[str, Any] | None:
    """An in-flight entry by name; entries written before the names (``{"a","k","m","t","s"}``
    then ``|start|reserved|paid|cost``) are read too, so an upgrade strands none."""
    try:
        if "|" not in text:
            found = orjson.loads(text)
            return found if isinstance(found, dict) else None
        head, _, tail = text.partition("|")
        old = orjson.loads(head)
        start, reserved, paid, cost = (int(float(x)) for x in tail.split("|"))
    except (orjson.JSONDecodeError, ValueError):
        return None
    return {
        "account_id": old.get("a"),
        "key_id": old.get("k"),
        "model": old.get("m", ""),
        "at_ms": old.get("t", 0),
        "surface": old.get("s", ""),
        "window_start_ms": start,
        "window_reserved": reserved,
        "paid": paid,
        "cost_micros": cost,
    }


def _abandoned(request_id: str, entry: dict[str, Any]) -> tuple[Settlement, bytes]:
    account_id = int(entry["account_id"])
    key_id = entry.get("key_id")
    s = Settlement(
        request_id=request_id,
        account_id=account_id,
        key_id=int(key_id) if key_id is not None else None,
        minute=0,
        tpm_reserved=0,
        tokens=0,
        window_start_ms=int(entry.get("window_start_ms", 0)),
        window_reserved=int(entry.get("window_reserved", 0)),
        paid=bool(int(entry.get("paid", 0))),
        reserved_micros=int(entry.get("cost_micros", 0)),
        billed_micros=0,
        member_id=int(entry.get("member_id") or 0),
        budget_month_ms=int(entry.get("budget_month_ms") or 0),
        key_budget_held=int(entry.get("key_budget_held") or 0),
        member_budget_held=int(entry.get("member_budget_held") or 0),
    )
    record = UsageRecord(
        request_id=request_id,
        account_id=account_id,
        key_id=s.key_id,
        surface=str(entry.get("surface") or "openai"),
        model=str(entry.get("model", "")),
        status=499,
        error_code="gateway_lost",
        created_at_ms=int(entry.get("at_ms", 0)),
    )
    return s, record.to_json()


# --- the headers of a response that was not admitted -----------------------------------------
#
# Only reads, apart from admission and settlement: model lists, usage, batches, files,
# count_tokens and requests refused before admission (400, 403, 404) still show the caller's
# limits. Admitted requests take their headers from the Decision instead (no extra round trip).

_PEEK = """
local w = redis.call('HMGET', KEYS[2], 'start', 'end', 'used', 'reserved')
return {redis.call('GET', KEYS[1]), w[1], w[2], w[3], w[4]}
"""


async def _peek_redis(key_id: int, account_id: int, minute: int) -> list[Any]:
    keys = [f"tf:rpm:{key_id}:{minute}", f"tf:win:{account_id}"]
    try:
        reply = await store.call("EVALSHA", _sha(_PEEK), len(keys), *keys)
    except NoScriptError:
        reply = await store.call("EVAL", _PEEK, len(keys), *keys)
    return list(reply)


async def current_headers(caller: Caller) -> dict[str, str]:
    """The rate-limit headers as the key's minute and the account's window stand now, in one
    read (one Lua call on Redis); nothing is counted or reserved. Empty if the store cannot be
    read: a read-only answer does not fail for want of its headers."""
    now_ms = int(time.time() * 1000)
    minute = now_ms // 60_000
    kind = caller.window_kind if caller.window_tokens is not None else "none"
    try:
        if store.enabled():
            rpm_raw, *raw_window = await _peek_redis(caller.key_id, caller.account_id, minute)
            rpm_used = int(rpm_raw or 0)
            live = None if raw_window[0] is None else [int(v or 0) for v in raw_window]
        else:
            rpm_used = _memory.counters.get(f"rpm:{caller.key_id}:{minute}", 0)
            w = _memory.windows.get(caller.account_id)
            live = None if w is None else [w["start"], w["end"], w["used"], w["reserved"]]
        remaining = None
        if kind in ("rolling", "calendar_month") and caller.window_tokens is not None:
            if live is None:
                # No live copy (none opened yet, or Redis lost it): what the account row keeps.
                started_ms, used, _ = await sync_to_async(_persisted, thread_sensitive=False)(
                    caller.account_id
                )
                start, end, used = windows.restored_ms(
                    kind=kind,
                    hours=caller.window_hours,
                    started_ms=started_ms,
                    used=used,
                    now_ms=now_ms,
                )
                live = [start, end, used, 0]
            start, end, used, reserved = live
            _, _, reset = windows.in_force_ms(
                kind=kind, hours=caller.window_hours, start_ms=start, end_ms=end, now_ms=now_ms
            )
            remaining = caller.window_tokens if reset else caller.window_tokens - used - reserved
    except (RedisError, DatabaseError):
        logger.warning("limits.headers_unavailable", extra={"key_id": caller.key_id})
        return {}
    return _headers(caller, rpm_used, (minute + 1) * 60, remaining)
