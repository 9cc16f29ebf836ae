"""Celery tasks of accounts: thin doors into the mail accounts sends, off the request path."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.core.mail import send_mail
from django.template.loader import render_to_string

from accounts import verification
from accounts.models import User


@shared_task(ignore_result=True)
def send_signup_mail(*, email: str, base_url: str, existing: bool) -> None:
    """A new sign-up's verification link, or, when someone signs up with an address that already
    has an account, a note saying so to that address."""
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        return
    context = {"site_name": settings.SITE_NAME, "email": user.email, "base_url": base_url}
    if existing and user.is_email_verified:
        template = "emails/signup_existing.txt"
        subject = f"You already have a {settings.SITE_NAME} account"
    else:
        template = "emails/verify_email.txt"
        subject = f"Confirm your e-mail address for {settings.SITE_NAME}"
        context["link"] = base_url + verification.verification_path(user)
    body = render_to_string(template, context)
    send_mail(subject, body, None, [user.email])


@shared_task(ignore_result=True)
def send_password_reset(*, email: str, domain: str, use_https: bool) -> None:
    """Look the address up and mail a reset link if it belongs to someone. Done here, not in the
    request, so the page answers in the same time whether or not the address exists."""
    form = PasswordResetForm(data={"email": email})
    if form.is_valid():
        form.save(
            domain_override=domain,
            use_https=use_https,
            email_template_name="emails/password_reset.txt",
            subject_template_name="emails/password_reset_subject.txt",
            extra_email_context={"site_name": settings.SITE_NAME},
        )
