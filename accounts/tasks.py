"""Celery tasks of accounts: thin doors into the mail accounts sends, off the request path."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm


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
