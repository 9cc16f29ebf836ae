"""Admin for people, accounts and tf- keys. Balances move only through billing.ledger and keys are
revoked only through accounts.keys; the key hash is never shown."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts import audit, keys, sso
from accounts.admin_audit import AuditedAdmin
from accounts.models import (
    Account,
    ApiKey,
    AuditEvent,
    ManagementKey,
    Membership,
    OrgDomain,
    User,
)
from billing import ledger, money, plans

admin.site.site_header = "Token Factory admin"
admin.site.site_title = "Token Factory admin"
admin.site.index_title = "Operations"


class UserEditForm(UserChangeForm[User]):
    class Meta(UserChangeForm.Meta):
        model = User


class EmailUserCreationForm(AdminUserCreationForm[User]):
    """Django's admin creation form, with the e-mail address as the login instead of a username."""

    class Meta:
        model = User
        fields = ("email",)

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise ValidationError("A user with this e-mail address already exists.")
        return email


@admin.register(User)
class UserAdmin(AuditedAdmin[User], BaseUserAdmin[User]):
    form = UserEditForm
    add_form = EmailUserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "usable_password", "password1", "password2"),
            },
        ),
    )
    list_display = ("email", "name", "is_staff", "is_active", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("last_login", "date_joined")

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            changed = User.objects.filter(pk=id).first()
            operator = request.user if isinstance(request.user, User) else None
            audit.record(
                action="user.password_changed",
                account=audit.home_account_id(changed) if changed else None,
                user=operator,
                actor_kind=AuditEvent.ActorKind.OPERATOR,
                target=changed,
            )
        return response


class MembershipInline(admin.TabularInline[Membership, Account]):
    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)


class ApiKeyInline(admin.TabularInline[ApiKey, Account]):
    """Keys as facts to look at; they are issued by the owner and revoked from the key list."""

    model = ApiKey
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "hint", "environment", "key_status", "created_at", "last_used_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Account | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Account | None = None) -> bool:
        return False

    @admin.display(description="status")
    def key_status(self, obj: ApiKey) -> str:
        return obj.status


class AdjustBalanceForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=16,
        decimal_places=6,
        label="Amount ($)",
        help_text="positive to credit, negative to debit",
    )
    reason = forms.CharField(max_length=300, help_text="kept in the ledger")
    # One per rendered form: posting the same form twice moves the balance once.
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)

    def clean_amount(self) -> int:
        micros = money.from_dollars(format(self.cleaned_data["amount"], "f"))
        if micros == 0:
            raise ValidationError("An adjustment cannot be zero.")
        return micros

    def clean_reason(self) -> str:
        reason = str(self.cleaned_data["reason"]).strip()
        if not reason:
            raise ValidationError("Say why.")
        return reason


@admin.register(Account)
class AccountAdmin(AuditedAdmin[Account]):
    list_display = ("name", "plan", "balance", "is_active", "created_at", "key_count")
    list_filter = ("plan", "is_active")
    list_select_related = ("plan",)
    search_fields = ("name", "members__email", "stripe_customer_id")
    inlines = (MembershipInline, ApiKeyInline)
    actions = ("adjust_balance",)
    fields = (
        "name",
        "plan",
        "is_active",
        "stripe_customer_id",
        "balance",
        "window_started_at",
        "window_used_tokens",
        "created_at",
    )
    readonly_fields = ("balance", "window_started_at", "window_used_tokens", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                key_total=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True)),
            )
        )

    def save_model(self, request: HttpRequest, obj: Account, form: Any, change: bool) -> None:
        new_plan = obj.plan if change and "plan" in form.changed_data else None
        if new_plan is not None:
            obj.plan_id = form.initial["plan"]  # the plan moves through billing.plans below
        super().save_model(request, obj, form, change)
        if new_plan is not None:
            plans.assign_plan(account=obj, plan=new_plan)
        if change and "is_active" in form.changed_data:
            keys.announce_account_change(accounts=[obj])

    @admin.display(description="balance", ordering="balance_micros")
    def balance(self, obj: Account) -> str:
        return money.format_usd(obj.balance_micros)

    @admin.display(description="live keys", ordering="key_total")
    def key_count(self, obj: Account) -> int:
        return int(getattr(obj, "key_total", 0))

    @admin.action(description="Adjust balance (credit or debit)…", permissions=["change"])
    def adjust_balance(
        self, request: HttpRequest, queryset: QuerySet[Account]
    ) -> HttpResponse | None:
        if "apply" in request.POST:
            form = AdjustBalanceForm(request.POST)
            if form.is_valid():
                self._post_adjustments(request, queryset, form)
                return None
        else:
            form = AdjustBalanceForm(initial={"idempotency_key": uuid.uuid4()})
        context = {
            **self.admin_site.each_context(request),
            "title": "Adjust balance",
            "opts": self.opts,
            "accounts": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/accounts/account/adjust_balance.html", context)

    def _post_adjustments(
        self, request: HttpRequest, queryset: QuerySet[Account], form: AdjustBalanceForm
    ) -> None:
        amount_micros: int = form.cleaned_data["amount"]
        reason: str = form.cleaned_data["reason"]
        submission = form.cleaned_data["idempotency_key"]
        user = request.user if isinstance(request.user, User) else None
        posted, replayed = 0, 0
        for account in queryset:
            entry = ledger.adjust(
                account=account,
                amount_micros=amount_micros,
                idempotency_key=f"admin-adjust:{submission}:{account.pk}",
                description=reason,
                created_by=user,
            )
            if entry is None:
                replayed += 1
            else:
                posted += 1
        shown = money.format_usd(amount_micros)
        if posted:
            self.message_user(request, f"Posted {shown} to {posted} account(s).", messages.SUCCESS)
        if replayed:
            self.message_user(
                request,
                f"{replayed} account(s) already had this adjustment; nothing changed for them.",
                messages.WARNING,
            )


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Revoked"), ("no", "Not revoked")]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin[ApiKey]):
    """Keys are issued by their owners (the secret is shown once, to them) and never deleted here:
    revoke instead, so usage history keeps its key."""

    list_display = (
        "hint",
        "name",
        "account",
        "environment",
        "key_status",
        "created_at",
        "last_used_at",
        "expires_at",
    )
    list_filter = ("environment", RevokedFilter)
    list_select_related = ("account",)
    search_fields = ("hint", "name", "account__name")
    exclude = ("key_hash",)
    fields = (
        "name",
        "account",
        "hint",
        "environment",
        "key_status",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "replaced_by",
        "allowed_models",
        "rpm_limit",
        "tpm_limit",
    )
    readonly_fields = (
        "account",
        "hint",
        "environment",
        "key_status",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "replaced_by",
    )
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        keys.announce_change(key_hashes=[obj.key_hash])

    @admin.display(description="status")
    def key_status(self, obj: ApiKey) -> str:
        return obj.status

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            keys.revoke(key=key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(ManagementKey)
class ManagementKeyAdmin(AuditedAdmin[ManagementKey]):
    """Management keys (tf-mgmt-) are made by their owners on the Keys page, the secret shown
    once to them; here an operator sees them, renames them, narrows their scopes and revokes
    them (never deleted, so what they did stays attributable)."""

    list_display = ("hint", "name", "account", "scopes", "key_status", "created_at", "last_used_at")
    list_filter = (RevokedFilter,)
    list_select_related = ("account",)
    search_fields = ("hint", "name", "account__name")
    fields = (
        "name",
        "account",
        "hint",
        "scopes",
        "key_status",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = (
        "account",
        "hint",
        "key_status",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    actions = ("revoke_keys",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ManagementKey | None = None) -> bool:
        return False

    @admin.display(description="status")
    def key_status(self, obj: ManagementKey) -> str:
        return obj.status

    @admin.action(description="Revoke selected management keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ManagementKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            keys.revoke_management(key=key)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} management key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """The audit log for operators: every organisation's events and the platform's own (admin
    edits of plans, models and providers). Read-only: events are never added, changed or
    deleted here (nor anywhere: see accounts/migrations/0007_audit_append_only.py)."""

    list_display = ("at", "action", "actor_kind", "actor_label", "target", "account", "ip")
    list_filter = ("action", "actor_kind", "target_kind", "at")
    list_select_related = ("account",)
    search_fields = ("actor_label", "target_label", "target_id", "action", "account__name")
    date_hierarchy = "at"
    readonly_fields = (
        "at",
        "account",
        "action",
        "actor_kind",
        "actor_user",
        "actor_label",
        "target_kind",
        "target_id",
        "target_label",
        "ip",
        "user_agent",
        "before",
        "after",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    @admin.display(description="target", ordering="target_label")
    def target(self, obj: AuditEvent) -> str:
        return f"{obj.target_kind} {obj.target_label}".strip()


@admin.register(OrgDomain)
class OrgDomainAdmin(admin.ModelAdmin[OrgDomain]):
    """E-mail domains organisations claim for single sign-on. An operator who has checked
    ownership another way (the TXT record cannot be looked up from here, say) marks a claim
    verified with the action; the organisation's own page checks DNS."""

    list_display = ("domain", "account", "default_role", "verified_at", "created_at")
    list_filter = (("verified_at", admin.EmptyFieldListFilter),)
    search_fields = ("domain", "account__name")
    readonly_fields = ("account", "domain", "proof", "verified_at", "created_at")
    fields = ("account", "domain", "default_role", "proof", "verified_at", "created_at")
    actions = ("mark_verified",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Mark verified (ownership checked by an operator)")
    def mark_verified(self, request: HttpRequest, queryset: QuerySet[OrgDomain]) -> None:
        user = request.user
        label = f"admin:{getattr(user, 'email', '')}"
        for claim in queryset.filter(verified_at__isnull=True):
            try:
                sso.mark_verified(claim=claim, how="operator", actor_label=label)
            except sso.DomainError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{claim.domain} verified for {claim.account}.")
