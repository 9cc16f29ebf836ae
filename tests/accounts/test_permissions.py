"""Every role against every page and endpoint, from one explicit table.

``RULES`` says, for each named URL of the project and each method it takes, which permission of
accounts/roles.py guards it (or that it is public). The URL resolver is walked: a URL with no
entry fails ``test_it_has_a_rule_for_every_url`` (so a new view cannot be added without deciding
who may use it). Then, for every role, each URL is requested as a member with that role: allowed
means anything but 403, denied means 403. Only the inference surfaces and the public usage API
(keys, not people: /openai/, /anthropic/, /v1/, health checks), the admin and the auth pages
(log-in, sign-up, password) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts import keys, members
from accounts.api import RolePermission
from accounts.models import Account, ApiKey, Invitation, Membership, User
from accounts.roles import Perm, Role, can
from tests import factories

pytestmark = pytest.mark.django_db

PUBLIC = "public"
Rule = Perm | str

# name -> {method: rule}. GET and POST are exercised (the methods each view takes).
RULES: dict[str, dict[str, Rule]] = {
    "landing": {"GET": PUBLIC},
    "catalog": {"GET": PUBLIC},
    "invitation": {"GET": PUBLIC, "POST": PUBLIC},
    # Anyone reads the plans; switching needs PLAN_CHANGE (checked inside the view).
    "plans": {"GET": PUBLIC, "POST": Perm.PLAN_CHANGE},
    "dashboard": {"GET": Perm.DASHBOARD},
    "activity": {"GET": Perm.USAGE_OWN},
    "activity_detail": {"GET": Perm.USAGE_OWN},
    "usage": {"GET": Perm.USAGE_OWN},
    "usage_export": {"GET": Perm.USAGE_OWN},
    "batches": {"GET": Perm.USAGE_OWN},
    "batch_file": {"GET": Perm.USAGE_OWN},
    "keys": {"GET": Perm.KEYS_OWN, "POST": Perm.KEYS_OWN},
    "key_rotate": {"POST": Perm.KEYS_OWN},
    "key_revoke": {"GET": Perm.KEYS_OWN, "POST": Perm.KEYS_OWN},
    "management_key_create": {"POST": Perm.MANAGEMENT_KEYS},
    "management_key_revoke": {"POST": Perm.MANAGEMENT_KEYS},
    "api_keys": {"GET": Perm.KEYS_OWN, "POST": Perm.KEYS_OWN},
    "api_key": {"GET": Perm.KEYS_OWN},
    "api_key_rotate": {"POST": Perm.KEYS_OWN},
    "api_key_revoke": {"POST": Perm.KEYS_OWN},
    "org_switch": {"POST": Perm.DASHBOARD},
    "org_create": {"GET": Perm.DASHBOARD, "POST": Perm.DASHBOARD},
    "org_members": {"GET": Perm.MEMBERS_VIEW},
    "org_invite": {"POST": Perm.MEMBERS_MANAGE},
    "org_member_role": {"POST": Perm.MEMBERS_MANAGE},
    "org_member_remove": {"POST": Perm.MEMBERS_MANAGE},
    "org_invitation_resend": {"POST": Perm.MEMBERS_MANAGE},
    "org_invitation_withdraw": {"POST": Perm.MEMBERS_MANAGE},
    "org_leave": {"POST": Perm.MEMBERS_VIEW},
    "org_settings": {"GET": Perm.ORG_SETTINGS, "POST": Perm.ORG_SETTINGS},
    "org_transfer": {"POST": Perm.ORG_TRANSFER},
    "org_delete": {"POST": Perm.ORG_DELETE},
    "billing:billing": {"GET": Perm.BILLING_VIEW},
    "billing:topup": {"POST": Perm.BILLING_TOPUP},
    "billing:subscribe": {"POST": Perm.PLAN_CHANGE},
    "billing:portal": {"POST": Perm.BILLING_TOPUP},
    "billing:success": {"GET": Perm.BILLING_VIEW},
    "billing:receipt": {"GET": Perm.BILLING_VIEW},
    # Stripe signs it; no person is involved.
    "billing:stripe_webhook": {"POST": PUBLIC},
    "audit": {"GET": Perm.AUDIT_VIEW},
    "audit_export": {"GET": Perm.AUDIT_VIEW},
    "org_sso": {"GET": Perm.ORG_SETTINGS, "POST": Perm.ORG_SETTINGS},
    "budgets": {"GET": Perm.BUDGETS, "POST": Perm.BUDGETS},
}

# Views that are public or check their permission inside (the rule above still says which).
SELF_CHECKED = {"landing", "catalog", "invitation", "plans", "billing:stripe_webhook"}

# Log-in, sign-up and password pages: for people who are not (yet) signed in.
AUTH_PAGES = {
    "signup",
    "verify_email",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    # Single sign-on: django-allauth's redirect to a provider and the provider's way back.
    "openid_connect_login",
    "openid_connect_callback",
}
# Called with keys, not by people in a browser: inference, files, batches, /v1/usage, health.
KEY_SURFACES = ("openai/", "anthropic/", "v1/", "^/*openai/", "^/*anthropic/", "^/*v1/")
HEALTH = {"healthz", "readyz"}


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    callback: Callable[..., Any]


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = "", namespace: str = ""
) -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(n for n in (namespace, pattern.namespace or "") if n)
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        else:
            name = ":".join(n for n in (namespace, pattern.name or "") if n)
            yield Route(name=name, path=prefix + str(pattern.pattern), callback=pattern.callback)


def _routes() -> list[Route]:
    """Every URL a person reaches in a browser: not the admin, the key surfaces or health."""
    found = []
    for route in _walk(get_resolver().url_patterns):
        if route.path.startswith("admin/") or route.path.startswith(KEY_SURFACES):
            continue
        if route.path in HEALTH or route.name in AUTH_PAGES:
            continue
        found.append(route)
    return found


ROUTES = {route.name: route for route in _routes()}


def test_it_has_a_rule_for_every_url() -> None:
    unnamed = [route.path for route in _routes() if not route.name]
    assert not unnamed, f"name these URLs and give them a rule in RULES: {unnamed}"
    missing = sorted(set(ROUTES) - set(RULES))
    assert not missing, (
        f"no permission rule for {missing}: add each to RULES in {__file__} with the Perm that "
        "guards it (or PUBLIC), and guard the view with accounts.orgs.requires"
    )
    stale = sorted(set(RULES) - set(ROUTES))
    assert not stale, f"RULES names URLs that no longer exist: {stale}"


def test_it_wraps_every_view_in_requires_or_lists_it_public() -> None:
    for name, route in ROUTES.items():
        perms = {rule for rule in RULES[name].values() if isinstance(rule, Perm)}
        if name in SELF_CHECKED:
            continue
        cls = getattr(route.callback, "cls", None)
        if cls is not None:  # a DRF APIView: RolePermission reads required_perms
            assert RolePermission in cls.permission_classes, f"{name}: add RolePermission"
            declared = set(getattr(cls, "required_perms", ()))
        else:
            declared = set(getattr(route.callback, "required_perms", ()))
        assert declared, f"{name} ({route.path}) is not wrapped in accounts.orgs.requires"
        assert declared == perms, f"{name} requires {declared}, the table says {perms}"


@dataclass
class World:
    account: Account
    member: Membership  # the person making the requests, with the role under test
    other: Membership  # a developer in the same organisation
    key: ApiKey  # made by the member
    invitation: Invitation


def _world(role: Role) -> World:
    owner = factories.UserFactory.create()
    account = factories.account(owner=owner)
    if role == Role.OWNER:
        member = Membership.objects.get(user=owner, account=account)
    else:
        member = Membership.objects.create(
            user=factories.UserFactory.create(), account=account, role=role.value
        )
    other = Membership.objects.create(
        user=factories.UserFactory.create(), account=account, role=Role.DEVELOPER.value
    )
    key = keys.issue(account=account, name="mine", created_by=member.user).key
    owner_membership = Membership.objects.get(user=owner, account=account)
    invitation = members.invite(
        account=account,
        email="invitee@example.com",
        role="viewer",
        by=owner_membership,
        base_url="http://testserver",
    )
    return World(account=account, member=member, other=other, key=key, invitation=invitation)


def _url(name: str, world: World) -> str:
    args: dict[str, dict[str, Any]] = {
        "activity_detail": {"request_id": "req_missing"},
        "batch_file": {"file_id": "file-missing"},
        "key_rotate": {"key_id": world.key.pk},
        "key_revoke": {"key_id": world.key.pk},
        "management_key_revoke": {"key_id": 999_999},
        "api_key": {"key_id": world.key.pk},
        "api_key_rotate": {"key_id": world.key.pk},
        "api_key_revoke": {"key_id": world.key.pk},
        "org_member_role": {"membership_id": world.other.pk},
        "org_member_remove": {"membership_id": world.other.pk},
        "org_invitation_resend": {"invitation_id": world.invitation.pk},
        "org_invitation_withdraw": {"invitation_id": world.invitation.pk},
        "invitation": {"token": "not-a-real-token"},
        "billing:receipt": {"entry_id": 999_999},
    }
    return reverse(name, kwargs=args.get(name))


CASES = [
    pytest.param(name, method, role, id=f"{name}-{method}-{role.value}")
    for name in sorted(RULES)
    for method in RULES[name]
    for role in Role
]


@pytest.mark.parametrize(("name", "method", "role"), CASES)
def test_it_lets_each_role_through_exactly_where_the_table_says(
    client: Client, name: str, method: str, role: Role
) -> None:
    world = _world(role)
    client.force_login(world.member.user)
    url = _url(name, world)
    response = client.get(url) if method == "GET" else client.post(url, {})
    rule = RULES[name][method]
    allowed = rule == PUBLIC or (isinstance(rule, Perm) and can(role.value, rule))
    if allowed:
        assert response.status_code != 403, f"{role} was refused {method} {url}"
    else:
        assert response.status_code == 403, (
            f"{role} got {response.status_code} for {method} {url}; {rule} should refuse it"
        )


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (name, method)
        for name in sorted(RULES)
        for method, rule in RULES[name].items()
        if rule != PUBLIC and not (name == "plans" and method == "GET")
    ],
)
def test_it_sends_strangers_to_log_in(client: Client, name: str, method: str) -> None:
    world = _world(Role.VIEWER)
    url = _url(name, world)
    response = client.get(url) if method == "GET" else client.post(url, {})
    if name.startswith("api_"):
        assert response.status_code == 401
    else:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_keeps_a_member_out_of_another_organisation(client: Client) -> None:
    world = _world(Role.ADMIN)
    stranger: User = factories.UserFactory.create()
    factories.account(owner=stranger)
    client.force_login(stranger)
    for name, method in (
        ("key_revoke", "POST"),
        ("api_key", "GET"),
        ("org_member_remove", "POST"),
        ("org_invitation_withdraw", "POST"),
    ):
        url = _url(name, world)
        response = client.get(url) if method == "GET" else client.post(url, {})
        assert response.status_code == 404, name
    world.key.refresh_from_db()
    assert world.key.revoked_at is None
    assert Membership.objects.filter(pk=world.other.pk).exists()
