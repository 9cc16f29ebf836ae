"""Everywhere a person types a secret or an address is throttled: log-ins (the dashboard's and
the admin's) by account and by client address, sign-ups and reset mails by client address, reset
mails by address; the reset page answers in the same time whether or not the address exists."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _mail_tasks_run_here(settings: Any) -> None:
    """Mail goes out from Celery tasks: run them in the test (CI otherwise has a broker)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


def log_in(client: Client, email: str, password: str, path: str = "/login/") -> Any:
    return client.post(path, {"username": email, "password": password})


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_wrong_passwords_lock_the_account_even_for_the_right_one(
    settings: Any, alice: User, path: str
) -> None:
    """Issue #16: 200 wrong passwords on /login/ (60 on /admin/login/), then the right one
    logged in."""
    if path.startswith("/admin/"):
        alice.is_staff = True
        alice.save(update_fields=["is_staff"])
    for n in range(settings.AXES_FAILURE_LIMIT):
        # Each guess from another address: the account itself is what gets locked.
        client = Client(REMOTE_ADDR=f"10.0.0.{n + 1}")
        status = log_in(client, "alice@example.com", f"guess {n}", path).status_code
        assert status == (429 if n == settings.AXES_FAILURE_LIMIT - 1 else 200)
    client = Client(REMOTE_ADDR="10.0.1.1")
    response = log_in(client, "ALICE@example.com", PASSWORD, path)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/dashboard/").status_code == 302


def test_wrong_passwords_from_one_address_lock_that_address(
    settings: Any, alice: User, charlie: User
) -> None:
    client = Client(REMOTE_ADDR="10.0.0.9")
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, f"nobody{n}@example.com", "guess")
    assert log_in(client, "charlie@example.com", PASSWORD).status_code == 429
    # Another address is not locked, and neither is the account.
    other = Client(REMOTE_ADDR="10.0.0.10")
    assert log_in(other, "charlie@example.com", PASSWORD).status_code == 302


def test_a_right_password_resets_the_count(settings: Any, alice: User) -> None:
    client = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "alice@example.com", "wrong")
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302
    client.post("/logout/")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "alice@example.com", "wrong")
    assert log_in(client, "alice@example.com", PASSWORD).status_code == 302


def test_reset_mails_to_one_address_are_limited(settings: Any, alice: User) -> None:
    """Issue #16: password-reset mails to one address without limit."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    for n in range(6):
        client = Client(REMOTE_ADDR=f"10.0.2.{n + 1}")
        response = client.post("/password/reset/", {"email": "Alice@example.com"})
        assert response.status_code == 302  # the same answer every time
    assert len(mail.outbox) == 3
    assert all(m.to == ["alice@example.com"] for m in mail.outbox)


def test_reset_requests_from_one_address_are_limited(settings: Any, alice: User) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client = Client(REMOTE_ADDR="10.0.3.1")
    statuses = [
        client.post("/password/reset/", {"email": f"p{n}@example.com"}).status_code
        for n in range(11)
    ]
    assert statuses == [302] * 10 + [429]
    assert (
        "Too many attempts" in client.post("/password/reset/", {"email": "x@y.z"}).content.decode()
    )


def test_behind_a_proxy_the_client_is_the_last_forwarded_hop(settings: Any, alice: User) -> None:
    settings.BEHIND_PROXY = True
    for n in range(settings.AXES_FAILURE_LIMIT):
        # The client forges the first hop each time; the proxy's appended hop stays the same.
        client = Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.7")
        log_in(client, f"nobody{n}@example.com", "guess")
    locked = Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.7")
    assert log_in(locked, "alice@example.com", PASSWORD).status_code == 429
    free = Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert log_in(free, "alice@example.com", PASSWORD).status_code == 302


def _reset_timings(client: Client, emails: list[str], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {email: [] for email in emails}
    for _ in range(rounds):
        for email in emails:  # interleaved, so drift hits both alike
            started = time.perf_counter()
            response = client.post("/password/reset/", {"email": email})
            times[email].append(time.perf_counter() - started)
            assert response.status_code == 302
    return {email: statistics.median(t) * 1000 for email, t in times.items()}


def test_the_reset_page_takes_as_long_for_an_unknown_address(settings: Any, alice: User) -> None:
    """Issue #16: 69.5 ms p50 for an existing address, 20.7 ms for an unknown one. The look-up
    and the mail are a Celery task now; with a broker (here Celery's in-memory one) the request
    only queues it, whatever the address."""
    from tokenfactory.celery import app

    settings.PASSWORD_RESET_RATE_PER_CLIENT = "10000/h"
    settings.PASSWORD_RESET_RATE_PER_EMAIL = "10000/h"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.update(broker_url="memory://")
    try:
        client = Client()
        _reset_timings(client, ["alice@example.com", "nobody@example.com"], 5)  # warm up
        p50 = _reset_timings(client, ["alice@example.com", "nobody@example.com"], 40)
    finally:
        app.conf.update(broker_url=settings.CELERY_BROKER_URL or None)
    known, unknown = p50["alice@example.com"], p50["nobody@example.com"]
    assert abs(known - unknown) < max(1.0, 0.25 * unknown), p50
    assert mail.outbox == []  # nothing was sent on the request path
