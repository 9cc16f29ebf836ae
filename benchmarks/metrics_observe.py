"""What Prometheus metrics add to one request: ``gateway.metrics.observe``, the one call a request
makes when it settles, timed in a loop.

    .venv/bin/python benchmarks/metrics_observe.py [-n 20000]

Times it twice, each in a fresh interpreter: values in memory (one worker), and the multiprocess
mode that ``manage.py serve --workers N`` uses (values in memory-mapped files under a throwaway
PROMETHEUS_MULTIPROC_DIR). The request is a streamed chat answer that was admitted: a count, a
latency and a time-to-first-token observation, and a limiter decision, over 8 models x 2
surfaces x 3 statuses (48 label sets). Prints the mean and p99 in microseconds per request.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import os, statistics, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenfactory.settings")
import django
django.setup()
from gateway import metrics
from gateway.catalog import ModelInfo, RouteInfo
from gateway.exchange import Exchange

def model(i):
    route = RouteInfo(route_id=i, provider_slug=f"provider-{{i % 3}}", protocol="openai",
        base_url="http://x", api_key="", upstream_model=f"m{{i}}", priority=0, weight=1,
        connect_timeout_s=1, first_byte_timeout_s=1, total_timeout_s=1)
    return ModelInfo(model_id=f"model-{{i}}", display_name="", owned_by="", kind="chat",
        tier="standard", supports_tools=False, supports_vision=False, supports_json=False,
        supports_thinking=False, context_window=0, max_output_tokens=0, input_price_micros=1,
        output_price_micros=1, cached_input_price_micros=None, unit="tokens",
        unit_price_micros=None, ultrafast=False, is_priced=True, created=0, routes=(route,))

class Admitted:  # stands in for a limits.Admission: observe only asks whether there is one
    pass

exchanges = []
for i in range(48):
    m = model(i % 8)
    ex = Exchange(surface=("openai", "anthropic")[i % 2], model=m, route=m.routes[0],
        stream=True, ttft_ms=120, status=(200, 429, 502)[i % 3])
    ex.admission = Admitted()
    exchanges.append(ex)
n = {n}
for ex in exchanges * 10:  # warm: every label set made once
    metrics.observe(ex)
samples = []
clock = time.perf_counter_ns
for i in range(n):
    ex = exchanges[i % 48]
    t0 = clock()
    metrics.observe(ex)
    samples.append(clock() - t0)
samples.sort()
mode = "multiprocess" if metrics.MULTIPROCESS else "in memory"
print(f"{{mode:>12}}: mean {{statistics.fmean(samples) / 1000:.1f}} us, "
      f"p50 {{samples[n // 2] / 1000:.1f}} us, p99 {{samples[n * 99 // 100] / 1000:.1f}} us")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000)
    args = parser.parse_args()
    code = MEASURE.format(root=str(ROOT), n=args.n)
    with tempfile.TemporaryDirectory(prefix="tf-metrics-bench-") as tmp:
        base = dict(os.environ, TF_VAR_DIR=tmp, LOG_LEVEL="ERROR")
        base["DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)
        subprocess.run([sys.executable, "-c", code], env=base, check=True)
        metrics_dir = Path(tmp) / "prometheus"
        metrics_dir.mkdir()
        multi = dict(base, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        subprocess.run([sys.executable, "-c", code], env=multi, check=True)


if __name__ == "__main__":
    main()
