"""Stripe on loopback for tests: localstripe (a subprocess) serves customers, plans and
subscriptions; localstripe answers 404 to Checkout and customer-portal sessions, so a small fake
in front of it serves those two endpoints, records what it was sent, and forwards everything else
to localstripe. Webhooks are signed with the real stripe library's scheme."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe

SECRET_KEY = "sk_test_tokenfactory_12345"
PUBLISHABLE_KEY = "pk_test_tokenfactory_12345"
WEBHOOK_SECRET = "whsec_tokenfactory_test_secret"
_ids = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeStripe:
    """Serves /v1/checkout/sessions and /v1/billing_portal/sessions; proxies the rest."""

    upstream: str
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = self.port or _free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        self.requests.clear()
        self.sessions.clear()

    def sent(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path and r.method == "POST"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                self._reply(status, json.dumps(payload).encode(), "application/json")

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
                fake.requests.append(
                    Recorded(
                        self.command, path, form, {k.lower(): v for k, v in self.headers.items()}
                    )
                )
                if self.command == "POST" and path == "/v1/checkout/sessions":
                    return self._json(200, fake._checkout_session(form))
                if self.command == "POST" and path == "/v1/billing_portal/sessions":
                    return self._json(200, fake._portal_session(form))
                if self.command == "GET" and path.startswith("/pay/"):
                    session = fake.sessions.get(path.removeprefix("/pay/"), {})
                    page = (
                        "<!doctype html><title>Fake Stripe Checkout</title>"
                        "<h1>Fake Stripe Checkout</h1>"
                        f"<p id='amount'>{session.get('amount_total')}</p>"
                    )
                    return self._reply(200, page.encode(), "text/html")
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                request = urllib.request.Request(
                    fake.upstream + self.path,
                    data=body or None,
                    method=self.command,
                    headers=headers,
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        status, payload = answer.status, answer.read()
                        content_type = answer.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                    content_type = exc.headers.get("Content-Type", "application/json")
                self._reply(status, payload, content_type)

            do_GET = _handle
            do_POST = _handle
            do_DELETE = _handle

        return Handler

    def _checkout_session(self, form: dict[str, str]) -> dict[str, Any]:
        session_id = f"cs_test_{next(_ids):04d}{secrets.token_hex(6)}"
        mode = form.get("mode", "payment")
        amount = form.get("line_items[0][price_data][unit_amount]")
        metadata = {
            key[len("metadata[") : -1]: value
            for key, value in form.items()
            if key.startswith("metadata[")
        }
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "currency": "usd",
            "amount_total": int(amount) if amount else None,
            "customer": form.get("customer"),
            "client_reference_id": form.get("client_reference_id"),
            "metadata": metadata,
            "payment_intent": None,
            "subscription": None,
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "url": f"{self.url}/pay/{session_id}",
            "created": int(time.time()),
            "livemode": False,
        }
        self.sessions[session_id] = session
        return session

    def _portal_session(self, form: dict[str, str]) -> dict[str, Any]:
        session_id = f"bps_test_{next(_ids):04d}{secrets.token_hex(6)}"
        return {
            "id": session_id,
            "object": "billing_portal.session",
            "customer": form.get("customer"),
            "return_url": form.get("return_url"),
            "url": f"{self.url}/portal/{session_id}",
            "created": int(time.time()),
            "livemode": False,
        }

    def completed(self, session_id: str, **changes: Any) -> dict[str, Any]:
        """The session as Stripe shows it once the customer has paid."""
        session = dict(self.sessions[session_id])
        session.update(
            status="complete",
            payment_status="paid",
            payment_intent=f"pi_test_{secrets.token_hex(8)}",
        )
        session.update(changes)
        return session


# --- localstripe --------------------------------------------------------------------------------


class LocalStripe:
    def __init__(self) -> None:
        binary = Path(sys.executable).parent / "localstripe"
        if not binary.exists():
            raise FileNotFoundError(binary)
        self.port = _free_port()
        self.process = subprocess.Popen(
            [str(binary), "--port", str(self.port), "--from-scratch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session", name="stripe_servers")
def _stripe_servers_fixture() -> Iterator[FakeStripe]:
    try:
        local = LocalStripe()
    except (FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"localstripe is not available: {exc}")
    fake = FakeStripe(upstream=local.url).start()
    yield fake
    fake.stop()
    local.stop()


@pytest.fixture(name="stripe_on")
def _stripe_on_fixture(stripe_servers: FakeStripe, settings: Any) -> FakeStripe:
    """Billing switched on, with the Stripe API on loopback."""
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_servers.url
    stripe_servers.reset()
    return stripe_servers


def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.url})


# --- webhooks -----------------------------------------------------------------------------------


def event(
    event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str = ""
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{secrets.token_hex(10)}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def signed(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send, made by the stripe library itself."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
