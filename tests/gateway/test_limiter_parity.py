"""The two limiters are one set of rules: every case runs through the in-process limiter (the
embedded default) and through the Redis script (production), and both must give the answers the
case expects, and the same answers as each other, headers included. The Redis half needs
REDIS_URL (CI sets it)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from asgiref.sync import sync_to_async

from accounts.models import Account
from gateway import auth, limits, metering
from gateway.auth import Caller
from gateway.catalog import ModelInfo
from gateway.metering import UsageRecord
from gateway.models import UsageRecord as StoredUsage
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 10, 12, 0, 5, tzinfo=UTC)  # 5 s into a minute
T0_MS = int(T0.timestamp() * 1000)
HOUR_MS = 3_600_000

MODEL = ModelInfo(
    model_id="sim-parity",
    display_name="sim-parity",
    owned_by="Test Lab",
    kind="chat",
    tier="standard",
    supports_tools=False,
    supports_vision=False,
    supports_json=False,
    supports_thinking=False,
    context_window=100_000,
    max_output_tokens=4096,
    input_price_micros=1_000_000,  # 1 micro-dollar a token
    output_price_micros=2_000_000,  # 2 micro-dollars a token
    cached_input_price_micros=None,
    unit="",
    unit_price_micros=None,
    ultrafast=False,
    is_priced=True,
    created=0,
)


@dataclass
class Harness:
    """One account and key on one limiter; every step appends what it saw to ``seen``."""

    caller: Caller
    others: list[Caller] = field(default_factory=list)  # more keys of the same account
    seen: list[Any] = field(default_factory=list)
    admitted: dict[str, limits.Admission] = field(default_factory=dict)
    counter: int = 0

    async def admit(
        self, name: str, input_tokens: int, output_tokens: int, *, key: int = 0, **kw: Any
    ) -> None:
        """Admit on the account's first key, or (``key=1``...) on another of its keys. The request
        asks for ``output_tokens`` (its max_tokens) unless ``requested_output_tokens`` says
        otherwise; ``input_bound`` defaults to the input (a prompt measured exactly)."""
        self.counter += 1
        kw.setdefault("requested_output_tokens", output_tokens)
        try:
            adm = await limits.admit(
                self.caller if key == 0 else self.others[key - 1],
                MODEL,
                input_tokens=input_tokens,
                max_output_tokens=output_tokens,
                request_id=f"req_parity_{self.caller.account_id}_{self.counter}",
                surface="openai",
                **kw,
            )
        except limits.Refused as refused:
            self.seen.append(("refused", name, refused.reason, refused.retry_after))
            self.seen.append(("headers", name, refused.headers))
            return
        except limits.Stale:
            self.seen.append(("stale", name))
            return
        self.admitted[name] = adm
        self.seen.append(("ok", name, adm.paid, adm.reserved_micros))
        self.seen.append(("headers", name, adm.headers))

    async def settle(
        self, name: str, tokens: int, billed_micros: int = 0, cost_micros: int = 0
    ) -> None:
        adm = self.admitted[name]
        record = UsageRecord(
            request_id=adm.request_id,
            account_id=self.caller.account_id,
            key_id=adm.caller.key_id,
            surface="openai",
            model=MODEL.model_id,
            status=200,
            created_at_ms=T0_MS,
            cost_micros=cost_micros,
        )
        await limits.settle(adm, tokens=tokens, billed_micros=billed_micros, record=record)

    def state(self, name: str) -> None:
        """The live window (relative to T0) and balance, as pages read them."""
        w = limits.window_state(self.caller.account_id)
        window = (
            None if w is None else (w["start"] - T0_MS, w["end"] - T0_MS, w["used"], w["reserved"])
        )
        self.seen.append(("state", name, window, limits.live_balance(self.caller.account_id)))

    def spend(self, name: str) -> None:
        """The live month spend of the key and of its member: (month start relative to T0,
        spent, reserved), as admission keeps them."""
        caller = self.caller
        found = []
        for kind, subject in (("key", caller.key_id), ("member", caller.member_id or 0)):
            s = limits.budget_state(kind, subject)
            found.append(None if s is None else (s["month"] - T0_MS, s["spent"], s["reserved"]))
        self.seen.append(("spend", name, *found))

    async def change_key(self) -> None:
        await sync_to_async(auth.invalidate)(key_hashes=[self.caller.key_hash])

    async def reap(self, name: str) -> None:
        released = await sync_to_async(limits.reap_abandoned)(older_than_ms=0)
        self.seen.append(("reaped", name, released))


def _caller(acct: Account, key_id: int, key_hash: str, **limits_: Any) -> Caller:
    values: dict[str, Any] = {
        "rpm_limit": None,
        "tpm_limit": None,
        "account_rpm_limit": None,
        "account_tpm_limit": None,
        "window_kind": "rolling",
        "window_hours": 5,
        "window_tokens": None,
    }
    values.update(limits_)
    return Caller(
        key_id=key_id,
        key_hash=key_hash,
        account_id=acct.pk,
        environment="prod",
        plan_slug="test",
        plan_name="Test",
        model_tiers=frozenset({"*"}),
        allowed_models=frozenset(),
        expires_at=None,
        version=0,
        **values,
    )


Case = Callable[[Harness], Coroutine[Any, Any, None]]


async def rpm(h: Harness) -> None:
    for name in ("first", "second", "third"):
        await h.admit(name, 10, 10)


async def tpm(h: Harness) -> None:
    # A request counts the larger of its max_tokens and its input estimate (as OpenAI's does).
    await h.admit("a 600", 100, 600)  # counts its max_tokens
    await h.admit("b 400", 400, 100)  # counts its input: 1,000, the minute is full
    await h.admit("c full", 1, 0)
    await h.settle("a 600", 100)  # it used 100: 500 of the minute's tokens come back
    await h.admit("d 500", 500, 50)  # exactly fills the minute again
    await h.admit("no max_tokens", 1, 4096, requested_output_tokens=0)  # counts its input: 1
    await h.admit("too large", 1001, 0)  # more than the limit on its own: refused outright


async def tpm_a_new_minute(h: Harness) -> None:
    # Without max_tokens a request counts only its input, so the first call of a small plan does
    # not take a whole minute's TPM (a model's 32k output limit used to).
    await h.admit("no max_tokens", 20, 32_768, requested_output_tokens=0)
    await h.admit("another", 20, 32_768, requested_output_tokens=0)


async def account_rpm(h: Harness) -> None:
    for name in ("first", "second", "third"):
        await h.admit(name, 10, 10)
    await h.admit("other key", 10, 10, key=1)  # the key has room, and so has the account
    await h.admit("account full", 10, 10, key=1)  # the key has room; the account has none
    await h.admit("batch line", 10, 10, key=1, counts_rpm=False)


async def account_tpm(h: Harness) -> None:
    await h.admit("a 600", 600, 100)
    await h.admit("b 500", 500, 100, key=1)  # the key has no TPM limit; the account is full
    await h.settle("a 600", 100)  # 500 of the account's minute come back
    await h.admit("c 500", 500, 100, key=1)
    await h.admit("d 500", 500, 100)
    await h.admit("too large", 10, 1001, key=1)  # more than the account's limit on its own


async def dense_prompt_holds_its_bound(h: Harness) -> None:
    # Estimated 100 (cl100k), but it could be 900 (its UTF-8 bytes): the window serves it on the
    # estimate and holds the bound; a second such request finds the rest held.
    await h.admit("dense", 100, 50, input_bound=900)
    h.state("holds 950")
    await h.admit("dense again", 100, 50, input_bound=900)  # 50 left < 150: the balance pays
    h.state("paid")
    await h.settle("dense", 700)  # the upstream counted 700 in all
    h.state("settled")


async def last_tokens_of_a_window(h: Harness) -> None:
    # What is left covers the estimate but not the bound: served, holding all that is left, so
    # only this one request can overrun the window; the next one finds nothing left.
    await h.admit("most", 890, 0, input_bound=890)
    await h.admit("the rest", 50, 10, input_bound=400)
    h.state("all held")
    await h.admit("nothing left", 1, 1)
    await h.settle("the rest", 300)
    await h.settle("most", 890)
    h.state("overrun by one")


async def balance_holds_at_most_itself(h: Harness) -> None:
    # The window is spent; the balance (1,000 micros) covers the estimate's cost (100 + 2*100 =
    # 300) but not the bound's (900 + 200 = 1,100): it is served, holding the whole balance.
    await h.admit("fills the window", 1, 0, requested_output_tokens=0)
    await h.admit("dense, paid", 100, 100, input_bound=900)
    h.state("held")
    await h.admit("next", 1, 1)
    await h.settle("dense, paid", 1000, billed_micros=1100)
    h.state("one request under")


async def window_open_and_reset(h: Harness) -> None:
    await h.admit("opens", 100, 100)
    h.state("opened")
    await h.settle("opens", 150)
    h.state("settled")
    with time_machine.travel(T0_MS / 1000 + 5 * 3600 + 1, tick=False):
        await h.admit("after the end", 10, 10)
        h.state("reopened")


async def calendar_month(h: Harness) -> None:
    await h.admit("march", 100, 100)
    await h.settle("march", 120)
    h.state("march")
    with time_machine.travel(datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC), tick=False):
        await h.admit("april", 10, 10)
        h.state("april")


async def window_full_then_balance(h: Harness) -> None:
    await h.admit("in the window", 100, 100)
    await h.admit("crosses", 100, 100)  # 400 > 300: paid, 100*1 + 100*2 micros reserved
    h.state("reserved")
    await h.settle("crosses", 150, billed_micros=200)
    h.state("settled")


async def balance_short(h: Harness) -> None:
    await h.admit("small", 10, 10)
    await h.admit("too dear", 100, 100)  # crosses the window; the balance cannot pay 300
    h.state("refused")


async def budget_empty(h: Harness) -> None:
    await h.admit("small", 10, 10)
    await h.admit("no balance", 100, 100)


async def unit_priced(h: Harness) -> None:
    await h.admit("300 micros", 1, 0, unit_cost_micros=300)
    await h.admit("800 micros", 1, 0, unit_cost_micros=800)
    h.state("after")


async def batch_price_factor(h: Harness) -> None:
    await h.admit("fills the window", 1, 0, counts_rpm=False)
    # 3 input tokens at 1 micro, half price: 1.5 micro-dollars reserved as 2 (rounded up).
    await h.admit("half price", 3, 0, price_factor_percent=50, counts_rpm=False)
    h.state("after")


async def stale_key(h: Harness) -> None:
    await h.admit("before", 10, 10)
    await h.change_key()
    await h.admit("after the change", 10, 10)


async def settle_exactly_once(h: Harness) -> None:
    await h.admit("once", 100, 100)
    await h.settle("once", 50)
    h.admitted["once"].settled = False  # a second settlement reaching the limiter anyway
    await h.settle("once", 50)
    h.state("after")


async def reaper(h: Harness) -> None:
    await h.admit("dies", 100, 100)
    await h.admit("paid, dies", 500, 500)
    h.state("held")
    await h.reap("first pass")
    await h.reap("second pass")
    h.state("released")


async def restored_from_the_database(h: Harness) -> None:
    # The database says a window opened ten minutes ago with 900 of its 1,000 tokens used.
    await h.admit("crosses", 100, 100)
    h.state("after")


async def key_budget(h: Harness) -> None:
    # A $0.001 cap (1,000 micros); each request holds its ceiling (input + 2 * max_tokens micros).
    await h.admit("a 300", 100, 100)
    await h.admit("b 500", 100, 200)
    h.spend("held")
    await h.admit("c 300", 100, 100)  # 800 held + 300 > 1,000
    await h.settle("a 300", 150, cost_micros=250)
    await h.admit("d 300", 100, 100)  # 250 spent + 500 held + 300 > 1,000
    await h.settle("b 500", 250, cost_micros=200)
    await h.admit("e 300", 100, 100)  # 450 spent + 300 fits
    h.spend("after")


async def member_budget(h: Harness) -> None:
    # Two keys of one member, whose cap (600 micros) counts them together.
    await h.admit("a 300", 100, 100)
    await h.admit("b 300", 100, 100, key=1)
    await h.admit("c 1", 1, 0, key=1)
    h.spend("full")
    await h.settle("a 300", 150, cost_micros=100)
    await h.admit("d 150", 50, 50, key=1)  # 100 spent + 300 held + 150 fits
    h.spend("after")


async def budget_restored_then_a_new_month(h: Harness) -> None:
    # The database says the key spent 700 micros this month (and 5,000 last month).
    await h.admit("a 300", 100, 100)
    await h.admit("b 1", 1, 0)
    h.spend("march")
    with time_machine.travel(datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC), tick=False):
        await h.admit("april", 100, 100)
        await h.settle("a 300", 150, cost_micros=250)  # March's: not April's spend
        h.spend("april")


async def budget_an_earlier_months_copy(h: Harness) -> None:
    # A live copy from February is no guide to March: March's spend comes from the database
    # (700 micros there), not from nothing.
    with time_machine.travel(datetime(2026, 2, 25, tzinfo=UTC), tick=False):
        await h.admit("february", 100, 100)
    await h.admit("march 400", 100, 150)
    h.spend("march")


async def budget_reaped(h: Harness) -> None:
    await h.admit("dies", 100, 100)
    h.spend("held")
    await h.reap("reaped")
    h.spend("released")


CASES: dict[str, tuple[dict[str, Any], Case, list[Any]]] = {}


def case(name: str, account: dict[str, Any], run: Case, expected: list[Any]) -> None:
    CASES[name] = (account, run, expected)


RESET = T0_MS // 60_000 * 60 + 60  # X-RateLimit-Reset: the next minute, in seconds


def hdr(remaining: int | None = None, *, rpm: tuple[int, int] | None = None) -> dict[str, str]:
    out = {}
    if rpm is not None:
        out["X-RateLimit-Limit"], out["X-RateLimit-Remaining"] = str(rpm[0]), str(rpm[1])
    out["X-RateLimit-Reset"] = str(RESET)
    if remaining is not None:
        out["X-Token-Budget-Remaining"] = str(remaining)
    return out


case(
    "rpm",
    {"rpm_limit": 2},
    rpm,
    [
        ("ok", "first", False, 0),
        ("headers", "first", hdr(rpm=(2, 1))),
        ("ok", "second", False, 0),
        ("headers", "second", hdr(rpm=(2, 0))),
        ("refused", "third", "rpm", 55),
        ("headers", "third", hdr(rpm=(2, 0))),
    ],
)
case(
    "tpm",
    {"tpm_limit": 1000},
    tpm,
    [
        ("ok", "a 600", False, 0),
        ("headers", "a 600", hdr()),
        ("ok", "b 400", False, 0),
        ("headers", "b 400", hdr()),
        ("refused", "c full", "tpm", 55),
        ("headers", "c full", hdr()),
        ("ok", "d 500", False, 0),
        ("headers", "d 500", hdr()),
        ("refused", "no max_tokens", "tpm", 55),
        ("headers", "no max_tokens", hdr()),
        ("refused", "too large", "tpm_too_large", 0),
        ("headers", "too large", {}),
    ],
)
case(
    "tpm, a new minute",
    {"tpm_limit": 100},
    tpm_a_new_minute,
    [
        ("ok", "no max_tokens", False, 0),
        ("headers", "no max_tokens", hdr()),
        ("ok", "another", False, 0),
        ("headers", "another", hdr()),
    ],
)
case(
    "account rpm, across keys",
    {"rpm_limit": 2, "account_rpm_limit": 3, "keys": 2},
    account_rpm,
    [
        ("ok", "first", False, 0),
        ("headers", "first", hdr(rpm=(2, 1))),
        ("ok", "second", False, 0),
        ("headers", "second", hdr(rpm=(2, 0))),
        ("refused", "third", "rpm", 55),
        ("headers", "third", hdr(rpm=(2, 0))),
        ("ok", "other key", False, 0),
        ("headers", "other key", hdr(rpm=(2, 1))),
        ("refused", "account full", "account_rpm", 55),
        ("headers", "account full", hdr(rpm=(2, 1))),
        ("ok", "batch line", False, 0),
        ("headers", "batch line", hdr(rpm=(2, 2))),
    ],
)
case(
    "account tpm, across keys",
    {"account_tpm_limit": 1000, "keys": 2},
    account_tpm,
    [
        ("ok", "a 600", False, 0),
        ("headers", "a 600", hdr()),
        ("refused", "b 500", "account_tpm", 55),
        ("headers", "b 500", hdr()),
        ("ok", "c 500", False, 0),
        ("headers", "c 500", hdr()),
        ("refused", "d 500", "account_tpm", 55),
        ("headers", "d 500", hdr()),
        ("refused", "too large", "account_tpm_too_large", 0),
        ("headers", "too large", {}),
    ],
)
case(
    "window opens and resets",
    {"window_tokens": 1000},
    window_open_and_reset,
    [
        ("ok", "opens", False, 0),
        ("headers", "opens", hdr(800)),
        ("state", "opened", (0, 5 * HOUR_MS, 0, 200), 0),
        ("state", "settled", (0, 5 * HOUR_MS, 150, 0), 0),
        ("ok", "after the end", False, 0),
        ("headers", "after the end", {**hdr(980), "X-RateLimit-Reset": str(RESET + 5 * 3600)}),
        ("state", "reopened", (5 * HOUR_MS + 1000, 10 * HOUR_MS + 1000, 0, 20), 0),
    ],
)
MARCH_MS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000) - T0_MS
APRIL_MS = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000) - T0_MS
MAY_MS = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000) - T0_MS
APRIL_RESET = str(int(datetime(2026, 4, 1, 0, 1, tzinfo=UTC).timestamp()))
case(
    "calendar month",
    {"window_tokens": 1000, "window_kind": "calendar_month", "window_hours": 0},
    calendar_month,
    [
        ("ok", "march", False, 0),
        ("headers", "march", hdr(800)),
        ("state", "march", (MARCH_MS, APRIL_MS, 120, 0), 0),
        ("ok", "april", False, 0),
        ("headers", "april", {**hdr(980), "X-RateLimit-Reset": APRIL_RESET}),
        ("state", "april", (APRIL_MS, MAY_MS, 0, 20), 0),
    ],
)
case(
    "window full, then the balance",
    {"window_tokens": 300, "balance": 10_000},
    window_full_then_balance,
    [
        ("ok", "in the window", False, 0),
        ("headers", "in the window", hdr(100)),
        ("ok", "crosses", True, 300),
        ("headers", "crosses", hdr(100)),
        ("state", "reserved", (0, 5 * HOUR_MS, 0, 200), 9_700),
        ("state", "settled", (0, 5 * HOUR_MS, 150, 200), 9_800),
    ],
)
case(
    "a billion dollars of balance, to the micro-dollar",
    {"window_tokens": 300, "balance": 10**15},
    window_full_then_balance,
    [
        ("ok", "in the window", False, 0),
        ("headers", "in the window", hdr(100)),
        ("ok", "crosses", True, 300),
        ("headers", "crosses", hdr(100)),
        ("state", "reserved", (0, 5 * HOUR_MS, 0, 200), 10**15 - 300),
        ("state", "settled", (0, 5 * HOUR_MS, 150, 200), 10**15 - 200),
    ],
)
case(
    "balance short",
    {"window_tokens": 100, "balance": 50},
    balance_short,
    [
        ("ok", "small", False, 0),
        ("headers", "small", hdr(80)),
        ("refused", "too dear", "balance", 0),
        ("headers", "too dear", {**hdr(80), "X-Balance-Micros": "50"}),
        ("state", "refused", (0, 5 * HOUR_MS, 0, 20), 50),
    ],
)
case(
    "budget empty",
    {"window_tokens": 100},
    budget_empty,
    [
        ("ok", "small", False, 0),
        ("headers", "small", hdr(80)),
        ("refused", "no balance", "budget", 5 * 3600),
        # 80 are left, fewer than the 200 it needs: shown as they are, not as 0.
        ("headers", "no balance", hdr(80)),
    ],
)
case(
    "a dense prompt holds its bound",
    {"window_tokens": 1000, "balance": 10_000},
    dense_prompt_holds_its_bound,
    [
        ("ok", "dense", False, 0),
        ("headers", "dense", hdr(50)),
        ("state", "holds 950", (0, 5 * HOUR_MS, 0, 950), 10_000),
        # need 100 + 2*50 = 200 micros, holds 900 + 2*50 = 1,000
        ("ok", "dense again", True, 1000),
        ("headers", "dense again", hdr(50)),
        ("state", "paid", (0, 5 * HOUR_MS, 0, 950), 9_000),
        ("state", "settled", (0, 5 * HOUR_MS, 700, 0), 9_000),
    ],
)
case(
    "the last tokens of a window",
    {"window_tokens": 1000},
    last_tokens_of_a_window,
    [
        ("ok", "most", False, 0),
        ("headers", "most", hdr(110)),
        ("ok", "the rest", False, 0),
        ("headers", "the rest", hdr(0)),
        ("state", "all held", (0, 5 * HOUR_MS, 0, 1000), 0),
        ("refused", "nothing left", "budget", 5 * 3600),
        ("headers", "nothing left", hdr(0)),
        ("state", "overrun by one", (0, 5 * HOUR_MS, 1190, 0), 0),
    ],
)
case(
    "the balance holds at most itself",
    {"window_tokens": 1, "balance": 1000},
    balance_holds_at_most_itself,
    [
        ("ok", "fills the window", False, 0),
        ("headers", "fills the window", hdr(0)),
        ("ok", "dense, paid", True, 1000),
        ("headers", "dense, paid", hdr(0)),
        ("state", "held", (0, 5 * HOUR_MS, 0, 1), 0),
        ("refused", "next", "budget", 5 * 3600),
        ("headers", "next", hdr(0)),
        # 100 micro-dollars under: what this one request used beyond all there was.
        ("state", "one request under", (0, 5 * HOUR_MS, 1000, 1), -100),
    ],
)
case(
    "unit-priced",
    {"window_tokens": 1000, "balance": 1000},
    unit_priced,
    [
        ("ok", "300 micros", True, 300),
        ("headers", "300 micros", hdr(1000)),
        ("refused", "800 micros", "balance", 0),
        ("headers", "800 micros", {**hdr(1000), "X-Balance-Micros": "700"}),
        ("state", "after", (0, 5 * HOUR_MS, 0, 0), 700),
    ],
)
case(
    "batch price factor",
    {"window_tokens": 1, "balance": 1000},
    batch_price_factor,
    [
        ("ok", "fills the window", False, 0),
        ("headers", "fills the window", hdr(0)),
        ("ok", "half price", True, 2),
        ("headers", "half price", hdr(0)),
        ("state", "after", (0, 5 * HOUR_MS, 0, 1), 998),
    ],
)
case(
    "stale key",
    {},
    stale_key,
    [
        ("ok", "before", False, 0),
        ("headers", "before", hdr()),
        ("stale", "after the change"),
    ],
)
case(
    "settle exactly once",
    {"window_tokens": 1000},
    settle_exactly_once,
    [
        ("ok", "once", False, 0),
        ("headers", "once", hdr(800)),
        ("state", "after", (0, 5 * HOUR_MS, 50, 0), 0),
    ],
)
case(
    "reaper",
    {"window_tokens": 1000, "balance": 5000},
    reaper,
    [
        ("ok", "dies", False, 0),
        ("headers", "dies", hdr(800)),
        ("ok", "paid, dies", True, 1500),
        ("headers", "paid, dies", hdr(800)),
        ("state", "held", (0, 5 * HOUR_MS, 0, 200), 3500),
        ("reaped", "first pass", 2),
        ("reaped", "second pass", 0),
        ("state", "released", (0, 5 * HOUR_MS, 0, 0), 5000),
    ],
)
case(
    "restored from the database",
    {"window_tokens": 1000, "balance": 1000, "started_ago_ms": 600_000, "used": 900},
    restored_from_the_database,
    [
        ("ok", "crosses", True, 300),
        ("headers", "crosses", hdr(100)),
        ("state", "after", (-600_000, 5 * HOUR_MS - 600_000, 900, 0), 700),
    ],
)


MARCH = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000) - T0_MS
APRIL = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000) - T0_MS
BUDGET_RETRY = -(-APRIL // 1000)  # until the month's end, in whole seconds
case(
    "key budget",
    {"key_budget_micros": 1000},
    key_budget,
    [
        ("ok", "a 300", False, 0),
        ("headers", "a 300", hdr()),
        ("ok", "b 500", False, 0),
        ("headers", "b 500", hdr()),
        ("spend", "held", (MARCH, 0, 800), None),
        ("refused", "c 300", "key_budget", BUDGET_RETRY),
        ("headers", "c 300", hdr()),
        ("refused", "d 300", "key_budget", BUDGET_RETRY),
        ("headers", "d 300", hdr()),
        ("ok", "e 300", False, 0),
        ("headers", "e 300", hdr()),
        ("spend", "after", (MARCH, 450, 300), None),
    ],
)
case(
    "member budget",
    {"member_id": 424242, "member_budget_micros": 600, "keys": 2},
    member_budget,
    [
        ("ok", "a 300", False, 0),
        ("headers", "a 300", hdr()),
        ("ok", "b 300", False, 0),
        ("headers", "b 300", hdr()),
        ("refused", "c 1", "member_budget", BUDGET_RETRY),
        ("headers", "c 1", hdr()),
        ("spend", "full", None, (MARCH, 0, 600)),
        ("ok", "d 150", False, 0),
        ("headers", "d 150", hdr()),
        ("spend", "after", None, (MARCH, 100, 450)),
    ],
)
case(
    "budget restored, then a new month",
    {
        "key_budget_micros": 1000,
        "spent": [
            (datetime(2026, 3, 8, tzinfo=UTC), 700),
            (datetime(2026, 2, 20, tzinfo=UTC), 5000),
        ],
    },
    budget_restored_then_a_new_month,
    [
        ("ok", "a 300", False, 0),
        ("headers", "a 300", hdr()),
        ("refused", "b 1", "key_budget", BUDGET_RETRY),
        ("headers", "b 1", hdr()),
        ("spend", "march", (MARCH, 700, 300), None),
        ("ok", "april", False, 0),
        (
            "headers",
            "april",
            {"X-RateLimit-Reset": str(int(datetime(2026, 4, 1, 0, 1, tzinfo=UTC).timestamp()))},
        ),
        ("spend", "april", (APRIL, 0, 300), None),
    ],
)

case(
    "budget reaped",
    {"key_budget_micros": 1000, "member_id": 424243, "member_budget_micros": 5000},
    budget_reaped,
    [
        ("ok", "dies", False, 0),
        ("headers", "dies", hdr()),
        ("spend", "held", (MARCH, 0, 300), (MARCH, 0, 300)),
        ("reaped", "reaped", 1),
        ("spend", "released", (MARCH, 0, 0), (MARCH, 0, 0)),
    ],
)

case(
    "budget: an earlier month's live copy",
    {
        "key_budget_micros": 1000,
        "spent": [
            (datetime(2026, 3, 8, tzinfo=UTC), 700),
            (datetime(2026, 2, 20, tzinfo=UTC), 200),
        ],
    },
    budget_an_earlier_months_copy,
    [
        ("ok", "february", False, 0),
        (
            "headers",
            "february",
            {"X-RateLimit-Reset": str(int(datetime(2026, 2, 25, 0, 1, tzinfo=UTC).timestamp()))},
        ),
        ("refused", "march 400", "key_budget", BUDGET_RETRY),
        ("headers", "march 400", hdr()),
        ("spend", "march", (MARCH, 700, 0), None),
    ],
)


def _run(account: dict[str, Any], run: Case) -> list[Any]:
    account = dict(account)
    balance = account.pop("balance", 0)
    started_ago_ms = account.pop("started_ago_ms", None)
    used = account.pop("used", 0)
    key_count = account.pop("keys", 1)
    spent = account.pop("spent", [])
    acct = factories.account(balance_micros=balance)
    if started_ago_ms is not None:
        acct.window_started_at = datetime.fromtimestamp((T0_MS - started_ago_ms) / 1000, tz=UTC)
        acct.window_used_tokens = used
        acct.save(update_fields=["window_started_at", "window_used_tokens"])
    key, secret = factories.api_key(acct)
    for i, (at, cost) in enumerate(spent):
        StoredUsage.objects.create(
            request_id=f"req_spent_{key.pk}_{i}",
            account=acct,
            api_key=key,
            surface="openai",
            model=MODEL.model_id,
            status=200,
            cost_micros=cost,
            created_at=at,
        )
    # The key's change counter as authentication reads it (issuing a key announces it).
    authenticated = asyncio.run(auth.authenticate(secret))
    assert authenticated is not None
    caller = dataclasses.replace(
        _caller(acct, key.pk, key.key_hash, **account), version=authenticated.version
    )
    others = []
    for _ in range(key_count - 1):
        other, other_secret = factories.api_key(acct)
        version = asyncio.run(auth.authenticate(other_secret))
        assert version is not None
        others.append(
            dataclasses.replace(
                _caller(acct, other.pk, other.key_hash, **account), version=version.version
            )
        )
    h = Harness(caller=caller, others=others)
    limits.reset_memory()
    with time_machine.travel(T0, tick=False):
        asyncio.run(run(h))
    metering.discard_local()
    return h.seen


LIMITERS = ["in-process", "redis"]


@pytest.mark.parametrize("limiter", LIMITERS)
@pytest.mark.parametrize("name", list(CASES))
def test_both_limiters_give_the_same_answers(name: str, limiter: str, settings: Any) -> None:
    """Each limiter must give exactly the case's answers, so the two agree with each other."""
    account, run, expected = CASES[name]
    if limiter == "in-process":
        settings.REDIS_URL = ""
    elif not settings.REDIS_URL:
        pytest.skip("the Redis half needs REDIS_URL (CI sets it)")
    assert _run(account, run) == expected
