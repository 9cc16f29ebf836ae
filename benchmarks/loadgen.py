"""A small, fast HTTP/1.1 load driver on raw asyncio streams.

It keeps one keep-alive connection per client, sends the same request over and over, and times
each one: to the first body byte (time to first token when streaming) and to the last. It parses
just enough HTTP (status line, content-length, chunked encoding) to know when a response ends, so
the driver costs far less CPU than the servers it measures; ``gateway_overhead.py`` shows that by
driving the simulator directly at a rate well above what the gateway reaches.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float, ttft: bool = False) -> float:
        data = sorted(self.ttfts if ttft else self.latencies)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k] * 1000

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.count,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 3),
            "p99_ms": round(self.pct(99), 3),
            "ttft_p50_ms": round(self.pct(50, ttft=True), 3),
            "ttft_p99_ms": round(self.pct(99, ttft=True), 3),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 3) if self.latencies else 0,
        }


def build_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    """Read one response; return its status and when its first body byte arrived."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    first: float | None = None
    if b"transfer-encoding: chunked" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if first is None:
                first = time.perf_counter()
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        idx = lower.find(b"content-length:")
        length = int(lower[idx + 15 : lower.find(b"\r\n", idx)]) if idx >= 0 else 0
        if length:
            await reader.readexactly(length)
        first = time.perf_counter()
    return status, first


async def _client(
    host: str, port: int, raw: bytes, stop_at: float, result: Result, warm_until: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(raw)
            try:
                status, first = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            done = time.perf_counter()
            if started < warm_until:
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200:
                result.errors += 1
                continue
            result.latencies.append(done - started)
            result.ttfts.append((first or done) - started)
    finally:
        writer.close()


async def run(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    clients: int = 1,
    seconds: float = 5.0,
    warmup: float = 1.0,
) -> Result:
    host, port, raw = build_request(url, body, headers or {})
    result = Result()
    begin = time.perf_counter()
    warm_until = begin + warmup
    stop_at = warm_until + seconds
    await asyncio.gather(
        *(_client(host, port, raw, stop_at, result, warm_until) for _ in range(clients))
    )
    result.elapsed = time.perf_counter() - warm_until
    return result
