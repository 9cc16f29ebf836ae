"""E-mail verification: the one-time links that prove a person reads mail at their address."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode
from django.utils.timezone import now

from accounts.models import User


class _VerificationTokens(PasswordResetTokenGenerator):
    """Links that prove a person reads mail at their address: they stop working once used (the
    hash covers email_verified_at) and after PASSWORD_RESET_TIMEOUT."""

    key_salt = "accounts.services.email_verification"

    def _make_hash_value(self, user: AbstractBaseUser, timestamp: int) -> str:
        assert isinstance(user, User)
        return f"{user.pk}{user.email}{user.email_verified_at}{timestamp}"


verification_tokens = _VerificationTokens()


def verification_path(user: User) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return reverse("verify_email", args=[uid, verification_tokens.make_token(user)])


def verify_email(*, uidb64: str, token: str) -> User | None:
    """Mark the address verified if the link is right; the person, or None."""
    try:
        user = User.objects.get(pk=int(urlsafe_base64_decode(uidb64).decode()))
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        return None
    if user.is_email_verified:
        return user if verification_tokens.check_token(user, token) else None
    if not verification_tokens.check_token(user, token):
        return None
    user.email_verified_at = now()
    user.save(update_fields=["email_verified_at"])
    return user
