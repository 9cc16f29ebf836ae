"""Throttles on everything a person types a secret or an address into: log-ins (django-axes,
configured in settings: AXES_*), sign-ups and password-reset mails (django-ratelimit, over the
shared cache). The client is identified the same way everywhere: ``client_address``."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import is_ratelimited


def client_address(request: HttpRequest) -> str | None:
    """The caller's IP: the socket's peer, or behind a proxy (BEHIND_PROXY) the address the proxy
    appended to X-Forwarded-For (earlier entries are the client's to forge). None when there is
    no valid one (a request made in-process)."""
    candidates = []
    if settings.BEHIND_PROXY:
        forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        candidates += hops[-1:]
    candidates.append(str(request.META.get("REMOTE_ADDR") or ""))
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def client_key(group: str, request: HttpRequest) -> str:
    """``client_address`` as django-ratelimit calls a key."""
    return client_address(request) or "unknown"


def reset_client_rate(group: str, request: HttpRequest) -> str:
    """Read when used, so the setting can change without re-importing the URL map."""
    return str(settings.PASSWORD_RESET_RATE_PER_CLIENT)


def signup_client_rate(group: str, request: HttpRequest) -> str:
    return str(settings.SIGNUP_RATE_PER_CLIENT)


def login_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> str:
    """The account a log-in attempt is for, as stored: e-mail addresses are lower-case."""
    value = (credentials or {}).get("username") or request.POST.get("username", "")
    return str(value).strip().lower()


def email_key(group: str, request: HttpRequest) -> str:
    return str(request.POST.get("email", "")).strip().lower()


def reset_mail_allowed(request: HttpRequest) -> bool:
    """Whether another reset mail may go to the address in ``request`` this period (counted)."""
    return not is_ratelimited(
        request,
        group="password-reset-email",
        key=email_key,
        rate=settings.PASSWORD_RESET_RATE_PER_EMAIL,
        method="POST",
        increment=True,
    )


def too_many(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The page for a throttled sign-up or reset (RATELIMIT_VIEW)."""
    return render(request, "registration/throttled.html", status=429)
