"""django-allauth's two adapters, adapted to Token Factory: allauth runs the OpenID Connect
redirect flow (/accounts/oidc/<provider>/login/ and .../callback/); these decide whom to trust and
what happens after (accounts/sso.py).

- A provider must share an e-mail address. A new person is created with it; the address counts as
  verified only when the provider says ``email_verified``.
- An address that already has an account is linked to it only when the provider marks it
  verified (allauth's e-mail authentication matches verified addresses only); otherwise the
  log-in is refused and the person is told why. Linking an account whose address we had not
  verified ourselves wipes its password (allauth's guard: someone may have signed up with another
  person's address and be waiting for them) and marks the address verified.
- After the log-in: the session is marked as single sign-on, ``user.sso_login`` is audited, and
  a verified address at a verified claimed domain makes the person a member of that organisation
  (once) and the organisation they land in.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.timezone import now

from accounts import audit, orgs, sso
from accounts.models import User

# Set on the request by pre_social_login, read by AccountAdapter.login in the same request.
_PENDING = "tf_sso_pending"  # accounts.audit reads it too: no second, plain user.login


def _refuse(request: HttpRequest, message: str) -> ImmediateHttpResponse:
    messages.error(request, message)
    return ImmediateHttpResponse(HttpResponseRedirect(reverse("login")))


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # Only reachable through a provider: allauth's own sign-up pages are not routed.
        return True

    def login(self, request: HttpRequest, user: AbstractBaseUser) -> None:
        # django-axes' backend cannot load users for later requests; the model backend can.
        user.backend = "django.contrib.auth.backends.ModelBackend"
        super().login(request, user)
        pending: dict[str, Any] | None = getattr(request, _PENDING, None)
        if pending is None or not isinstance(user, User):
            return
        sso.mark_session(request, user=user, provider=pending["provider"])
        if not user.is_email_verified and user.email in pending["verified"]:
            # The provider vouches for the address our own link was never followed for.
            user.email_verified_at = now()
            user.save(update_fields=["email_verified_at"])
        joined = sso.join_by_domain(user=user, verified_emails=pending["verified"], request=request)
        if joined is not None:
            landed = orgs.switch(request, joined.account_id) or joined
        else:
            landed = orgs.current_membership(request)  # a first log-in gets its own organisation
        audit.record(
            action="user.sso_login",
            account=landed.account,
            request=request,
            user=user,
            target=user,
            after={"provider": pending["provider"], "email_verified": bool(pending["verified"])},
        )


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        provider = sociallogin.account.get_provider(request)
        if sociallogin.state.get("process", "login") != "login":
            # allauth's "connect" and "redirect" processes end on its own pages, not routed here.
            raise _refuse(request, "Use the log-in page to sign in with single sign-on.")
        if sociallogin.is_existing and not getattr(sociallogin.user, "is_active", False):
            raise _refuse(
                request,
                "This account is disabled. Ask the operator of this gateway to enable it.",
            )
        addresses = sociallogin.email_addresses
        verified = [address.email.lower() for address in addresses if address.verified]
        if not sociallogin.is_existing:
            if not addresses:
                raise _refuse(
                    request,
                    f"{provider.name} did not share your e-mail address, so you cannot be signed "
                    "in with it. Ask your identity provider's administrator to include the email "
                    "scope.",
                )
            email = addresses[0].email.lower()
            if User.objects.filter(email__iexact=email).exists():
                raise _refuse(
                    request,
                    f"An account with {email} already exists and {provider.name} has not "
                    "verified that the address is yours, so it was not linked. Log in with your "
                    "password, or ask your identity provider to verify the address.",
                )
        else:
            user = sociallogin.user
            if isinstance(user, User) and user.is_email_verified:
                # We verified this address ourselves: tell allauth, or it wipes the password of
                # an account it links by e-mail (its guard against pre-registered accounts).
                EmailAddress.objects.get_or_create(
                    user=user, email=user.email, defaults={"verified": True, "primary": True}
                )
        setattr(request, _PENDING, {"provider": sociallogin.account.provider, "verified": verified})

    def populate_user(self, request: HttpRequest, sociallogin: SocialLogin, data: Any) -> Any:
        user = super().populate_user(request, sociallogin, data)
        user.email = (user.email or "").strip().lower()
        if isinstance(user, User) and not user.name:
            user.name = str(data.get("name") or "")[:150]
        return user

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Any = None) -> Any:
        verified = {
            address.email.lower() for address in sociallogin.email_addresses if address.verified
        }
        user = sociallogin.user
        if isinstance(user, User):
            user.email_verified_at = now() if user.email in verified else None
        return super().save_user(request, sociallogin, form)

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: Any = None,
        extra_context: Any = None,
    ) -> None:
        name = getattr(provider, "name", "the identity provider")
        if str(error) == "cancelled":
            raise _refuse(request, f"Single sign-on with {name} was cancelled.")
        raise _refuse(
            request,
            f"Single sign-on with {name} failed ({error}). Try again; if it keeps failing, "
            "ask the operator to check the provider's settings.",
        )
