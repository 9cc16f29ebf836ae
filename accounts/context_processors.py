"""What every signed-in page's header needs about organisations: the one acting for and the
others to switch to. Both are functions, so a page that does not show them (or a visitor who is
not signed in) runs no query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from accounts import orgs
from accounts.models import Membership, User
from accounts.roles import Perm, can


def organisations(request: HttpRequest) -> dict[str, Callable[[], Any]]:
    user = getattr(request, "user", None)
    if not isinstance(user, User):
        return {}

    def current() -> Membership:
        return orgs.current_membership(request)

    def others() -> list[Membership]:
        return orgs.memberships(user)

    def may() -> dict[str, bool]:
        role = orgs.current_membership(request).role
        return {perm.name.lower(): can(role, perm) for perm in Perm}

    return {"org_current": current, "org_memberships": others, "org_can": may}
