"""Dashboard forms: they check the shape of what people type; accounts.keys and
accounts.services do the rest."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from accounts import tasks, throttle
from accounts.models import ApiKey, ManagementKey, Membership, User
from billing.models import Plan
from gateway.models import CatalogModel


class LoginForm(AuthenticationForm):
    """Django's login form; e-mail addresses are stored lower-case, so match them that way."""

    def clean_username(self) -> str:
        return str(self.cleaned_data.get("username", "")).strip().lower()


class ResetRequestForm(PasswordResetForm):
    """Django's reset form, except that the look-up and the mail happen in a Celery task
    (accounts.tasks.send_password_reset), and at most PASSWORD_RESET_RATE_PER_EMAIL mails go to
    one address: the request does the same work whether or not the address has an account."""

    def save(self, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        assert request is not None
        if not throttle.reset_mail_allowed(request):
            return
        email = str(self.cleaned_data["email"]).strip().lower()
        tasks.send_password_reset.delay(
            email=email, domain=request.get_host(), use_https=request.is_secure()
        )


class SignupForm(forms.Form):
    email = forms.EmailField(
        label="Email", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters; not a common password, not only digits.",
    )
    password2 = forms.CharField(
        label="Confirm password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_password1(self) -> str:
        """The password rules run whatever the e-mail, so one submit shows every error."""
        password = str(self.cleaned_data.get("password1", ""))
        candidate = User(email=str(self.data.get("email", "")).strip().lower())
        try:
            validate_password(password, user=candidate)
        except ValidationError as exc:
            raise ValidationError(list(exc.messages)) from exc
        return password

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords do not match.")
        return cleaned


def models_for(plan: Plan) -> list[CatalogModel]:
    """Active catalog models the plan's tiers include, in catalog order."""
    return [
        model
        for model in CatalogModel.objects.filter(is_active=True).order_by("model_id")
        if plan.allows_tier(model.tier)
    ]


def _cap_field(label: str, plan_cap: int | None) -> forms.IntegerField:
    help_text = (
        f"Optional. At most your plan's {plan_cap:,}."
        if plan_cap
        else "Optional. Your plan has no cap."
    )
    return forms.IntegerField(
        label=label, required=False, min_value=1, max_value=plan_cap, help_text=help_text
    )


class KeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "e.g. production backend"}),
    )
    environment = forms.ChoiceField(choices=ApiKey.Environment.choices, initial="prod")
    expires_at = forms.DateTimeField(
        label="Expires (UTC)",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional. Leave empty for a key that does not expire.",
    )
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Optional. None ticked: every model your plan includes.",
    )

    def __init__(self, *args: Any, plan: Plan, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        field = self.fields["allowed_models"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(m.model_id, m.model_id) for m in models_for(plan)]
        self.fields["rpm_limit"] = _cap_field("Requests per minute", plan.rpm_limit)
        self.fields["tpm_limit"] = _cap_field("Tokens per minute", plan.tpm_limit)


class ManagementKeyCreateForm(forms.Form):
    prefix = "mgmt"

    name = forms.CharField(
        label="Script",
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "e.g. deploy script"}),
        help_text="What will use this key.",
    )
    access = forms.ChoiceField(
        choices=[
            (ManagementKey.Scope.READ.value, "Read keys"),
            (ManagementKey.Scope.WRITE.value, "Read and manage keys"),
        ],
        initial=ManagementKey.Scope.READ.value,
        help_text="Manage: create, edit, rotate and revoke inference keys.",
    )


class KeyRotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        label="Grace period (hours)",
        min_value=0,
        max_value=168,
        help_text="How long the old key keeps working: 0 to 168 hours.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"grace_hours": settings.KEY_ROTATION_GRACE_HOURS})
        super().__init__(*args, **kwargs)


class PlanSwitchForm(forms.Form):
    plan = forms.SlugField(max_length=50)


# Organisations (accounts/org_views.py)

ROLE_CHOICES = [(choice.value, choice.label) for choice in Membership.Role]


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail address", max_length=254)
    role = forms.ChoiceField(label="Role", choices=ROLE_CHOICES, initial="developer")


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=ROLE_CHOICES)


class OrgNameForm(forms.Form):
    name = forms.CharField(label="Organisation name", max_length=150)
