"""Bad input on both surfaces: fuzzed bodies, odd credentials and path tricks always get a 4xx in
the caller's envelope with a request id, and never cost anything."""

from __future__ import annotations

import copy
import http.client
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from accounts.models import Account
from billing import ledger
from gateway import metering
from gateway.models import UsageRecord
from tests import factories

pytestmark = pytest.mark.e2e

OPENAI, ANTHROPIC = "openai", "anthropic"
TOPUP_MICROS = 5_000_000
FIVE_MB = "a" * (5 * 1024 * 1024)
# Values that are wrong for every field the gateway itself must check.
WRONG: list[Any] = [
    0,
    -1,
    -(10**30),
    10**30,
    1.5e308,
    "",
    [],
    [1, "a", None],
    {},
    {"nested": {"deeper": [None]}},
]
DEEP = b"[" * 10_000 + b"]" * 10_000


def chat_openai() -> dict[str, Any]:
    return {"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def chat_anthropic() -> dict[str, Any]:
    return {"model": "sim-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def embeddings() -> dict[str, Any]:
    return {"model": "sim-embed", "input": "hello"}


def message_batch() -> dict[str, Any]:
    return {"requests": [{"custom_id": "a", "params": chat_anthropic()}]}


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _dumps(body: Any) -> bytes:
    # The standard library's encoder: orjson refuses integers past 64 bits, which we want to send.
    return json.dumps(body).encode()


def _drop(body: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return out


def fuzzed(
    base: dict[str, Any],
    fields: dict[tuple[Any, ...], list[Any]],
    required: list[tuple[Any, ...]],
    seed: int,
) -> Iterator[bytes]:
    """Every way ``base`` can be broken that a gateway must refuse: each checked field set to
    every wrong value (and ``extra`` ones of its own), required fields removed, and whole-body
    damage (truncation, non-objects, bad UTF-8, duplicate keys, deep nesting, huge strings)."""
    rng = random.Random(seed)
    for path, extra in fields.items():
        for value in [*WRONG, *extra]:
            yield _dumps(_set(base, path, value))
    for path in required:
        yield _dumps(_drop(base, path))
    raw = _dumps(base)
    for cut in sorted(rng.sample(range(1, len(raw) - 1), 8)):
        yield raw[:cut]
    yield from (b"", b"   ", b"null", b"[]", b"[{}]", b'"text"', b"42", b"true", b"{")
    yield raw[:-1] + b',"x": "\xff\xfe\xfd"}'
    yield b'{"model": "\xc3\x28"}'
    # Duplicate keys: the last one wins in every parser we know, and here it is wrong.
    first = next(iter(fields))[0].encode()
    yield raw[:-1] + b',"' + first + b'": 7}'
    yield raw[:-1] + b',"' + first + b'": "no-such-value"}'
    yield b'{"model": ' + DEEP + b"}"
    yield b'{"messages": ' + DEEP + b', "model": "sim-gpt", "requests": ' + DEEP + b"}"
    yield _dumps(_set(base, next(iter(fields)), FIVE_MB))
    for _ in range(20):
        # Random byte flips of a valid body: most break the JSON, the rest a field's type.
        damaged = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.choice(b'{}[]":,\\\x00\xff')
        try:
            decoded = orjson.loads(bytes(damaged))
        except orjson.JSONDecodeError:
            yield bytes(damaged)
        else:
            if decoded != base:
                continue  # a flip that left a valid body could legitimately be served


def assert_refused(response: httpx.Response, surface: str, sent: bytes | str = b"") -> None:
    """A 4xx in ``surface``'s envelope, with a request id."""
    context = (response.request.method, response.request.url.path, sent[:200])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300], context)
    assert response.headers.get("x-request-id", "").startswith("req_"), context
    body = response.json()
    if surface == OPENAI:
        error = body["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and error["type"]
    else:
        assert body["type"] == "error", body
        assert isinstance(body["error"]["type"], str) and body["error"]["type"]
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert response.headers.get("request-id") == response.headers["x-request-id"]


@pytest.fixture
def env(live: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The live gateway with a funded account; afterwards, nothing may have been charged."""
    factories.model(
        "sim-embed",
        routes=[(live["openai"], "sim-embed")],
        kind="embedding",
        output_price_micros=0,
    )
    ledger.credit(account=live["account"], amount_micros=TOPUP_MICROS, idempotency_key="bad-in")
    headers = {"authorization": f"Bearer {live['secret']}", "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=live["url"], headers=headers, timeout=30) as client:
        yield {**live, "client": client}
    metering.drain()
    assert not UsageRecord.objects.filter(cost_micros__gt=0).exists()
    assert not UsageRecord.objects.filter(billed_micros__gt=0).exists()
    assert Account.objects.get(pk=live["account"].pk).balance_micros == TOPUP_MICROS


CHAT_FIELDS: dict[tuple[Any, ...], list[Any]] = {
    ("model",): [None, True, "no-such-model", "sim-embed", "../../etc/passwd", "\u0000\ufffd"],
    ("messages",): [None, "hi", [None], ["hi"], [[]], [{"content": "no role"}]],
    ("messages", 0, "role"): [None, "x", "robot"],
    ("stream",): ["true", "x", 1],
    ("max_tokens",): [True, -5, 1.5, "5", "x"],
    ("n",): [0, -1, 129, 2.5, "2", True],
}


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/v1/chat/completions"])
def test_it_refuses_fuzzed_openai_chat_bodies_in_the_openai_envelope(env, path):
    for body in fuzzed(chat_openai(), CHAT_FIELDS, [("model",), ("messages",)], 1):
        assert_refused(env["client"].post(path, content=body), OPENAI, body)


@pytest.mark.parametrize("path", ["/anthropic/v1/messages", "/v1/messages"])
def test_it_refuses_fuzzed_anthropic_message_bodies_in_the_anthropic_envelope(env, path):
    fields = dict(CHAT_FIELDS)
    del fields[("n",)]  # OpenAI's field; the Messages API has none
    fields[("max_tokens",)] = [None, -5, 1.5, "5"]
    fields[("model",)] = [None, "no-such-model", "sim-embed"]
    required = [("model",), ("messages",), ("max_tokens",)]
    for body in fuzzed(chat_anthropic(), fields, required, 2):
        assert_refused(env["client"].post(path, content=body), ANTHROPIC, body)


def test_it_refuses_fuzzed_embeddings_bodies(env):
    fields: dict[tuple[Any, ...], list[Any]] = {
        ("model",): [None, "no-such-model", "sim-gpt"],
        ("input",): [None, [None], [[]], [["a"]], [[-1]], [{"a": 1}]],
    }
    for body in fuzzed(embeddings(), fields, [("model",), ("input",)], 3):
        assert_refused(env["client"].post("/openai/v1/embeddings", content=body), OPENAI, body)


def test_it_refuses_fuzzed_message_batches(env):
    fields: dict[tuple[Any, ...], list[Any]] = {
        ("requests",): [None, [None], [[]], [{"params": {}}]],
        ("requests", 0, "custom_id"): [None],
    }
    for body in fuzzed(message_batch(), fields, [("requests",)], 4):
        response = env["client"].post("/anthropic/v1/messages/batches", content=body)
        assert_refused(response, ANTHROPIC, body)


def test_it_refuses_bad_file_uploads(env):
    client = env["client"]
    bad_uploads: list[dict[str, Any]] = [
        {"content": b"{}"},
        {"content": b"not multipart", "headers": {"content-type": "multipart/form-data"}},
        {"content": b"x", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
        {"files": {"other": ("a.jsonl", b"{}")}, "data": {"purpose": "batch"}},
        {"files": {"file": ("a.jsonl", b"")}, "data": {"purpose": "batch"}},
        {"files": {"file": ("a.jsonl", b"\xff\xfe\x00")}, "data": {"purpose": "batch"}},
        {"files": {"file": ("a.jsonl", b'{"custom_id": 1}\n')}, "data": {"purpose": "nope"}},
        {"files": {"file": ("a.jsonl", b"[[[[")}, "data": {}},
    ]
    for upload in bad_uploads:
        assert_refused(client.post("/openai/v1/files", **upload), OPENAI, repr(upload))
    for limit in ("-1", "0", "abc", "10000000000000000000000", "1e3"):
        assert_refused(client.get("/openai/v1/files", params={"limit": limit}), OPENAI)
    assert_refused(client.get("/openai/v1/files/file-nope"), OPENAI)
    assert_refused(client.get("/openai/v1/files/%00/content"), OPENAI)


@pytest.mark.parametrize("path", ["/v1/usage", "/openai/v1/usage", "/anthropic/v1/usage"])
def test_it_refuses_bad_usage_queries(env, path):
    surface = ANTHROPIC if path.startswith("/anthropic/") else OPENAI
    bad: list[dict[str, str]] = [
        {"period": "fortnight"},
        {"period": ""},
        {"start": "yesterday"},
        {"start": "2024-13-45"},
        {"start": "9" * 40},
        {"start": "2024-02-01", "end": "2024-01-01"},
        {"surface": "both"},
        {"group_by": "planet"},
        {"group_by": "model,planet"},
        {"key": "-1"},
        {"key": "99999999999999999999999999"},
        {"key": "\u043a\u043b\u044e\u0447"},
    ]
    for params in bad:
        assert_refused(env["client"].get(path, params=params), surface, repr(params))
    assert_refused(env["client"].post(path, json={}), surface)
    assert_refused(env["client"].get(path, headers={"authorization": "Bearer tf-nope"}), surface)


def test_it_refuses_bodies_over_the_configured_limit(env, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1024 * 1024
    client = env["client"]
    huge = _dumps(_set(chat_openai(), ("messages", 0, "content"), FIVE_MB))
    assert client.post("/openai/v1/chat/completions", content=huge).status_code == 413
    for path, surface in (
        ("/openai/v1/chat/completions", OPENAI),
        ("/anthropic/v1/messages", ANTHROPIC),
        ("/openai/v1/embeddings", OPENAI),
        ("/anthropic/v1/messages/batches", ANTHROPIC),
    ):
        assert_refused(client.post(path, content=huge), surface)

        # No content-length: a chunked body is counted as it is read.
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(huge), 65536):
                yield huge[start : start + 65536]

        assert_refused(client.post(path, content=chunks()), surface)


def test_it_refuses_odd_credentials(env):
    url, secret = env["url"], env["secret"]
    targets = [
        ("/openai/v1/chat/completions", OPENAI, chat_openai()),
        ("/anthropic/v1/messages", ANTHROPIC, chat_anthropic()),
        ("/openai/v1/embeddings", OPENAI, embeddings()),
        ("/anthropic/v1/messages/batches", ANTHROPIC, message_batch()),
        ("/openai/v1/completions", OPENAI, {"model": "sim-gpt", "prompt": "hi"}),
    ]
    odd: list[dict[str, str | bytes]] = [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": f"Basic {secret}"},
        {"authorization": f"Token {secret}"},
        {"authorization": secret},
        {"authorization": f"Bearer  {secret}x"},
        {"authorization": "Bearer tf-" + "a" * 16_000},
        {"x-api-key": "tf-" + "b" * 16_000},
        {"authorization": "Bearer tf-\u043a\u043b\u044e\u0447".encode()},
        {"x-api-key": "tf-\u00e9\u00e8".encode("latin-1")},
        {"x-api-key": "\u2603".encode()},
        # Both sent and disagreeing: the bearer token is the one that counts.
        {"authorization": "Bearer tf-wrong", "x-api-key": secret},
    ]
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, surface, body in targets:
            for headers in odd:
                response = client.post(path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers, response.text[:200])
                assert_refused(response, surface)
            # A right bearer with a wrong x-api-key authenticates (the body is then refused).
            response = client.post(
                path,
                json={"model": 1},
                headers={"authorization": f"Bearer {secret}", "x-api-key": "x"},
            )
            assert response.status_code == 400
            assert_refused(response, surface)
        usage = client.get("/v1/usage", headers={"authorization": f"Basic {secret}"})
        assert_refused(usage, OPENAI)


def _raw(url: str, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """Send the path byte for byte (httpx would normalise dot segments away)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        raw = conn.getresponse()
        request = httpx.Request(method, url + path)
        return httpx.Response(
            raw.status, headers=raw.getheaders(), content=raw.read(), request=request
        )
    finally:
        conn.close()


def test_it_answers_path_tricks_and_wrong_methods_in_the_surfaces_envelope(env):
    # No anthropic-version header: on /v1/ it would choose the Anthropic envelope everywhere.
    headers = {"authorization": f"Bearer {env['secret']}", "content-type": "application/json"}
    body = _dumps(chat_openai())
    cases = [
        ("POST", "/openai/v1/../admin/", OPENAI),
        ("POST", "//openai/v1/chat/completions", OPENAI),
        ("POST", "/openai/v1/%2e%2e/%2e%2e/admin/", OPENAI),
        ("GET", "/openai/v1/..%2f..%2fadmin/", OPENAI),
        ("POST", "/openai/v1/chat/completions/", OPENAI),
        ("POST", "/openai/v1/chat/completions//", OPENAI),
        ("POST", "/openai/v1/chat//completions", OPENAI),
        ("POST", "/openai/v1/chat/completion", OPENAI),
        ("POST", "/openai/v2/chat/completions", OPENAI),
        ("POST", "/openai/", OPENAI),
        ("GET", "/openai/v1/nope", OPENAI),
        ("POST", "/anthropic/v1/../../admin/", ANTHROPIC),
        ("POST", "/anthropic/v1/messages/", ANTHROPIC),
        ("POST", "/anthropic/v1/message", ANTHROPIC),
        ("GET", "/anthropic/v1/nope", ANTHROPIC),
        ("POST", "/v1/chat/completions/", OPENAI),
        ("POST", "/v1/nope", OPENAI),
        ("GET", "/v1/%2e%2e/admin/", OPENAI),
        ("POST", "/v1/messages/", ANTHROPIC),
        ("GET", "/openai/v1/chat/completions", OPENAI),
        ("PUT", "/openai/v1/chat/completions", OPENAI),
        ("DELETE", "/v1/chat/completions", OPENAI),
        ("GET", "/anthropic/v1/messages", ANTHROPIC),
        ("PATCH", "/v1/messages", ANTHROPIC),
        ("GET", "/openai/v1/embeddings", OPENAI),
        ("PUT", "/openai/v1/files", OPENAI),
        ("PUT", "/anthropic/v1/messages/batches", ANTHROPIC),
        ("GET", "/openai/v1/completions", OPENAI),
        ("GET", "/v1/audio/translations", OPENAI),
        ("PUT", "/openai/v1/images/edits", OPENAI),
        ("GET", "/openai/v1/images/variations", OPENAI),
        ("PUT", "/anthropic/v1/files", ANTHROPIC),
        ("POST", "/anthropic/v1/files/file_011nope", ANTHROPIC),
        ("GET", "/anthropic/v1/files/file_011nope", ANTHROPIC),
        ("POST", "/openai/v1/models", OPENAI),
        ("DELETE", "/anthropic/v1/models", ANTHROPIC),
        ("DELETE", "/v1/usage", OPENAI),
        ("GET", "/openai/v1/models/no-such-model", OPENAI),
        ("GET", "/anthropic/v1/models/no-such-model", ANTHROPIC),
    ]
    for method, path, surface in cases:
        response = _raw(env["url"], method, path, headers, body)
        try:
            assert_refused(response, surface)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from exc


def _nested(depth: int) -> Any:
    node: Any = "hi"
    for n in range(depth):
        node = [node] if n % 2 else {"k": node}
    return node


def test_it_refuses_bodies_too_deep_to_forward_and_headers_it_cannot_forward(env, caplog):
    """JSON nested deeper than an upstream body can be encoded, and non-ASCII forwarded headers:
    a 400 in the surface's envelope before admission, so no usage record and nothing held."""
    client = env["client"]
    targets = [
        ("/openai/v1/chat/completions", OPENAI, chat_openai(), ("messages", 0, "content")),
        ("/v1/chat/completions", OPENAI, chat_openai(), ("metadata",)),
        ("/anthropic/v1/messages", ANTHROPIC, chat_anthropic(), ("messages", 0, "content")),
        ("/v1/messages", ANTHROPIC, chat_anthropic(), ("metadata",)),
        ("/openai/v1/embeddings", OPENAI, embeddings(), ("extra",)),
        ("/openai/v1/responses", OPENAI, {"model": "sim-gpt", "input": "hi"}, ("metadata",)),
    ]
    for path, surface, base, where in targets:
        for depth in (256, 300, 1000):
            body = _dumps(_set(base, where, _nested(depth)))
            response = client.post(path, content=body)
            assert response.status_code == 400, (path, depth, response.text[:300])
            assert_refused(response, surface, body)
            assert "nested" in response.text
    for name in ("anthropic-version", "anthropic-beta"):
        for value in ("2023-06-01\u00e9".encode("latin-1"), "\u2603".encode()):
            for path, surface, body in (
                ("/anthropic/v1/messages", ANTHROPIC, chat_anthropic()),
                ("/openai/v1/chat/completions", OPENAI, chat_openai()),
            ):
                response = client.post(path, json=body, headers={name: value})
                assert response.status_code == 400, (name, value, response.text[:300])
                assert_refused(response, surface)
                assert name in response.text
    # Refused before admission: no model resolved, nothing reserved, nothing failed.
    metering.drain()
    assert not UsageRecord.objects.exclude(status=400).exists()
    assert not UsageRecord.objects.exclude(model="").exists()
    assert not any(r.levelname == "ERROR" for r in caplog.records)


def test_json_nested_as_deep_as_the_limit_is_still_served(live):
    headers = {"authorization": f"Bearer {live['secret']}"}
    ledger.credit(account=live["account"], amount_micros=TOPUP_MICROS, idempotency_key="deep")
    body = _set(chat_openai(), ("metadata",), _nested(190))
    with httpx.Client(base_url=live["url"], headers=headers, timeout=30) as client:
        response = client.post("/openai/v1/chat/completions", content=_dumps(body))
    assert response.status_code == 200, response.text[:300]
