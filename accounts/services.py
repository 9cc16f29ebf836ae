"""Accounts: signing people up and finding the account they act for."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils.timezone import now

from accounts import audit, tasks
from accounts.models import Account, Membership, User
from billing import plans
from billing.models import Plan


class SignupError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def signup_plan() -> Plan:
    """The plan new sign-ups start on: SIGNUP_PLAN (a slug or name) or the default plan."""
    if settings.SIGNUP_PLAN:
        return plans.by_name(settings.SIGNUP_PLAN)
    return plans.default()


def request_sign_up(*, email: str, password: str, base_url: str) -> None:
    """The sign-up form's action. Whether or not the address has an account, the person is told
    to check their mail, and the mail (a verification link, or a note that the account exists)
    goes out from a Celery task: the page says nothing about which addresses exist."""
    email = email.strip().lower()
    if User.objects.filter(email__iexact=email).exists():
        tasks.send_signup_mail.delay(email=email, base_url=base_url, existing=True)
        return
    user = sign_up(email=email, password=password, verified=False)
    tasks.send_signup_mail.delay(email=user.email, base_url=base_url, existing=False)


def sign_up(
    *,
    email: str,
    password: str,
    name: str = "",
    plan: Plan | None = None,
    verified: bool = True,
    personal: bool = True,
) -> User:
    """Create a user and their personal account (on SIGNUP_PLAN unless one is given). People who
    sign themselves up are created unverified; an operator's (createaccount) are verified. An
    invitee (``personal=False``) gets no personal account: they join the inviting one."""
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise SignupError("email", "Enter a valid e-mail address.") from exc
    if User.objects.filter(email__iexact=email).exists():
        raise SignupError("email", "An account with this e-mail already exists. Log in instead.")
    candidate = User(email=email, name=name)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise SignupError("password", " ".join(exc.messages)) from exc
    with transaction.atomic():
        user = User.objects.create_user(
            email=email,
            password=password,
            name=name,
            email_verified_at=now() if verified else None,
        )
        if personal:
            account = Account.objects.create(name=name or email, plan=plan or signup_plan())
            Membership.objects.create(user=user, account=account, role=Membership.Role.OWNER)
            audit.record(
                action="user.signup",
                account=account,
                # The person signing up, unless an operator (createaccount) is acting.
                user=None if audit.current_actor() else user,
                target=user,
                after={"email": user.email, "name": name, "plan": account.plan.slug},
            )
        # Without a personal organisation (an invitation's sign-up), accounts.members records
        # the sign-up in the organisation the person joins.
    return user


def account_for(user: User) -> Account:
    """A person's first organisation (creating a personal one if they have none). Commands use
    it; a dashboard request acts for the organisation accounts.orgs.current_membership picks."""
    membership = (
        Membership.objects.select_related("account__plan")
        .filter(user=user)
        .order_by("created_at")
        .first()
    )
    if membership is None:
        with transaction.atomic():
            account = Account.objects.create(name=user.name or user.email, plan=plans.default())
            Membership.objects.create(user=user, account=account, role=Membership.Role.OWNER)
        return account
    return membership.account


class NotAMember(Exception):
    pass


def organisation_of(user: User, org_id: int | None) -> Account:
    """The organisation ``org_id`` (an account id) if the person belongs to it, or with None
    their first one (``account_for``): how commands name the organisation they act on."""
    if org_id is None:
        return account_for(user)
    membership = (
        Membership.objects.select_related("account__plan")
        .filter(user=user, account_id=org_id, account__is_active=True)
        .first()
    )
    if membership is None:
        names = ", ".join(
            f"{m.account_id} ({m.account.name})"
            for m in Membership.objects.select_related("account").filter(user=user)
        )
        raise NotAMember(
            f"{user.email} is not a member of an active organisation {org_id}; theirs: "
            f"{names or 'none'}"
        )
    return membership.account
