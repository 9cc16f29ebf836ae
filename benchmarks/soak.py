"""A soak run by hand: the gateway in front of the simulator at a steady rate for minutes, its
memory sampled every 10 seconds, and the books checked at the end.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rps R | --capacity C] [--clients 64]
                                        [--rss-bound-mb 50] [--warmup-seconds 60]
                                        [--database-url URL] [--redis URL]

Without --rps it runs at 80% of the capacity given by --capacity, or measured in a 10-second
closed-loop probe. Traffic is a mix of OpenAI chat (plain and streamed) and Anthropic messages.
It exits 1 if any request fails, if the gateway's RSS grows by more than --rss-bound-mb after the
warm-up, or if the usage records do not add up to what the simulator served (count, input and
output tokens) or the balance to its start plus top-ups minus charges.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as bench
import loadgen

START_BALANCE_MICROS = 10**15  # what gateway_overhead.provision gives the account
SAMPLE_SECONDS = 10
CHECK = """
import json
from django.db.models import Count, Sum
from accounts.models import Account
from billing.models import LedgerEntry
from gateway import metering
from gateway.models import UsageRecord
metering.drain()
records = UsageRecord.objects.aggregate(
    n=Count("id"), i=Sum("input_tokens"), o=Sum("output_tokens"), billed=Sum("billed_micros")
)
estimates = UsageRecord.objects.filter(is_estimate=True).count()
ledger = LedgerEntry.objects
topups = ledger.filter(kind="topup").aggregate(s=Sum("amount_micros"))["s"] or 0
charges = -(ledger.filter(kind="usage").aggregate(s=Sum("amount_micros"))["s"] or 0)
balance = Account.objects.get(members__email="bench@example.com").balance_micros
print(json.dumps({"records": records["n"], "input_tokens": records["i"] or 0,
    "output_tokens": records["o"] or 0, "billed_micros": records["billed"] or 0,
    "estimates": estimates, "topups_micros": topups, "charges_micros": charges,
    "balance_micros": balance}))
"""


class Paced:
    """Open-loop traffic at ``rps``: request i is sent at start + i / rps by whichever client is
    free, over keep-alive connections, rotating through the prepared requests."""

    def __init__(self, host: str, port: int, raws: list[bytes], rps: float) -> None:
        self.host, self.port, self.raws, self.rps = host, port, raws, rps
        self.sent = 0
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.max_lag_s = 0.0
        self.latencies: list[float] = []

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def run(self, seconds: float, clients: int) -> None:
        start = time.perf_counter()
        slot = 0

        async def client() -> None:
            nonlocal slot
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                while True:
                    i, slot = slot, slot + 1
                    at = start + i / self.rps
                    if at - start >= seconds or time.perf_counter() - start >= seconds:
                        return
                    delay = at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        self.max_lag_s = max(self.max_lag_s, -delay)
                    sent_at = time.perf_counter()
                    writer.write(self.raws[i % len(self.raws)])
                    self.sent += 1
                    try:
                        status, _ = await loadgen._read_response(reader)
                    except (asyncio.IncompleteReadError, ConnectionError) as exc:
                        self._error(type(exc).__name__)
                        writer.close()
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        continue
                    if status == 200:
                        self.ok += 1
                        self.latencies.append(time.perf_counter() - sent_at)
                    else:
                        self._error(f"HTTP {status}")
            finally:
                writer.close()

        await asyncio.gather(*(client() for _ in range(clients)))


def requests(gw: str, key: str) -> tuple[str, int, list[bytes]]:
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    cases = [
        (f"{gw}/openai/v1/chat/completions", bench.chat_body(stream=False)),
        (f"{gw}/openai/v1/chat/completions", bench.chat_body(stream=True)),
        (f"{gw}/anthropic/v1/messages", bench.messages_body()),
    ]
    built = [loadgen.build_request(url, body, headers) for url, body in cases]
    host, port = built[0][0], built[0][1]
    return host, port, [raw for _, _, raw in built]


async def probe(gw: str, key: str, clients: int) -> float:
    """Requests per second the gateway sustains closed-loop on the soak's mix: each of its three
    requests driven by a third of the clients at once."""
    headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    cases = [
        (f"{gw}/openai/v1/chat/completions", bench.chat_body(stream=False)),
        (f"{gw}/openai/v1/chat/completions", bench.chat_body(stream=True)),
        (f"{gw}/anthropic/v1/messages", bench.messages_body()),
    ]
    results = await asyncio.gather(
        *(
            loadgen.run(url, body, headers=headers, clients=max(1, clients // 3), seconds=10)
            for url, body in cases
        )
    )
    for result in results:
        if result.errors:
            raise SystemExit(f"the capacity probe saw errors: {result.statuses}")
    return sum(r.rps for r in results)


async def soak(
    args: argparse.Namespace, gw: str, key: str, pids: list[int], rps: float
) -> tuple[Paced, list[tuple[int, float]]]:
    host, port, raws = requests(gw, key)
    paced = Paced(host, port, raws, rps)
    samples: list[tuple[int, float]] = []
    seconds = args.minutes * 60

    async def sample() -> None:
        begin = time.monotonic()
        while True:
            elapsed = int(time.monotonic() - begin)
            rss = sum(bench.rss_mb(pids))
            samples.append((elapsed, rss))
            print(
                f"{elapsed:>6}s  {rss:8.1f} MB  sent {paced.sent:>8}  ok {paced.ok:>8}  "
                f"errors {sum(paced.errors.values())}",
                flush=True,
            )
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    await paced.run(seconds, args.clients)
    sampler.cancel()
    samples.append((int(seconds), sum(bench.rss_mb(pids))))
    return paced, samples


def books(env: dict[str, str], sim: str, timeout: float = 60) -> tuple[dict[str, Any], Any]:
    """The usage records' totals once they stop moving, and the simulator's."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        mine = json.loads(bench.manage(env, "shell", "-c", CHECK).splitlines()[-1])
        stats = httpx.get(f"{sim}/_sim/stats").json()
        served = {k: stats[k] for k in ("requests", "failures", "input_tokens", "output_tokens")}
        if mine["records"] >= served["requests"] or time.monotonic() > deadline:
            return mine, served
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rps", type=float, default=0, help="default: 80%% of capacity")
    parser.add_argument("--capacity", type=float, default=0, help="default: a 10 s probe")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rss-bound-mb", type=float, default=50)
    parser.add_argument("--warmup-seconds", type=float, default=0, help="default: min(60, 1/3)")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis", default="")
    args = parser.parse_args()
    warmup = args.warmup_seconds or min(60.0, args.minutes * 60 / 3)

    with tempfile.TemporaryDirectory(prefix="tf-soak-") as tmp:
        sim_port, gw_port = bench.free_port(), bench.free_port()
        env = bench.bench_env(Path(tmp), sim_port, args.database_url, args.redis)
        sim, gw = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
        procs = [bench.start_simulator(env, sim_port)]
        try:
            key = bench.provision(env, sim)
            procs.append(bench.start_gateway("uvicorn", 1, env, gw_port))
            bench.wait_http(f"{sim}/v1/models")
            bench.wait_http(f"{gw}/healthz")
            pids = bench.children(procs[-1].pid)
            capacity = args.capacity
            if not args.rps and not capacity:
                capacity = asyncio.run(probe(gw, key, args.clients))
                print(f"capacity (10 s closed-loop probe): {capacity:.0f} req/s")
            rps = args.rps or 0.8 * capacity
            print(f"soaking {args.minutes:g} min at {rps:.0f} req/s, {args.clients} clients")
            print(f"{'time':>7}  {'gateway RSS':>11}")
            paced, samples = asyncio.run(soak(args, gw, key, pids, rps))
            mine, served = books(env, sim)
        finally:
            bench.stop(procs)

    failures: list[str] = []
    after_warmup = [rss for at, rss in samples if at >= warmup]
    baseline = after_warmup[0] if after_warmup else samples[0][1]
    growth = max(after_warmup, default=baseline) - baseline
    latencies = sorted(paced.latencies)
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    print(
        f"\nsent {paced.sent}, ok {paced.ok}, errors {paced.errors or 0}; "
        f"achieved {paced.sent / (args.minutes * 60):.1f} req/s of {rps:.0f}; "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; worst lag behind schedule {paced.max_lag_s:.2f} s"
    )
    print(
        f"RSS {samples[0][1]:.1f} MB at start, {baseline:.1f} MB after the {warmup:g} s warm-up, "
        f"{samples[-1][1]:.1f} MB at the end; growth after warm-up {growth:.1f} MB "
        f"(bound {args.rss_bound_mb:g} MB)"
    )
    print(f"records: {json.dumps(mine)}")
    print(f"simulator served: {json.dumps(served)}")
    if paced.errors:
        failures.append(f"{sum(paced.errors.values())} requests failed: {paced.errors}")
    if growth > args.rss_bound_mb:
        failures.append(f"RSS grew {growth:.1f} MB after warm-up")
    if mine["records"] != served["requests"]:
        failures.append(f"{mine['records']} records for {served['requests']} served requests")
    if (mine["input_tokens"], mine["output_tokens"]) != (
        served["input_tokens"],
        served["output_tokens"],
    ):
        failures.append("the records' tokens differ from what the simulator served")
    if mine["charges_micros"] != mine["billed_micros"]:
        failures.append("ledger charges differ from the records' billed amounts")
    expected = START_BALANCE_MICROS + mine["topups_micros"] - mine["charges_micros"]
    if mine["balance_micros"] != expected:
        failures.append(f"balance {mine['balance_micros']} is not {expected}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("soak OK" if not failures else "soak FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
