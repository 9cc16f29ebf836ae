"""Single sign-on for organisations: claimed e-mail domains, their proof by DNS, just-in-time
membership, and "require single sign-on".

The OpenID Connect log-in itself is django-allauth's (accounts/sso_adapter.py plugs it in). What
this module decides:

- An organisation claims a domain (not a public mail domain) and proves it with a TXT record
  ``_tokenfactory-verification.<domain>`` holding the claim's ``proof``; or an operator marks it
  verified (admin action, ``manage.py verifydomain``). Many organisations may have a pending claim
  on a domain; only one may hold it verified.
- A person who signs in through a provider that marks their address verified, at a verified
  domain, joins that organisation once with the claim's default role.
- An organisation may require single sign-on: its members, except owners (so nobody locks the
  organisation out), may act for it only in a session that began with a single sign-on log-in.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import dns.exception
import dns.resolver
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils.timezone import now

from accounts import audit
from accounts.models import Account, AuditEvent, Membership, OrgDomain, SsoJoin, User

RECORD_PREFIX = "_tokenfactory-verification"
SESSION_KEY = "tf_sso"

# Mail domains anyone can get an address at: claiming one would let strangers join.
PUBLIC_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "hotmail.co.uk",
        "live.com",
        "msn.com",
        "yahoo.com",
        "yahoo.co.uk",
        "ymail.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
        "example.com",
        "example.org",
        "example.net",
    }
)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class DomainError(ValueError):
    """A claim that cannot be made or verified; the message says what to do."""


def normalise(domain: str) -> str:
    value = domain.strip().lower().lstrip("@").rstrip(".")
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise DomainError(f"{domain!r} is not a domain name: enter one like acme.com.") from exc
    if not _DOMAIN.match(value):
        raise DomainError(f"{domain!r} is not a domain name: enter one like acme.com.")
    return value


def record_name(claim: OrgDomain) -> str:
    """The DNS name whose TXT record proves the claim."""
    return f"{RECORD_PREFIX}.{claim.domain}"


def claim_domain(
    *,
    account: Account,
    domain: str,
    default_role: str = Membership.Role.DEVELOPER,
    request: HttpRequest | None = None,
) -> OrgDomain:
    """Claim ``domain`` for ``account``, pending proof."""
    name = normalise(domain)
    if name in PUBLIC_DOMAINS:
        raise DomainError(
            f"{name} is a public mail domain: anyone can have an address there. "
            "Claim your organisation's own domain."
        )
    if default_role not in Membership.Role.values or default_role == Membership.Role.OWNER:
        raise DomainError("Choose a default role below owner: admin, billing, developer or viewer.")
    if OrgDomain.objects.filter(domain=name, verified_at__isnull=False).exists():
        raise DomainError(
            f"{name} is already verified by another organisation. If it is yours, ask the "
            "operator of this gateway to look into it."
        )
    if OrgDomain.objects.filter(domain=name, account=account).exists():
        raise DomainError(f"{name} is already claimed by this organisation.")
    try:
        with transaction.atomic():
            claim = OrgDomain.objects.create(
                account=account,
                domain=name,
                default_role=default_role,
                proof=f"tf-verify-{secrets.token_urlsafe(24)}",
            )
    except IntegrityError as exc:
        raise DomainError(f"{name} is already claimed by this organisation.") from exc
    audit.record(
        action="org.settings_changed",
        account=account,
        request=request,
        target=claim,
        after={"domain": name, "change": "domain claimed", "default_role": default_role},
    )
    return claim


def set_default_role(*, claim: OrgDomain, role: str, request: HttpRequest | None = None) -> None:
    if role not in Membership.Role.values or role == Membership.Role.OWNER:
        raise DomainError("Choose a default role below owner: admin, billing, developer or viewer.")
    before = claim.default_role
    claim.default_role = role
    claim.save(update_fields=["default_role"])
    audit.record(
        action="org.settings_changed",
        account=claim.account_id,
        request=request,
        target=claim,
        before={"domain": claim.domain, "default_role": before},
        after={"domain": claim.domain, "default_role": role},
    )


def _nameserver(entry: str) -> tuple[str, int | None]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353`` as (address, port or None)."""
    if entry.startswith("["):
        address, _, port = entry[1:].partition("]")
        return address, int(port.lstrip(":")) if port else None
    if entry.count(":") == 1:
        address, _, port = entry.partition(":")
        return address, int(port)
    return entry, None


def txt_values(name: str) -> list[str]:
    """The TXT strings at ``name``, through DOMAIN_VERIFICATION_NAMESERVERS (or the system's
    resolvers). Raises DomainError when the look-up itself fails."""
    servers = [_nameserver(entry) for entry in settings.DOMAIN_VERIFICATION_NAMESERVERS]
    try:
        resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = [address for address, _ in servers]
            ports = {port for _, port in servers if port is not None}
            if ports:
                resolver.port = ports.pop()
        resolver.lifetime = 5.0
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DomainError(
            f"Could not look up {name} ({type(exc).__name__}). Try again in a few minutes, or "
            "ask the operator of this gateway to verify the domain."
        ) from exc
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def check_dns(*, claim: OrgDomain, request: HttpRequest | None = None) -> OrgDomain:
    """Verify the claim if its TXT record holds the proof; DomainError saying what is wrong
    otherwise."""
    if claim.is_verified:
        return claim
    name = record_name(claim)
    values = txt_values(name)
    if claim.proof not in [value.strip() for value in values]:
        found = f" (found: {', '.join(values)[:200]})" if values else ""
        raise DomainError(
            f"No TXT record at {name} holds {claim.proof}{found}. Add it at your DNS host, "
            "wait for it to appear, then check again."
        )
    return mark_verified(claim=claim, request=request, how="dns")


def mark_verified(
    *,
    claim: OrgDomain,
    request: HttpRequest | None = None,
    how: str = "operator",
    actor_label: str = "",
) -> OrgDomain:
    """Record the claim as proven (by DNS, or by an operator who checked it another way)."""
    try:
        with transaction.atomic():
            OrgDomain.objects.filter(pk=claim.pk, verified_at__isnull=True).update(
                verified_at=now()
            )
    except IntegrityError as exc:
        raise DomainError(
            f"{claim.domain} is already verified by another organisation; remove that claim first."
        ) from exc
    claim.refresh_from_db(fields=["verified_at"])
    audit.record(
        action="org.settings_changed",
        account=claim.account_id,
        request=request,
        actor_kind=AuditEvent.ActorKind.OPERATOR if how == "operator" else None,
        actor_label=actor_label,
        target=claim,
        after={"domain": claim.domain, "change": "domain verified", "by": how},
    )
    return claim


def remove_domain(*, claim: OrgDomain, request: HttpRequest | None = None) -> None:
    audit.record(
        action="org.settings_changed",
        account=claim.account_id,
        request=request,
        target=claim,
        before={"domain": claim.domain, "verified": claim.is_verified},
        after={"domain": claim.domain, "change": "domain removed"},
    )
    claim.delete()


def set_required(*, account: Account, required: bool, request: HttpRequest | None = None) -> None:
    before = account.sso_required
    if before == required:
        return
    account.sso_required = required
    account.save(update_fields=["sso_required"])
    audit.record(
        action="org.settings_changed",
        account=account,
        request=request,
        target=account,
        before={"sso_required": before},
        after={"sso_required": required},
    )


def join_by_domain(
    *, user: User, verified_emails: list[str], request: HttpRequest | None = None
) -> Membership | None:
    """Just-in-time membership: the membership in the organisation holding the verified domain of
    one of ``verified_emails`` (addresses the provider marked verified), made with the claim's
    default role the first time. None when no domain matches, or when the person joined this way
    before and was removed since."""
    domains = [email.rpartition("@")[2].lower() for email in verified_emails if "@" in email]
    claim = (
        OrgDomain.objects.select_related("account")
        .filter(domain__in=domains, verified_at__isnull=False, account__is_active=True)
        .order_by("created_at")
        .first()
    )
    if claim is None:
        return None
    existing = Membership.objects.filter(user=user, account=claim.account).first()
    if existing is not None:
        SsoJoin.objects.get_or_create(account=claim.account, user=user)
        return existing
    with transaction.atomic():
        _, first_time = SsoJoin.objects.get_or_create(account=claim.account, user=user)
        if not first_time:
            return None
        membership = Membership.objects.create(
            user=user, account=claim.account, role=claim.default_role
        )
    audit.record(
        action="member.joined",
        account=claim.account,
        request=request,
        user=user,
        target=membership,
        after={"role": membership.role, "via": "single sign-on", "domain": claim.domain},
    )
    return membership


def mark_session(request: HttpRequest, *, user: User, provider: str) -> None:
    """Remember in the session that this person signed in through ``provider``."""
    request.session[SESSION_KEY] = {"user": user.pk, "provider": provider}


def is_sso_session(request: HttpRequest) -> bool:
    marker: Any = request.session.get(SESSION_KEY)
    return isinstance(marker, dict) and marker.get("user") == request.user.pk


def refusal(request: HttpRequest, membership: Membership) -> str | None:
    """Why this request may not act for the membership's organisation (it requires single
    sign-on and the session began with a password), or None. Owners are exempt: they are the way
    back in if the provider is misconfigured or down."""
    if not membership.account.sso_required or membership.role == Membership.Role.OWNER:
        return None
    if is_sso_session(request):
        return None
    return (
        f"{membership.account.name} requires single sign-on. Log out, then log in with your "
        "organisation's identity provider."
    )
