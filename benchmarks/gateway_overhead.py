"""What the gateway adds to each request: the simulator directly against the gateway in front of
the same simulator, in one run, stream and non-stream.

    .venv/bin/python benchmarks/gateway_overhead.py [--server uvicorn|granian] [--workers 1]
                                                     [--seconds 5] [--redis URL] [--json FILE]

It starts its own simulator and gateway on free loopback ports with a throwaway SQLite database
(or PostgreSQL/Redis when --database-url/--redis are given), an Enterprise account and a key,
then runs each case against both and prints the figures the README quotes. ``--server granian``
needs the ``bench`` extra (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MODEL = "gpt-4o"  # routed to the simulator's OpenAI protocol by the embedded catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def children(pid: int) -> list[int]:
    """`pid` and every process below it (workers, their helpers), from /proc."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(p.name)] = int(stat[1])
    found = [pid]
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in found and child not in found:
                found.append(child)
                grew = True
    return found


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / tick
    return total


def rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return out


def chat_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something short about benchmarks."}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def messages_body() -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "Say something short about benchmarks."}],
        }
    ).encode()


CASES: list[dict[str, Any]] = [
    {"name": "non-stream, 1 client, 0 ms upstream", "clients": 1, "stream": False, "opt": ""},
    {"name": "stream, 1 client, 0 ms upstream", "clients": 1, "stream": True, "opt": ""},
    {
        "name": "cross-protocol (Anthropic shape to OpenAI model), 1 client",
        "clients": 1,
        "stream": False,
        "opt": "",
        "anthropic": True,
    },
    {
        "name": "non-stream, 64 clients, 200 ms upstream",
        "clients": 64,
        "stream": False,
        "opt": "latency=200",
    },
    {
        "name": "stream, 64 clients, 200 ms to first token",
        "clients": 64,
        "stream": True,
        "opt": "ttft=200",
    },
    {
        "name": "non-stream, 256 clients, 200 ms upstream",
        "clients": 256,
        "stream": False,
        "opt": "latency=200",
    },
    {"name": "saturation, non-stream, 0 ms", "clients": 64, "stream": False, "opt": ""},
    {"name": "saturation, stream, 0 ms", "clients": 64, "stream": True, "opt": ""},
]


async def measure(args: argparse.Namespace, sim: str, gw: str, key: str, gw_pid: int) -> list[Any]:
    rows = []
    for case in CASES:
        headers = {"x-sim-options": case["opt"]} if case["opt"] else {}
        body = chat_body(case["stream"])
        direct = await loadgen.run(
            f"{sim}/v1/chat/completions",
            body,
            headers=headers,
            clients=case["clients"],
            seconds=args.seconds,
            warmup=args.warmup,
        )
        gw_headers = {**headers, "authorization": f"Bearer {key}"}
        if case.get("anthropic"):
            url, gw_body = f"{gw}/anthropic/v1/messages", messages_body()
            gw_headers["anthropic-version"] = "2023-06-01"
        else:
            url, gw_body = f"{gw}/openai/v1/chat/completions", body
        pids = children(gw_pid)
        cpu_before = cpu_seconds(pids)
        through = await loadgen.run(
            url,
            gw_body,
            headers=gw_headers,
            clients=case["clients"],
            seconds=args.seconds,
            warmup=args.warmup,
        )
        cpu_after = cpu_seconds(pids)
        d, g = direct.summary(), through.summary()
        rows.append(
            {
                "case": case["name"],
                "direct": d,
                "gateway": g,
                "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
                "added_p99_ms": round(g["p99_ms"] - d["p99_ms"], 3),
                "added_ttft_p50_ms": round(g["ttft_p50_ms"] - d["ttft_p50_ms"], 3),
                "gateway_cpu_ms_per_request": round(
                    (cpu_after - cpu_before) * 1000 / max(1, through.count), 3
                ),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def start_gateway(
    server: str, workers: int, env: dict[str, str], port: int
) -> subprocess.Popen[bytes]:
    if server == "granian":
        if importlib.util.find_spec("granian") is None:
            raise SystemExit("--server granian needs granian: pip install -e '.[bench]'")
        cmd = [
            PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--no-ws", "--log-level", "warning", "tokenfactory.asgi:application",
        ]  # fmt: skip
    else:
        # What the README's run command serves with: uvicorn (uvloop, httptools), eager tasks.
        cmd = [
            PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--log-level", "warning",
        ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def bench_env(tmp: Path, sim_port: int, database_url: str = "", redis: str = "") -> dict[str, str]:
    """The gateway's environment: a throwaway SQLite database under `tmp` unless `database_url`,
    in-process limits unless `redis`, the catalog routed to the simulator on `sim_port`."""
    env = {
        **os.environ,
        "TF_VAR_DIR": str(tmp),
        "DEBUG": "false",
        # Plain HTTP on loopback, as scripts/run serves: no redirect to HTTPS.
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "SECRET_KEY": "bench-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SIMULATOR_URL": f"http://127.0.0.1:{sim_port}",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env["DATABASE_URL"] = database_url or f"sqlite:///{tmp}/bench.sqlite3"
    if redis:
        env["REDIS_URL"] = redis
    return env


def start_simulator(
    env: dict[str, str], port: int, *, latency_ms: int = 0, ttft_ms: int = 0
) -> subprocess.Popen[bytes]:
    """The upstream simulator on `port`; `latency_ms`/`ttft_ms` are its defaults per request."""
    cmd = [PY, "manage.py", "simulator", "--port", str(port)]
    if latency_ms:
        cmd += ["--latency-ms", str(latency_ms)]
    if ttft_ms:
        cmd += ["--ttft-ms", str(ttft_ms)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )


def provision(env: dict[str, str], sim_url: str) -> str:
    """Migrate and seed the catalog (routed to `sim_url`), make an Enterprise account with a
    bottomless balance, and return a fresh prod key for it."""
    manage(env, "bootstrap", "--simulator-url", sim_url)
    email = "bench@example.com"
    manage(env, "createaccount", "--email", email, "--password", "bench-Pass-1234!",
           "--plan", "Enterprise")  # fmt: skip
    key = manage(env, "issuekey", "--email", email, "--env", "prod", "--name", "bench")
    manage(env, "shell", "-c",
           "from accounts.models import Account; "
           "Account.objects.update(balance_micros=10**15)")  # fmt: skip
    return key


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL whatever has not left within 10 seconds."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--redis", default="", help="REDIS_URL for the gateway (default: none)")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    if args.only:
        CASES[:] = [c for c in CASES if args.only in c["name"]]

    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    sim_port, gw_port = free_port(), free_port()
    env = bench_env(tmp, sim_port, args.database_url, args.redis)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_simulator(env, sim_port))
        sim, gw = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
        key = provision(env, sim)
        gateway = start_gateway(args.server, args.workers, env, gw_port)
        procs.append(gateway)
        wait_http(f"{sim}/_sim/stats")
        wait_http(f"{gw}/healthz")
        rows = asyncio.run(measure(args, sim, gw, key, gateway.pid))
        memory = rss_mb(children(gateway.pid))
        report = {
            "server": args.server,
            "workers": args.workers,
            "redis": bool(args.redis),
            "rss_mb_per_process": [round(m, 1) for m in memory],
            "rows": rows,
        }
        print_table(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(report: dict[str, Any]) -> None:
    print()
    print(
        f"server={report['server']} workers={report['workers']} redis={report['redis']} "
        f"rss MB per process={report['rss_mb_per_process']}"
    )
    print(
        "| case | direct rps | gateway rps | direct p50 | added p50 | added p99 "
        "| added TTFT p50 | gateway CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["rows"]:
        print(
            f"| {r['case']} | {r['direct']['rps']} | {r['gateway']['rps']} "
            f"| {r['direct']['p50_ms']} | {r['added_p50_ms']} | {r['added_p99_ms']} "
            f"| {r['added_ttft_p50_ms']} | {r['gateway_cpu_ms_per_request']} |"
        )


if __name__ == "__main__":
    main()
