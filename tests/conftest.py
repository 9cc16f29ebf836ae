"""Shared fixtures: real services when the environment names them, live servers over sockets,
and three personas (an owner, a teammate, a stranger)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests import factories


def pytest_configure(config: pytest.Config) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if os.environ.get("CI") == "true":
        _require_services()


def _require_services() -> None:
    """CI runs against the real PostgreSQL and Redis; missing either is a failure, not a skip."""
    import redis

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise pytest.UsageError("CI=true but DATABASE_URL does not point at PostgreSQL")
    if not settings.REDIS_URL:
        raise pytest.UsageError("CI=true but REDIS_URL is not set")
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise pytest.UsageError(
            f"CI=true but Redis at {settings.REDIS_URL} cannot be reached: {exc}"
        ) from exc
    import psycopg

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"],
            port=db["PORT"] or 5432,
            user=db["USER"],
            password=db["PASSWORD"],
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as exc:
        raise pytest.UsageError(f"CI=true but PostgreSQL cannot be reached: {exc}") from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on a loopback port, in a thread of the test process, so it
    shares the test database and settings. ``served``: exactly as ``manage.py serve`` serves the
    platform (``tokenfactory.server``: uvloop with eager tasks, httptools); otherwise uvicorn on
    a plain asyncio loop (the simulator)."""

    def __init__(self, app: Any, port: int | None = None, *, served: bool = False) -> None:
        import uvicorn

        from tokenfactory import server

        self.port = port or free_port()
        options: dict[str, Any] = (
            dict(server.OPTIONS)
            if served
            else {"loop": "asyncio", "http": "httptools", "lifespan": "off"}
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **options
        )
        self.server = uvicorn.Server(config)
        self.loop_factory = server.new_event_loop if served else asyncio.new_event_loop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            self.loop = runner.get_loop()
            runner.run(self.server.serve())

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the server's event loop (to look inside the running server)."""
        assert self.loop is not None, "the server has not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        from gateway.providers.base import close_http_client

        with contextlib.suppress(Exception):
            self.call(close_http_client())
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def simulator() -> Iterator[ServerThread]:
    from gateway.simulator.app import build_app

    server = ServerThread(build_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway_server() -> Iterator[ServerThread]:
    from tokenfactory.asgi import application

    server = ServerThread(application, served=True).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    from django.core.cache import cache

    from gateway import auth, catalog, metering

    metering.discard_local()
    auth.clear()
    catalog.clear()
    cache.clear()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter("tf:*"):
            client.delete(key)
    yield
    auth.clear()
    catalog.clear()


@pytest.fixture
def _metering_held() -> Iterator[list[bool]]:
    """Released after the database is emptied, when ``live`` took metering's buffer lock: the
    server thread's background flush must not write while the tables are emptied (SQLite's
    shared in-memory cache refuses the teardown's BEGIN IMMEDIATE: 'database table is locked')."""
    from gateway import metering

    held: list[bool] = []
    yield held
    if held:
        metering._local_lock.release()


@pytest.fixture
def live(
    _metering_held: list[bool],
    transactional_db: None,
    gateway_server: ServerThread,
    simulator: ServerThread,
) -> Iterator[dict[str, Any]]:
    """A running gateway with a small catalog routed to the simulator over a socket, and an
    account with a key: what most end-to-end tests start from."""
    from gateway import metering

    openai_up = factories.provider(base_url=f"{simulator.url}/v1", protocol="openai")
    anthropic_up = factories.provider(base_url=simulator.url, protocol="anthropic")
    factories.model("sim-gpt", routes=[(openai_up, "sim-gpt")], owned_by="OpenAI")
    factories.model(
        "sim-claude",
        routes=[(anthropic_up, "sim-claude")],
        owned_by="Anthropic",
        max_output_tokens=8192,
    )
    owner = factories.UserFactory.create(email="alice@example.com")
    acct = factories.account(owner=owner, plan_slug="enterprise")
    key, secret = factories.api_key(acct)
    yield {
        "url": gateway_server.url,
        "sim": simulator.url,
        "openai": openai_up,
        "anthropic": anthropic_up,
        "owner": owner,
        "account": acct,
        "key": key,
        "secret": secret,
    }
    # Waits for a flush in progress; the next one waits until the tables are emptied.
    metering._local_lock.acquire()
    _metering_held.append(True)
    metering._local.clear()


@pytest.fixture
def alice(db: None) -> Any:
    """The owner of an account on the Test plan."""
    user = factories.UserFactory.create(email="alice@example.com")
    factories.account(owner=user)
    return user


@pytest.fixture
def bob(db: None, alice: Any) -> Any:
    """Alice's teammate: a developer in her organisation."""
    from accounts.models import Membership

    user = factories.UserFactory.create(email="bob@example.com")
    Membership.objects.create(
        user=user, account=alice.accounts.get(), role=Membership.Role.DEVELOPER
    )
    return user


@pytest.fixture
def charlie(db: None) -> Any:
    """A stranger: has his own account and no access to Alice's."""
    user = factories.UserFactory.create(email="charlie@example.com")
    factories.account(owner=user)
    return user


@pytest.fixture(scope="session", autouse=True)
def _release_server_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The in-process servers' worker threads keep database connections open; end them so the
    test database can be dropped at the end of the session."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture
def key_announcements() -> Iterator[list[list[str]]]:
    """The key hashes of every accounts.signals.key_changed sent during the test, one list per
    announcement (sent after commit: capture on-commit callbacks where the test holds a
    transaction)."""
    from accounts.signals import key_changed

    sent: list[list[str]] = []

    def listen(sender: object, *, key_hashes: list[str], **kwargs: object) -> None:
        sent.append(sorted(key_hashes))

    key_changed.connect(listen)
    yield sent
    key_changed.disconnect(listen)
