"""Accounts: signing people up and finding the account they act for."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from accounts.models import Account, Membership, User
from billing import plans
from billing.models import Plan


class SignupError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def sign_up(*, email: str, password: str, name: str = "", plan: Plan | None = None) -> User:
    """Create a user and their personal account (on the default plan unless one is given)."""
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
        user = User.objects.create_user(email=email, password=password, name=name)
        account = Account.objects.create(name=name or email, plan=plan or plans.default())
        Membership.objects.create(user=user, account=account, role=Membership.Role.OWNER)
    return user


def account_for(user: User) -> Account:
    """The account a signed-in person acts for: their personal one (teams come later)."""
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
