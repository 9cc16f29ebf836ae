"""GET /metrics (Prometheus) after real requests through both SDKs: counts and histograms by
surface, model, provider and status, upstream errors and retries, limiter decisions, the metering
backlog; and who may read it (the token, or an internal address)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from tests import factories

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
_NAMES = re.compile(r"tokenfactory_[a-z_]+")


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the gateway's /metrics, by name and labels."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_it_counts_sdk_requests_by_surface_model_provider_and_status(live) -> None:
    url, secret = live["url"], live["secret"]
    oai = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=secret, max_retries=0)
    claude = anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=secret, max_retries=0)
    before = scrape(url)

    oai.chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    with claude.messages.stream(
        model="sim-claude", max_tokens=20, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        assert stream.get_final_message().usage.output_tokens > 0
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(
            model="no-such-model-x1", messages=[{"role": "user", "content": "hi"}]
        )
    after = scrape(url)

    gpt = {"surface": "openai", "model": "sim-gpt", "provider": "sim-openai", "status": "200"}
    claude_ok = {
        "surface": "anthropic",
        "model": "sim-claude",
        "provider": "sim-anthropic",
        "status": "200",
    }
    unknown = {"surface": "openai", "model": "unknown", "provider": "none", "status": "404"}
    assert delta(before, after, "tokenfactory_requests_total", **gpt) == 1
    assert delta(before, after, "tokenfactory_requests_total", **claude_ok) == 1
    assert delta(before, after, "tokenfactory_requests_total", **unknown) == 1
    for labels in (gpt, claude_ok):
        assert delta(before, after, "tokenfactory_request_duration_seconds_count", **labels) == 1
        assert delta(before, after, "tokenfactory_time_to_first_token_seconds_count", **labels) == 1
        assert delta(before, after, "tokenfactory_request_duration_seconds_sum", **labels) > 0
        inf = {"le": "+Inf", **labels}
        assert delta(before, after, "tokenfactory_request_duration_seconds_bucket", **inf) == 1
    admitted = {"decision": "admit", "reason": ""}
    assert delta(before, after, "tokenfactory_limiter_decisions_total", **admitted) == 2
    # A model id the catalog does not know never becomes a label.
    assert not any("no-such-model-x1" in str(key) for key in after)
    assert ("tokenfactory_metering_backlog_records", ()) in after


def test_it_counts_upstream_errors_retries_and_refusals(live, settings) -> None:
    settings.GATEWAY_MAX_ATTEMPTS = 3
    url = live["url"]
    factories.model("sim-down", routes=[(live["openai"], "sim-gpt+status=500")])
    limited_key, limited_secret = factories.api_key(live["account"], name="one a minute")
    limited_key.rpm_limit = 1
    limited_key.save(update_fields=["rpm_limit"])
    before = scrape(url)

    oai = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=live["secret"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as failed:
        oai.chat.completions.create(model="sim-down", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    limited = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=limited_secret, max_retries=0)
    limited.chat.completions.create(
        model="sim-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5
    )
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(
            model="sim-gpt", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    after = scrape(url)

    provider = live["openai"].slug
    failed_500 = {"provider": provider, "kind": "500"}
    assert delta(before, after, "tokenfactory_upstream_errors_total", **failed_500) == 3
    assert delta(before, after, "tokenfactory_upstream_retries_total", provider=provider) == 2
    down = {"surface": "openai", "model": "sim-down", "provider": provider, "status": "502"}
    assert delta(before, after, "tokenfactory_requests_total", **down) == 1
    refused = {"decision": "refuse", "reason": "rpm"}
    assert delta(before, after, "tokenfactory_limiter_decisions_total", **refused) == 1
    admitted = {"decision": "admit", "reason": ""}
    assert delta(before, after, "tokenfactory_limiter_decisions_total", **admitted) == 2


def test_it_demands_the_token_when_one_is_set(live, settings) -> None:
    settings.METRICS_TOKEN = "metrics-secret-1"
    url = f"{live['url']}/metrics"
    bare = httpx.get(url)
    assert bare.status_code == 401
    assert bare.headers["www-authenticate"] == "Bearer"
    assert "tokenfactory_requests" not in bare.text
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer metrics-secret-1"}).status_code == 200


def test_without_a_token_it_serves_internal_addresses_only(live, settings) -> None:
    settings.METRICS_TOKEN = ""
    settings.BEHIND_PROXY = True
    url = f"{live['url']}/metrics"
    assert httpx.get(url).status_code == 200  # loopback
    outside = httpx.get(url, headers={"x-forwarded-for": "10.0.0.1, 203.0.113.9"})
    assert outside.status_code == 403
    assert "tokenfactory_requests" not in outside.text
    inside = httpx.get(url, headers={"x-forwarded-for": "203.0.113.9, 10.20.30.40"})
    assert inside.status_code == 200
    assert httpx.post(url).status_code == 405


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("192.168.1.1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        (None, True),  # a Unix socket
        ("203.0.113.9", False),
        ("8.8.8.8", False),
        ("2001:4860::8888", False),
        ("not-an-address", False),
    ],
)
def test_internal_addresses(address: str | None, internal: bool) -> None:
    assert metrics.is_internal(address) is internal


def test_the_grafana_dashboard_asks_only_for_metrics_the_gateway_serves(live) -> None:
    dashboard = orjson.loads((ROOT / "docs" / "grafana-dashboard.json").read_bytes())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {name for expr in exprs for name in _NAMES.findall(expr)}
    asked = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}
    response = httpx.get(f"{live['url']}/metrics")
    served = {family.name for family in text_string_to_metric_families(response.text)}
    assert len(asked) == 7
    assert asked <= served, asked - served
