"""Whether a request may run, and settling it afterwards.

Admission checks and reserves, in one atomic step: the key's requests and tokens this minute (RPM,
TPM: input estimate plus the output ceiling), the account's token window, and, when the window
cannot cover the request, the prepaid balance at the model's prices. Settlement swaps the
reservation for the exact usage and hands the usage record to metering. With Redis both steps are
one Lua script call each, shared by every gateway process; without Redis (the embedded default,
one process) the same rules run on in-process dictionaries.
"""

from __future__ import annotations

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
from redis.exceptions import NoScriptError, RedisError

from billing import money, windows
from gateway import metering, store
from gateway.auth import CHANGE_PREFIX, Caller
from gateway.catalog import ModelInfo
from gateway.metering import UsageRecord
from tokenfactory.db import reconnecting

INFLIGHT_KEY = "tf:inflight"
USAGE_STREAM = "tf:usage"
_WINDOW_KINDS = {"none": 0, "rolling": 1, "calendar_month": 2}
logger = logging.getLogger("tokenfactory.limits")
_UNLIMITED = -1
_SHAS: dict[str, str] = {}


class Stale(Exception):
    """The key changed since this process cached it; reload it and admit again."""


class Unavailable(Exception):
    """Redis cannot be reached and GATEWAY_REDIS_DOWN is "closed": nothing may be admitted."""


class Refused(Exception):
    def __init__(self, reason: str, *, retry_after: int = 0, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.headers = headers or {}


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
    settled: bool = False
    local: bool = False  # admitted on this process's counters while Redis was down


def _limit(value: int | None) -> int:
    return _UNLIMITED if value is None else value


def reservation_micros(model: ModelInfo, input_tokens: int, output_tokens: int) -> int:
    return money.token_cost_micros(
        input_tokens=input_tokens,
        cached_tokens=0,
        output_tokens=output_tokens,
        input_price_micros=model.input_price_micros or 0,
        output_price_micros=model.output_price_micros or 0,
        cached_input_price_micros=None,
    )


async def admit(
    caller: Caller,
    model: ModelInfo,
    *,
    input_tokens: int,
    max_output_tokens: int,
    request_id: str,
    counts_rpm: bool = True,
    price_factor_percent: int = 100,
    surface: str = "",
    unit_cost_micros: int | None = None,
) -> Admission:
    """Admit and reserve, or raise Refused (or Stale). ``price_factor_percent`` scales the balance
    reservation (batch lines cost half). ``unit_cost_micros`` is set for a unit-priced request
    (audio seconds, characters, images): a plan's window counts tokens, so such a request is
    always paid from the prepaid balance, which must cover that cost."""
    now_ms = int(time.time() * 1000)
    reserve = max(1, input_tokens + max_output_tokens)
    if unit_cost_micros is not None:
        cost = unit_cost_micros
    else:
        cost = reservation_micros(model, input_tokens, max_output_tokens)
    cost = cost * price_factor_percent // 100
    month_start, month_end = windows.month_bounds(datetime.fromtimestamp(now_ms / 1000, tz=UTC))
    window_limit = _limit(caller.window_tokens)
    args = _AdmitArgs(
        now_ms=now_ms,
        rpm_limit=_limit(caller.rpm_limit),
        tpm_limit=_limit(caller.tpm_limit),
        reserve=reserve,
        window_limit=window_limit,
        window_kind=_WINDOW_KINDS.get(caller.window_kind, 0) if window_limit != _UNLIMITED else 0,
        window_len_ms=caller.window_hours * 3_600_000,
        month_start_ms=windows.to_ms(month_start),
        month_end_ms=windows.to_ms(month_end),
        cost=cost,
        key_version=caller.version,
        request_id=request_id,
        counts_rpm=counts_rpm,
        paid_only=unit_cost_micros is not None,
    )
    inflight = orjson.dumps(
        {"a": caller.account_id, "k": caller.key_id, "m": model.model_id, "t": now_ms, "s": surface}
    ).decode()
    limiter = _limiter()
    try:
        return await _admit_on(limiter, caller, model, args, inflight)
    except RedisError as exc:
        logger.warning(
            "limits.redis_down", extra={"request_id": request_id, "error": type(exc).__name__}
        )
        if settings.GATEWAY_REDIS_DOWN != "open":
            raise Unavailable() from exc
    # Fail open: this process's own counters decide until Redis answers again.
    admission = await _admit_on(_memory, caller, model, args, inflight)
    admission.local = True
    return admission


async def _admit_on(
    limiter: RedisLimiter | MemoryLimiter,
    caller: Caller,
    model: ModelInfo,
    args: _AdmitArgs,
    inflight: str,
) -> Admission:
    for _ in range(3):
        result = await limiter.admit(caller, args, inflight)
        status = result[0]
        if status == "NEED_WINDOW":
            started, used = await sync_to_async(_persisted_window, thread_sensitive=False)(
                caller.account_id
            )
            await limiter.init_window(caller.account_id, started, used, args)
            continue
        if status == "NEED_BALANCE":
            balance = await sync_to_async(_persisted_balance, thread_sensitive=False)(
                caller.account_id
            )
            await limiter.init_balance(caller.account_id, balance)
            continue
        break
    return _interpret(result, caller, model, args)


@dataclass(slots=True)
class _AdmitArgs:
    now_ms: int
    rpm_limit: int
    tpm_limit: int
    reserve: int
    window_limit: int
    window_kind: int
    window_len_ms: int
    month_start_ms: int
    month_end_ms: int
    cost: int
    key_version: int
    request_id: str
    counts_rpm: bool
    paid_only: bool = False  # a unit-priced request: the balance pays, never the token window

    def as_argv(self, inflight: str) -> list[Any]:
        return [
            self.now_ms,
            self.rpm_limit,
            self.tpm_limit,
            self.reserve,
            self.window_limit,
            self.window_kind,
            self.window_len_ms,
            self.month_start_ms,
            self.month_end_ms,
            self.cost,
            self.key_version,
            self.request_id,
            inflight,
            1 if self.counts_rpm else 0,
            1 if self.paid_only else 0,
        ]


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


def _interpret(result: list[Any], caller: Caller, model: ModelInfo, args: _AdmitArgs) -> Admission:
    status = result[0]
    now_s = args.now_ms / 1000
    if status == "STALE":
        raise Stale()
    if status == "OK":
        _, rpm_used, reset_s, remaining, paid, wstart, tpm_reserved, wreserved, cost = result
        window_remaining = None if args.window_kind == 0 else int(remaining)
        return Admission(
            request_id=args.request_id,
            caller=caller,
            model=model,
            minute=args.now_ms // 60_000,
            tpm_reserved=int(tpm_reserved),
            window_start_ms=int(wstart),
            window_reserved=int(wreserved),
            paid=bool(int(paid)),
            reserved_micros=int(cost),
            headers=_headers(caller, int(rpm_used), int(reset_s), window_remaining),
        )
    if status in ("RPM", "TPM"):
        _, rpm_used, reset_s, remaining = result
        window_remaining = None if args.window_kind == 0 else int(remaining)
        headers = _headers(caller, int(rpm_used), int(reset_s), window_remaining)
        retry = max(1, math.ceil(int(reset_s) - now_s))
        raise Refused(status.lower(), retry_after=retry, headers=headers)
    if status == "BUDGET":
        _, window_end_ms, rpm_used, reset_s = result
        headers = _headers(caller, int(rpm_used), int(reset_s), 0)
        retry = max(1, math.ceil(int(window_end_ms) / 1000 - now_s))
        raise Refused("budget", retry_after=retry, headers=headers)
    if status == "BALANCE":
        _, balance, rpm_used, reset_s, remaining = result
        headers = _headers(caller, int(rpm_used), int(reset_s), int(remaining))
        headers["X-Balance-Micros"] = str(balance)
        raise Refused("balance", headers=headers)
    raise RuntimeError(f"unexpected admission result {result!r}")


async def settle(
    admission: Admission, *, tokens: int, billed_micros: int, record: UsageRecord
) -> None:
    """Swap the reservation for what was used and queue the usage record, exactly once."""
    if admission.settled:
        return
    admission.settled = True
    data = record.to_json()
    try:
        limiter = _memory if admission.local else _limiter()
        await limiter.settle(admission, tokens, billed_micros, data)
    except RedisError:
        # Redis went away after admission: the reservation lapses with its keys' TTLs, but the
        # record must not be lost; this process writes it to the database itself.
        logger.exception("limits.settle_failed", extra={"request_id": admission.request_id})
        metering.enqueue_local(data)
        return
    metering.kick()


@reconnecting
def _persisted_window(account_id: int) -> tuple[int, int]:
    from accounts.models import Account

    row = (
        Account.objects.filter(pk=account_id)
        .values_list("window_started_at", "window_used_tokens")
        .first()
    )
    if row is None or row[0] is None:
        return 0, 0
    return windows.to_ms(row[0]), int(row[1])


@reconnecting
def _persisted_balance(account_id: int) -> int:
    from accounts.models import Account

    value = Account.objects.filter(pk=account_id).values_list("balance_micros", flat=True).first()
    return int(value or 0)


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


def live_balance(account_id: int) -> int | None:
    redis = store.sync_client()
    if redis is not None:
        value = redis.get(f"tf:bal:{account_id}")
        return int(value) if value is not None else None
    return _memory.balances.get(account_id)


def reset_memory() -> None:
    _memory.__init__()  # type: ignore[misc]


# --- the Redis limiter -------------------------------------------------------------------------

_ADMIT = """
local now = tonumber(ARGV[1])
local ver = tonumber(redis.call('GET', KEYS[5]) or '0')
if ver ~= tonumber(ARGV[11]) then return {'STALE'} end
local reset_s = (math.floor(now / 60000) + 1) * 60
local rpm_limit = tonumber(ARGV[2])
local rpm_used = tonumber(redis.call('GET', KEYS[1]) or '0')
local count_rpm = ARGV[14] == '1'
local wkind = tonumber(ARGV[6])
local wlimit = tonumber(ARGV[5])
local wstart, wend, wused, wres = 0, 0, 0, 0
if wkind > 0 then
  local w = redis.call('HMGET', KEYS[3], 'start', 'end', 'used', 'reserved')
  if not w[1] then return {'NEED_WINDOW'} end
  wstart, wend, wused, wres = tonumber(w[1]), tonumber(w[2]), tonumber(w[3]), tonumber(w[4])
  if wkind == 2 then
    if wstart ~= tonumber(ARGV[8]) then
      wstart, wend, wused, wres = tonumber(ARGV[8]), tonumber(ARGV[9]), 0, 0
    end
  elseif wstart == 0 or now >= wend then
    wstart, wend, wused, wres = now, now + tonumber(ARGV[7]), 0, 0
  end
end
local remaining = wlimit - wused - wres
if count_rpm and rpm_limit >= 0 and rpm_used >= rpm_limit then
  return {'RPM', rpm_used, reset_s, remaining}
end
local reserve = tonumber(ARGV[4])
local tpm_limit = tonumber(ARGV[3])
if tpm_limit >= 0 then
  if reserve > tpm_limit then reserve = tpm_limit end
  local tpm_used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tpm_used + reserve > tpm_limit then return {'TPM', rpm_used, reset_s, remaining} end
end
local paid, cost, wreserve = 0, 0, 0
if wkind > 0 then
  wreserve = math.min(tonumber(ARGV[4]), wlimit)
  if ARGV[15] == '1' or wused + wres + wreserve > wlimit then
    paid, wreserve = 1, 0
    local bal = redis.call('GET', KEYS[4])
    if not bal then return {'NEED_BALANCE'} end
    bal = tonumber(bal)
    cost = tonumber(ARGV[10])
    if bal <= 0 and ARGV[15] ~= '1' then return {'BUDGET', wend, rpm_used, reset_s} end
    if bal < cost then return {'BALANCE', bal, rpm_used, reset_s, remaining} end
    redis.call('DECRBY', KEYS[4], cost)
  end
  redis.call('HSET', KEYS[3], 'start', wstart, 'end', wend, 'used', wused,
    'reserved', wres + wreserve)
  remaining = wlimit - wused - wres - wreserve
end
if count_rpm then
  rpm_used = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], 120)
end
if tpm_limit >= 0 then
  redis.call('INCRBY', KEYS[2], reserve)
  redis.call('EXPIRE', KEYS[2], 120)
end
-- What a reaper needs to release this reservation if the process serving it dies.
redis.call('HSET', KEYS[6], ARGV[12],
  ARGV[13] .. '|' .. wstart .. '|' .. wreserve .. '|' .. paid .. '|' .. cost)
return {'OK', rpm_used, reset_s, remaining, paid, wstart, reserve, wreserve, cost}
"""

_SETTLE = """
if redis.call('HDEL', KEYS[4], ARGV[1]) == 0 then return 0 end
local actual = tonumber(ARGV[3])
if tonumber(ARGV[2]) > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  local now_used = redis.call('INCRBY', KEYS[1], actual - tonumber(ARGV[2]))
  if now_used < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
end
local wstart = tonumber(ARGV[4])
if wstart > 0 and tonumber(redis.call('HGET', KEYS[2], 'start') or '0') == wstart then
  -- 0 - x, not -x: Lua's -0 reaches Redis as "-0", which it refuses as an integer.
  redis.call('HINCRBY', KEYS[2], 'reserved', 0 - tonumber(ARGV[5]))
  redis.call('HINCRBY', KEYS[2], 'used', actual)
end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCRBY', KEYS[3], tonumber(ARGV[7]) - tonumber(ARGV[8]))
end
redis.call('XADD', KEYS[5], '*', 'r', ARGV[9])
return 1
"""

_MOVE_BALANCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return nil
"""


class RedisLimiter:
    def __init__(self) -> None:
        self._admit_sha: str | None = None
        self._settle_sha: str | None = None

    async def _run(self, script: str, keys: list[str], argv: list[Any]) -> Any:
        redis = store.client()
        assert redis is not None
        sha = _SHAS.get(script)
        if sha is None:
            sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324
        # One round trip: EVALSHA, falling back to EVAL the first time a server sees the script.
        try:
            return await redis.evalsha(sha, len(keys), *keys, *argv)
        except NoScriptError:
            return await redis.eval(script, len(keys), *keys, *argv)

    async def admit(self, caller: Caller, args: _AdmitArgs, inflight: str) -> list[Any]:
        minute = args.now_ms // 60_000
        keys = [
            f"tf:rpm:{caller.key_id}:{minute}",
            f"tf:tpm:{caller.key_id}:{minute}",
            f"tf:win:{caller.account_id}",
            f"tf:bal:{caller.account_id}",
            CHANGE_PREFIX + caller.key_hash,
            INFLIGHT_KEY,
        ]
        result = await self._run(_ADMIT, keys, args.as_argv(inflight))
        return [r.decode() if isinstance(r, bytes) else r for r in result]

    async def init_window(
        self, account_id: int, started_ms: int, used: int, args: _AdmitArgs
    ) -> None:
        redis = store.client()
        assert redis is not None
        end = started_ms + args.window_len_ms if args.window_kind == 1 else args.month_end_ms
        if args.window_kind == 2 and started_ms != args.month_start_ms:
            started_ms, used = args.month_start_ms, 0
        await redis.hsetnx(f"tf:win:{account_id}", "start", started_ms)
        await redis.hsetnx(f"tf:win:{account_id}", "end", end if started_ms else 0)
        await redis.hsetnx(f"tf:win:{account_id}", "used", used if started_ms else 0)
        await redis.hsetnx(f"tf:win:{account_id}", "reserved", 0)

    async def init_balance(self, account_id: int, balance: int) -> None:
        redis = store.client()
        assert redis is not None
        await redis.set(f"tf:bal:{account_id}", balance, nx=True)

    async def settle(self, admission: Admission, tokens: int, billed: int, record: bytes) -> None:
        caller = admission.caller
        keys = [
            f"tf:tpm:{caller.key_id}:{admission.minute}",
            f"tf:win:{caller.account_id}",
            f"tf:bal:{caller.account_id}",
            INFLIGHT_KEY,
            USAGE_STREAM,
        ]
        argv = [
            admission.request_id,
            admission.tpm_reserved if caller.tpm_limit is not None else 0,
            tokens,
            admission.window_start_ms,
            admission.window_reserved,
            1 if admission.paid else 0,
            admission.reserved_micros,
            billed,
            record,
        ]
        await self._run(_SETTLE, keys, argv)


# --- the in-process limiter (embedded default: one process, no Redis) ---------------------------


class MemoryLimiter:
    """The same rules as the Lua scripts, for one process. No awaits inside a decision, so each
    one is atomic on the event loop."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.windows: dict[int, dict[str, int]] = {}
        self.balances: dict[int, int] = {}
        self.inflight: dict[str, str] = {}

    def _prune(self, minute: int) -> None:
        if len(self.counters) > 10_000:
            self.counters = {
                k: v for k, v in self.counters.items() if int(k.rsplit(":", 1)[1]) >= minute - 1
            }

    async def admit(self, caller: Caller, args: _AdmitArgs, inflight: str) -> list[Any]:
        now = args.now_ms
        minute = now // 60_000
        self._prune(minute)
        reset_s = (minute + 1) * 60
        rpm_key, tpm_key = f"rpm:{caller.key_id}:{minute}", f"tpm:{caller.key_id}:{minute}"
        rpm_used = self.counters.get(rpm_key, 0)
        wstart = wend = wused = wres = 0
        if args.window_kind > 0:
            w = self.windows.get(caller.account_id)
            if w is None:
                return ["NEED_WINDOW"]
            wstart, wend, wused, wres = w["start"], w["end"], w["used"], w["reserved"]
            if args.window_kind == 2:
                if wstart != args.month_start_ms:
                    wstart, wend, wused, wres = args.month_start_ms, args.month_end_ms, 0, 0
            elif wstart == 0 or now >= wend:
                wstart, wend, wused, wres = now, now + args.window_len_ms, 0, 0
        remaining = args.window_limit - wused - wres
        if args.counts_rpm and args.rpm_limit >= 0 and rpm_used >= args.rpm_limit:
            return ["RPM", rpm_used, reset_s, remaining]
        reserve = args.reserve
        if args.tpm_limit >= 0:
            reserve = min(reserve, args.tpm_limit)
            if self.counters.get(tpm_key, 0) + reserve > args.tpm_limit:
                return ["TPM", rpm_used, reset_s, remaining]
        paid = cost = wreserve = 0
        if args.window_kind > 0:
            wreserve = min(args.reserve, args.window_limit)
            if args.paid_only or wused + wres + wreserve > args.window_limit:
                paid, wreserve = 1, 0
                balance = self.balances.get(caller.account_id)
                if balance is None:
                    return ["NEED_BALANCE"]
                cost = args.cost
                if balance <= 0 and not args.paid_only:
                    return ["BUDGET", wend, rpm_used, reset_s]
                if balance < cost:
                    return ["BALANCE", balance, rpm_used, reset_s, remaining]
                self.balances[caller.account_id] = balance - cost
            self.windows[caller.account_id] = {
                "start": wstart,
                "end": wend,
                "used": wused,
                "reserved": wres + wreserve,
            }
            remaining = args.window_limit - wused - wres - wreserve
        if args.counts_rpm:
            rpm_used += 1
            self.counters[rpm_key] = rpm_used
        if args.tpm_limit >= 0:
            self.counters[tpm_key] = self.counters.get(tpm_key, 0) + reserve
        self.inflight[args.request_id] = inflight
        return ["OK", rpm_used, reset_s, remaining, paid, wstart, reserve, wreserve, cost]

    async def init_window(
        self, account_id: int, started_ms: int, used: int, args: _AdmitArgs
    ) -> None:
        if account_id in self.windows:
            return
        end = started_ms + args.window_len_ms if args.window_kind == 1 else args.month_end_ms
        if args.window_kind == 2 and started_ms != args.month_start_ms:
            started_ms, used = args.month_start_ms, 0
        self.windows[account_id] = {
            "start": started_ms,
            "end": end if started_ms else 0,
            "used": used if started_ms else 0,
            "reserved": 0,
        }

    async def init_balance(self, account_id: int, balance: int) -> None:
        self.balances.setdefault(account_id, balance)

    def move_balance(self, account_id: int, amount: int) -> None:
        if account_id in self.balances:
            self.balances[account_id] += amount

    async def settle(self, admission: Admission, tokens: int, billed: int, record: bytes) -> None:
        if self.inflight.pop(admission.request_id, None) is None:
            return
        caller = admission.caller
        tpm_key = f"tpm:{caller.key_id}:{admission.minute}"
        if caller.tpm_limit is not None and tpm_key in self.counters:
            self.counters[tpm_key] = max(
                0, self.counters[tpm_key] + tokens - admission.tpm_reserved
            )
        w = self.windows.get(caller.account_id)
        if admission.window_start_ms and w is not None and w["start"] == admission.window_start_ms:
            w["reserved"] -= admission.window_reserved
            w["used"] += tokens
        if admission.paid and caller.account_id in self.balances:
            self.balances[caller.account_id] += admission.reserved_micros - billed
        metering.enqueue_local(record)


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
    redis = store.sync_client()
    if redis is None:
        return 0
    if older_than_ms is None:
        older_than_ms = settings.GATEWAY_TOTAL_TIMEOUT_MS + 60_000
    cutoff = int(time.time() * 1000) - older_than_ms
    released = 0
    for raw_id, raw in redis.hgetall(INFLIGHT_KEY).items():
        request_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        head, _, tail = text.partition("|")
        try:
            entry = orjson.loads(head)
            wstart, wreserved, paid, cost = (int(float(x)) for x in tail.split("|"))
        except (orjson.JSONDecodeError, ValueError):
            continue
        if int(entry.get("t", 0)) > cutoff:
            continue
        account_id = int(entry["a"])
        record = UsageRecord(
            request_id=request_id,
            account_id=account_id,
            key_id=entry.get("k"),
            surface=str(entry.get("s") or "openai"),
            model=str(entry.get("m", "")),
            status=499,
            error_code="gateway_lost",
            created_at_ms=int(entry.get("t", 0)),
        )
        keys = [
            f"tf:tpm:{entry.get('k')}:0",
            f"tf:win:{account_id}",
            f"tf:bal:{account_id}",
            INFLIGHT_KEY,
            USAGE_STREAM,
        ]
        argv: list[Any] = [request_id, 0, 0, wstart, wreserved, paid, cost, 0, record.to_json()]
        released += int(redis.eval(_SETTLE, len(keys), *keys, *argv) or 0)
    if released:
        logger.warning("limits.reaped_abandoned", extra={"released": released})
    return released
