"""The simulator directly, our gateway in front of it, and LiteLLM proxy in front of it: the same
cases, the same worker count, back to back in one run, so every figure is a ratio side by side.

    .venv/bin/python benchmarks/compare.py [--workers 1] [--seconds 5] [--warmup 1]
                                           [--skip-litellm] [--only TEXT]

It installs LiteLLM (``litellm[proxy]``, pinned below) into ``benchmarks/.litellm-venv`` the first
time, then starts, on free loopback ports:

- two simulators, one per latency profile: "0 ms" (answers at once) and "200 ms" (200 ms before a
  non-stream reply and before a stream's first byte, set by its ``--latency-ms``/``--ttft-ms``);
  all three targets use the same simulator for a case, so no per-request header has to survive a
  proxy;
- our gateway (uvicorn, ``--workers W``) on a throwaway SQLite database with an Enterprise account
  and a key: key check, RPM/TPM/window/balance admission and metering are all on, as always;
  ``gpt-4o`` is routed to the 0 ms simulator and ``gpt-4o-slow`` (a copy) to the 200 ms one;
- LiteLLM proxy (``--num_workers W``, no database, a master key, ``LITELLM_LOG=ERROR``) with the
  same two model names routed to the same simulators through its ``openai/`` provider.

On a machine with two or more CPUs and one worker, the gateways (ours and LiteLLM) are pinned to
the last CPU and the driver and the simulators to the others (``--no-pin`` leaves all of them to
the scheduler). Unpinned on two cores, three busy processes share two CPUs, and a request waits
for a core the driver or the simulator holds: measured on one 64-client stream run, the gateway
took 0.9 ms (p50) to see a request after the driver sent it and 0.6 ms to see the simulator's
answer, against 0.45 ms of its own work; pinned, both waits are gone. The driver and simulator
are pinned the same way for the direct runs, so every ratio is between like and like.

Each case runs against the simulator, then us, then LiteLLM. The table gives requests per second,
p50/p99 latency (to the last byte), p50 time to first byte (first token when streaming), what each
gateway adds over the simulator, CPU milliseconds per request of the target's process tree (from
/proc) and resident memory per worker; the summary gives ours/LiteLLM throughput and checks the
issue's targets. The JSON goes to ``benchmarks/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as go
import loadgen

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".litellm-venv"
LITELLM_SPEC = "litellm[proxy]==1.108.7"
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2
SLOW_MS = 200
PROMPT = "Say something short about benchmarks."

# profile "fast": the 0 ms simulator; "slow": the 200 ms one.
CASES: list[dict[str, Any]] = [
    {"name": "non-stream, 1 client, 0 ms (pure overhead)", "clients": 1, "stream": False,
     "profile": "fast", "target": "one"},
    {"name": "stream, 1 client, 0 ms", "clients": 1, "stream": True, "profile": "fast"},
    {"name": "cross-protocol (Anthropic shape to an OpenAI model), 1 client, 0 ms", "clients": 1,
     "stream": False, "profile": "fast", "anthropic": True},
    {"name": "non-stream, 64 clients, 200 ms upstream", "clients": 64, "stream": False,
     "profile": "slow", "target": "64"},
    {"name": "stream, 64 clients, 200 ms to first token", "clients": 64, "stream": True,
     "profile": "slow", "target": "64s"},
    {"name": "non-stream, 256 clients, 200 ms upstream", "clients": 256, "stream": False,
     "profile": "slow"},
    {"name": "saturation, non-stream, 64 clients, 0 ms", "clients": 64, "stream": False,
     "profile": "fast", "target": "saturation"},
    {"name": "saturation, stream, 64 clients, 0 ms", "clients": 64, "stream": True,
     "profile": "fast"},
]  # fmt: skip


def chat_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def messages_body(model: str) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()


# --- LiteLLM -------------------------------------------------------------------------------------


def ensure_litellm() -> tuple[Path, str]:
    """LiteLLM's `litellm` command in its own virtual environment, created on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if not exe.exists():
        print(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (once)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             LITELLM_SPEC],
            check=True,
        )  # fmt: skip
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return exe, version


def litellm_config(fast: str, slow: str) -> str:
    """A config with `gpt-4o` on the 0 ms simulator and `gpt-4o-slow` on the 200 ms one.

    `use_chat_completions_url_for_anthropic_messages` makes /v1/messages for an `openai/` model
    call chat/completions (this version would otherwise call the Responses API, which the
    simulator does not serve); `disable_cooldowns` keeps one failed request from benching the
    only deployment."""
    lines = ["model_list:"]
    for name, base in (("gpt-4o", fast), ("gpt-4o-slow", slow)):
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            "      model: openai/gpt-4o",
            f"      api_base: {base}/v1",
            "      api_key: dummy",
        ]
    lines += [
        "litellm_settings:",
        "  telemetry: false",
        "  use_chat_completions_url_for_anthropic_messages: true",
        "router_settings:",
        "  disable_cooldowns: true",
        "general_settings:",
        f"  master_key: {LITELLM_KEY}",
    ]
    return "\n".join(lines) + "\n"


def start_litellm(
    exe: Path, config: Path, port: int, workers: int, tmp: Path
) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "LITELLM_MASTER_KEY", "VIRTUAL_ENV"}
    }
    env.update(
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",  # do not read a .env file
        TELEMETRY="False",
        PATH=f"{exe.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", str(workers)]  # fmt: skip
    log = (tmp / "litellm.log").open("wb")
    return subprocess.Popen(
        cmd, cwd=tmp, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"LiteLLM exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not come up:\n{log.read_text()[-3000:]}")


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    base: dict[str, str]  # profile -> base URL
    pid: dict[str, int]  # profile -> root pid of the process tree that serves it
    headers: dict[str, str] = field(default_factory=dict)
    chat_path: str = "/v1/chat/completions"
    messages_path: str | None = None
    models: dict[str, str] = field(default_factory=lambda: {"fast": "gpt-4o", "slow": "gpt-4o"})
    workers: int = 1
    peak_rss: dict[int, float] = field(default_factory=dict)

    def request(self, case: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        base, model = self.base[case["profile"]], self.models[case["profile"]]
        if case.get("anthropic") and self.messages_path:
            headers = {**self.headers, "anthropic-version": "2023-06-01"}
            return base + self.messages_path, messages_body(model), headers
        return base + self.chat_path, chat_body(model, case["stream"]), self.headers

    def rss_per_worker(self, pids: list[int]) -> float:
        """Mean resident memory of the `workers` largest processes of the tree (the workers; a
        supervisor, when there is one, is smaller), and remember each process's peak."""
        sizes = []
        for pid in pids:
            mb = go.rss_mb([pid])
            if mb:
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0.0), mb[0])
                sizes.append(mb[0])
        sizes = sorted(sizes, reverse=True)[: self.workers]
        return sum(sizes) / len(sizes) if sizes else math.nan


async def drive(
    url: str, body: bytes, headers: dict[str, str], clients: int, args: argparse.Namespace
) -> loadgen.Result:
    """`clients` keep-alive clients for `args.seconds` after `args.warmup`, their first requests
    spread evenly over `args.stagger` seconds.

    Started all at once, N clients in front of a fixed-latency upstream stay in lockstep: every
    200 ms all N requests reach the gateway in the same instant and the last one waits for the N-1
    before it, which measures the burst, not the gateway. Staggered starts spread arrivals the way
    independent callers do. Every client's measuring window is the same one."""
    if clients == 1 or args.stagger <= 0:
        return await loadgen.run(
            url, body, headers=headers, clients=clients, seconds=args.seconds, warmup=args.warmup
        )
    step = min(args.stagger, args.warmup * 0.9) / clients

    async def one(i: int) -> loadgen.Result:
        await asyncio.sleep(i * step)
        return await loadgen.run(
            url, body, headers=headers, clients=1, seconds=args.seconds,
            warmup=args.warmup - i * step,
        )  # fmt: skip

    parts = await asyncio.gather(*(one(i) for i in range(clients)))
    merged = loadgen.Result(elapsed=max(p.elapsed for p in parts))
    for p in parts:
        merged.latencies += p.latencies
        merged.ttfts += p.ttfts
        merged.errors += p.errors
        for status, n in p.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + n
    return merged


async def run_one(target: Target, case: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if case.get("anthropic") and target.name != "direct" and not target.messages_path:
        return {"target": target.name, "na": True}
    url, body, headers = target.request(case)
    pids = go.children(target.pid[case["profile"]])
    marks: dict[str, float] = {}

    async def mark_warm() -> None:
        # CPU is counted from the end of the warm-up, like the requests loadgen keeps.
        await asyncio.sleep(args.warmup)
        marks.update(cpu=go.cpu_seconds(pids), driver=time.process_time(), wall=time.perf_counter())

    marker = asyncio.create_task(mark_warm())
    try:
        result = await asyncio.wait_for(
            drive(url, body, headers, case["clients"], args),
            timeout=args.warmup + args.seconds + 120,
        )
    except TimeoutError:
        return {"target": target.name, "na": True, "timeout": True}
    finally:
        await marker
    wall = time.perf_counter() - marks["wall"]
    cpu = go.cpu_seconds(pids) - marks["cpu"]
    driver = time.process_time() - marks["driver"]
    row: dict[str, Any] = {"target": target.name, **result.summary()}
    row["statuses"] = {str(k): v for k, v in result.statuses.items()}
    row["cpu_ms_per_request"] = round(cpu * 1000 / max(1, result.count), 3)
    row["cpu_cores_busy"] = round(cpu / wall, 2)
    row["driver_cpu_pct"] = round(100 * driver / wall, 1)
    row["rss_mb_per_worker"] = round(target.rss_per_worker(pids), 1)
    return row


async def measure(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for case in CASES:
        runs = {t.name: await run_one(t, case, args) for t in targets}
        direct = runs["direct"]
        for name, r in runs.items():
            if name == "direct" or r.get("na"):
                continue
            r["added_p50_ms"] = round(r["p50_ms"] - direct["p50_ms"], 3)
            r["added_p99_ms"] = round(r["p99_ms"] - direct["p99_ms"], 3)
            r["added_ttft_p50_ms"] = round(r["ttft_p50_ms"] - direct["ttft_p50_ms"], 3)
        row = {"case": case["name"], "clients": case["clients"], "runs": runs}
        ours, lite = runs.get("ours"), runs.get("litellm")
        if ours and lite and not lite.get("na") and lite["rps"]:
            row["rps_ours_over_litellm"] = round(ours["rps"] / lite["rps"], 2)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


# --- report --------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        f"workers={report['workers']} redis={report['redis']} seconds={report['seconds']} "
        f"stagger={report['stagger_s']}s pinned={report.get('pinned') or 'no'} "
        f"litellm={report['litellm']} "
        f"load before={report['load_before']} after={report['load_after']} "
        f"python 1M-step loop={report.get('python_loop_ms')} ms"
    )
    print()
    print(
        "| case | target | rps | p50 ms | p99 ms | TTFB p50 ms | added p50 | added p99 "
        "| added TTFB p50 | CPU ms/req | RSS MB/worker | errors | driver CPU % |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in report["rows"]:
        for name, r in row["runs"].items():
            if r.get("na"):
                print(f"| {row['case']} | {name} | n/a |" + " |" * 10)
                continue
            print(
                f"| {row['case']} | {name} | {_f(r['rps'], 1)} | {_f(r['p50_ms'])} "
                f"| {_f(r['p99_ms'])} | {_f(r['ttft_p50_ms'])} | {_f(r.get('added_p50_ms'))} "
                f"| {_f(r.get('added_p99_ms'))} | {_f(r.get('added_ttft_p50_ms'))} "
                f"| {_f(r['cpu_ms_per_request'])} | {_f(r['rss_mb_per_worker'], 0)} "
                f"| {r['errors']} | {_f(r['driver_cpu_pct'], 0)} |"
            )
    print()
    print(
        "| case | ours rps | LiteLLM rps | ours / LiteLLM | ours CPU ms/req | LiteLLM CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in report["rows"]:
        ours, lite = row["runs"].get("ours", {}), row["runs"].get("litellm", {})
        print(
            f"| {row['case']} | {_f(ours.get('rps'), 1)} | {_f(lite.get('rps'), 1)} "
            f"| {_f(row.get('rps_ours_over_litellm'))} | {_f(ours.get('cpu_ms_per_request'))} "
            f"| {_f(lite.get('cpu_ms_per_request'))} |"
        )
    print()
    for line in report["checks"]:
        print(line)


# The targets: (case key, added p50, added p99, added time to first byte), in ms.
TARGETS = (("one", 2.0, None, None), ("64", 3.0, 15.0, 3.0), ("64s", 3.0, 15.0, 3.0))


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with its measured figure and PASS/FAIL."""
    by_target = {c["target"]: c["name"] for c in CASES if "target" in c}
    runs = {row["case"]: row for row in rows}
    out = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for key, p50, p99, ttft in TARGETS:
        row = runs.get(by_target.get(key, ""))
        if not row:
            continue
        ours = row["runs"]["ours"]
        if "added_p50_ms" not in ours:
            out.append(f"target {row['case']}: not measured")
            continue
        parts, ok = [], True
        for label, limit, field_name in (
            ("p50", p50, "added_p50_ms"),
            ("p99", p99, "added_p99_ms"),
            ("TTFB p50", ttft, "added_ttft_p50_ms"),
        ):
            if limit is None:
                continue
            parts.append(f"added {label} {ours[field_name]} ms (<= {limit:g})")
            ok = ok and ours[field_name] <= limit
        out.append(f"target {row['case']}: {', '.join(parts)}: {verdict(ok)}")
    row = runs.get(by_target.get("saturation", ""))
    if row and not row["runs"]["ours"].get("na"):
        d, ours = row["runs"]["direct"], row["runs"]["ours"]
        ratio = row.get("rps_ours_over_litellm")
        if ratio is not None:
            out.append(
                f"saturation: ours {ours['rps']} rps vs LiteLLM "
                f"{row['runs']['litellm']['rps']} rps = {ratio}x"
            )
        lite_rps = row["runs"].get("litellm", {}).get("rps", 0)
        out.append(
            f"driver check: the simulator directly served {d['rps']} rps at saturation, "
            f"{d['rps'] / max(ours['rps'], lite_rps, 1):.1f}x the fastest gateway "
            f"(driver CPU {d['driver_cpu_pct']}% of one core while doing it)"
        )
    return out


def pin(
    args: argparse.Namespace,
    *,
    sims: list[subprocess.Popen[bytes]],
    gateways: list[subprocess.Popen[bytes] | None],
) -> dict[str, list[int]] | None:
    """Put the gateways on the last CPU and the driver (this process) and the simulators on the
    others (see the module's docstring). Each server runs in its own process group."""
    cpus = sorted(os.sched_getaffinity(0))
    wanted = args.pin if args.pin is not None else (args.workers == 1 and len(cpus) >= 2)
    if not wanted or len(cpus) < 2:
        return None
    harness, own = set(cpus[:-1]), {cpus[-1]}
    for proc in sims:
        _pin_group(proc.pid, harness)
    for server in gateways:
        if server is not None:
            _pin_group(server.pid, own)
    os.sched_setaffinity(0, harness)
    return {"gateway_cpus": sorted(own), "driver_and_simulator_cpus": sorted(harness)}


def _pin_group(pgid: int, cpus: set[int]) -> None:
    """Every thread of every process in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) != pgid:  # after the state and the parent: the process group
            continue
        for task in (stat.parent / "task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def python_speed_ms() -> float:
    """How fast this machine runs Python right now: the best of five timings of a one-million-
    step loop. Shared and virtual machines vary from day to day (seen here: 40 to 160 ms), and
    every figure in a run moves with it; compare runs only with this beside them."""
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--stagger",
        type=float,
        default=SLOW_MS / 1000,
        help="spread the clients' first requests over this many seconds (0: all at once)",
    )
    parser.add_argument(
        "--redis",
        default="",
        help="REDIS_URL for our gateway: limits and balances shared by its workers "
        "(default: none, each worker keeps its own, as LiteLLM without a database does)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the gateways on their own CPU, the driver and simulators on the rest "
        "(default: on with one worker and two or more CPUs)",
    )
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--json", default="", help="write here (default benchmarks/results/)")
    args = parser.parse_args()
    if args.only:
        CASES[:] = [c for c in CASES if args.only in c["name"]]

    litellm_exe, litellm_version = (None, "") if args.skip_litellm else ensure_litellm()
    load_before = loadavg()
    speed_ms = python_speed_ms()
    tmp = Path(tempfile.mkdtemp(prefix="tf-compare-"))
    fast_port, slow_port, gw_port, lt_port = (go.free_port() for _ in range(4))
    fast, slow = f"http://127.0.0.1:{fast_port}", f"http://127.0.0.1:{slow_port}"
    gw, lt = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{lt_port}"
    env = go.bench_env(tmp, fast_port, redis=args.redis)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim_fast = go.start_simulator(env, fast_port)
        sim_slow = go.start_simulator(env, slow_port, latency_ms=SLOW_MS, ttft_ms=SLOW_MS)
        procs += [sim_fast, sim_slow]
        key = go.provision(env, fast)
        go.manage(env, "shell", "-c", _slow_model_script(slow))
        gateway = go.start_gateway("uvicorn", args.workers, env, gw_port)
        procs.append(gateway)
        litellm, config_text = None, ""
        if litellm_exe:
            config = tmp / "litellm_config.yaml"
            config_text = litellm_config(fast, slow)
            config.write_text(config_text)
            litellm = start_litellm(litellm_exe, config, lt_port, args.workers, tmp)
            procs.append(litellm)
        go.wait_http(f"{fast}/_sim/stats")
        go.wait_http(f"{slow}/_sim/stats")
        go.wait_http(f"{gw}/healthz")
        sims = {"fast": sim_fast.pid, "slow": sim_slow.pid}
        targets = [
            Target("direct", {"fast": fast, "slow": slow}, sims),
            Target(
                "ours",
                {"fast": gw, "slow": gw},
                {"fast": gateway.pid, "slow": gateway.pid},
                headers={"authorization": f"Bearer {key}"},
                chat_path="/openai/v1/chat/completions",
                messages_path="/anthropic/v1/messages",
                models={"fast": "gpt-4o", "slow": "gpt-4o-slow"},
                workers=args.workers,
            ),
        ]
        if litellm:
            wait_ready(f"{lt}/health/liveliness", litellm, tmp / "litellm.log")
            targets.append(
                Target(
                    "litellm",
                    {"fast": lt, "slow": lt},
                    {"fast": litellm.pid, "slow": litellm.pid},
                    headers={"authorization": f"Bearer {LITELLM_KEY}"},
                    messages_path="/v1/messages",
                    models={"fast": "gpt-4o", "slow": "gpt-4o-slow"},
                    workers=args.workers,
                )
            )
        pinned = pin(args, sims=[sim_fast, sim_slow], gateways=[gateway, litellm])
        _smoke(targets)
        rows = asyncio.run(measure(targets, args))
        report: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "workers": args.workers,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "stagger_s": args.stagger,
            "cpus": os.cpu_count(),
            "server": "uvicorn",
            "redis": bool(args.redis),
            "pinned": pinned,
            "litellm": litellm_version or "skipped",
            "load_before": load_before,
            "load_after": loadavg(),
            "python_loop_ms": speed_ms,
            "peak_rss_mb_per_process": {
                t.name: [round(v, 1) for v in t.peak_rss.values()] for t in targets
            },
            "litellm_config": config_text,
            "rows": rows,
        }
        report["checks"] = checks(rows)
        print_report(report)
        out = Path(args.json) if args.json else HERE / "results" / _stamp(args.workers)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {out}")
    finally:
        go.stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp(workers: int) -> str:
    return datetime.now(UTC).strftime(f"%Y%m%dT%H%M%SZ-compare-w{workers}.json")


def _slow_model_script(slow: str) -> str:
    """`gpt-4o-slow`: a copy of gpt-4o (same prices) routed to the 200 ms simulator."""
    return (
        "from gateway.models import CatalogModel, Provider, Route\n"
        "m = CatalogModel.objects.get(model_id='gpt-4o')\n"
        "m.pk = None; m.id = None; m.model_id = 'gpt-4o-slow'; m.save()\n"
        "p = Provider.objects.create(slug='bench-slow', name='Simulator (200 ms)',"
        f" protocol='openai', base_url='{slow}/v1', api_key='simulator')\n"
        "Route.objects.create(model=m, provider=p, upstream_model='gpt-4o')\n"
    )


def _smoke(targets: list[Target]) -> None:
    """One request per target, profile and shape before timing anything: a wrong route fails
    loudly here instead of as a column of errors."""
    for t in targets:
        for case in ({"profile": "fast", "stream": False},
                     {"profile": "fast", "stream": False, "anthropic": True},
                     {"profile": "slow", "stream": False}):  # fmt: skip
            if case.get("anthropic") and not t.messages_path:
                continue
            url, body, headers = t.request(case)
            r = httpx.post(
                url, content=body, headers={**headers, "content-type": "application/json"},
                timeout=30,
            )  # fmt: skip
            if r.status_code != 200:
                raise SystemExit(f"{t.name} {url}: {r.status_code} {r.text[:500]}")


if __name__ == "__main__":
    main()
