"""What each role in an organisation may do: the one permission table.

Every dashboard view, form handler, DRF endpoint and management-API endpoint asks ``can(role,
permission)`` (through ``accounts.orgs.requires``), so hiding a button in a template is never the
only guard. docs/organisations.md shows this table to people; tests/accounts/test_permissions.py
walks every URL of the project against every role and fails when a view has no rule.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    BILLING = "billing"
    DEVELOPER = "developer"
    VIEWER = "viewer"

    @property
    def label(self) -> str:
        return self.value.capitalize()


class Perm(StrEnum):
    ORG_DELETE = "org.delete"  # delete the organisation
    ORG_TRANSFER = "org.transfer"  # make someone else the owner, promote or demote owners
    ORG_SETTINGS = "org.settings"  # rename; single sign-on, e-mail domains
    MEMBERS_MANAGE = "members.manage"  # invite, change roles (below owner), remove
    MEMBERS_VIEW = "members.view"  # see who is in the organisation
    KEYS_ALL = "keys.all"  # see and manage every key of the organisation
    KEYS_OWN = "keys.own"  # create keys and manage the ones you made
    MANAGEMENT_KEYS = "keys.management"  # tf-mgmt- keys for scripts
    PLAN_CHANGE = "plan.change"
    BILLING_VIEW = "billing.view"  # balance, ledger, receipts
    BILLING_TOPUP = "billing.topup"
    BUDGETS = "budgets.manage"  # monthly spend caps per member and per key
    USAGE_ALL = "usage.all"  # everyone's usage, exports
    USAGE_OWN = "usage.own"  # the usage of the keys you made
    AUDIT_VIEW = "audit.view"
    DASHBOARD = "dashboard"  # the home page, the model catalog


_ALL = frozenset(Role)
PERMISSIONS: dict[Perm, frozenset[Role]] = {
    Perm.ORG_DELETE: frozenset({Role.OWNER}),
    Perm.ORG_TRANSFER: frozenset({Role.OWNER}),
    Perm.ORG_SETTINGS: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.MEMBERS_MANAGE: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.MEMBERS_VIEW: _ALL,
    Perm.KEYS_ALL: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.KEYS_OWN: frozenset({Role.OWNER, Role.ADMIN, Role.DEVELOPER}),
    Perm.MANAGEMENT_KEYS: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.PLAN_CHANGE: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.BILLING_VIEW: frozenset({Role.OWNER, Role.ADMIN, Role.BILLING}),
    Perm.BILLING_TOPUP: frozenset({Role.OWNER, Role.ADMIN, Role.BILLING}),
    Perm.BUDGETS: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.USAGE_ALL: frozenset({Role.OWNER, Role.ADMIN, Role.BILLING, Role.VIEWER}),
    Perm.USAGE_OWN: _ALL,
    Perm.AUDIT_VIEW: frozenset({Role.OWNER, Role.ADMIN}),
    Perm.DASHBOARD: _ALL,
}
assert set(PERMISSIONS) == set(Perm), "every permission has a row"

# What each permission lets a person do, in the words docs/organisations.md shows.
DESCRIPTIONS: dict[Perm, str] = {
    Perm.ORG_DELETE: "Delete the organisation",
    Perm.ORG_TRANSFER: "Transfer ownership; make or unmake owners",
    Perm.ORG_SETTINGS: "Rename the organisation; single sign-on and e-mail domains",
    Perm.MEMBERS_MANAGE: "Invite people, change roles below owner, remove members",
    Perm.MEMBERS_VIEW: "See the members; leave the organisation",
    Perm.KEYS_ALL: "See and manage every key of the organisation",
    Perm.KEYS_OWN: "Create keys and manage the ones you made",
    Perm.MANAGEMENT_KEYS: "Create and revoke management keys (tf-mgmt-) for scripts",
    Perm.PLAN_CHANGE: "Change the plan",
    Perm.BILLING_VIEW: "See the balance, the ledger and receipts",
    Perm.BILLING_TOPUP: "Top up the balance; the Stripe customer portal",
    Perm.BUDGETS: "Set monthly spend caps per member and per key",
    Perm.USAGE_ALL: "Everyone's usage and activity, exports",
    Perm.USAGE_OWN: "The usage and activity of the keys you made",
    Perm.AUDIT_VIEW: "Read and export the audit log",
    Perm.DASHBOARD: "The home page, the model catalog, switching and creating organisations",
}
assert set(DESCRIPTIONS) == set(Perm), "every permission is described"


def can(role: str, perm: Perm) -> bool:
    try:
        return Role(role) in PERMISSIONS[perm]
    except ValueError:
        return False


def table() -> list[tuple[Perm, list[bool]]]:
    """The permission table as rows of (permission, [allowed for each role in Role order])."""
    return [(perm, [role in PERMISSIONS[perm] for role in Role]) for perm in Perm]
