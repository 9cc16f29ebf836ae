"""People and the accounts that own plans, balances and tf- keys."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Upper
from django.utils.timezone import now


class UserManager(BaseUserManager["User"]):
    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("an e-mail address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=now)
    # When the person proved they read mail at ``email``. People who sign up start unverified
    # (accounts.services.sign_up) and cannot create keys until they follow the link mailed to
    # them; people an operator creates (createaccount, the admin) count as verified.
    email_verified_at = models.DateTimeField(null=True, blank=True, default=now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        # email__iexact (log-in, sign-up, issuekey) is UPPER(email) = UPPER(%s) on PostgreSQL.
        indexes = [models.Index(Upper("email"), name="user_email_upper")]

    def __str__(self) -> str:
        return self.email

    @property
    def is_email_verified(self) -> bool:
        return self.email_verified_at is not None


class Account(models.Model):
    """An organisation: it owns a plan, a prepaid balance and keys, and people join it through
    memberships with a role. Every user gets a personal one at sign-up and may belong to several
    (accounts.orgs picks the one a request acts for)."""

    name = models.CharField(max_length=150)
    plan = models.ForeignKey("billing.Plan", on_delete=models.PROTECT, related_name="accounts")
    # Prepaid balance in micro-dollars (1 USD = 1,000,000). Only billing.ledger changes it, and it
    # always equals the sum of the account's ledger entries.
    balance_micros = models.BigIntegerField(default=0)
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The token window as last persisted by metering; the live copy is in the limiter, which
    # falls back to these after a restart.
    window_started_at = models.DateTimeField(null=True, blank=True)
    window_used_tokens = models.BigIntegerField(default=0)
    members = models.ManyToManyField(User, through="Membership", related_name="accounts")
    # Members (except owners) must have signed in through single sign-on to act for it.
    sso_required = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person in an organisation (an Account) with one role; accounts/roles.py says what each
    role may do."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        BILLING = "billing", "Billing"
        DEVELOPER = "developer", "Developer"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role, default=Role.OWNER)
    created_at = models.DateTimeField(auto_now_add=True)
    # Integer micro-dollars: the most the keys this member made in this organisation may spend
    # together in a calendar month (UTC); None: no cap. Enforced by gateway.limits.
    monthly_budget_micros = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "account"], name="one_membership_per_account")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.account} ({self.role})"


class ApiKey(models.Model):
    """A tf- key. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    class Environment(models.TextChoices):
        PROD = "prod", "Production"
        STAG = "stag", "Staging"
        DEV = "dev", "Development"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    environment = models.CharField(max_length=4, choices=Environment, default=Environment.PROD)
    key_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=40, help_text="tf-prod-xk2m...2l3m: enough to recognise it")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )
    # Empty: every model the account's plan allows.
    allowed_models = models.JSONField(default=list, blank=True)
    # The key's own caps; they may only lower the plan's limits.
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    # Integer micro-dollars: the most this key may spend in a calendar month (UTC); None: no cap.
    monthly_budget_micros = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, at: Any = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (at or now())

    @property
    def is_usable(self) -> bool:
        return not self.is_revoked and not self.is_expired()

    @property
    def status(self) -> str:
        if self.is_revoked:
            return "revoked"
        if self.is_expired():
            return "expired"
        if self.replaced_by_id is not None:
            return "rotating"
        return "active"


class ManagementKey(models.Model):
    """A tf-mgmt- key: lets a script manage the account's inference keys through /api/keys/,
    within its scopes. It cannot call models, and inference keys cannot manage keys. Only its
    SHA-256 is stored; the key itself is shown once, at creation."""

    class Scope(models.TextChoices):
        READ = "keys:read", "Read keys"
        WRITE = "keys:write", "Manage keys"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="management_keys")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=40)
    # keys:read lists and reads keys; keys:write also creates, edits, rotates and revokes them.
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def status(self) -> str:
        return "revoked" if self.is_revoked else "active"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Audit events are only ever added: bulk updates and deletes are refused."""

    def update(self, **kwargs: Any) -> int:
        raise PermissionError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """One security- or money-relevant action: who, what, when, from where, before and after.
    Written only by accounts.audit.record; never changed or deleted. References are kept as plain
    ids and labels (no foreign-key constraint, no cascade), so an event outlives what it names."""

    class ActorKind(models.TextChoices):
        USER = "user", "Person"
        KEY = "key", "API key"
        MANAGEMENT_KEY = "management_key", "Management key"
        OPERATOR = "operator", "Operator"
        WEBHOOK = "webhook", "Webhook"
        SYSTEM = "system", "System"

    at = models.DateTimeField(default=now, db_index=True)
    account = models.ForeignKey(
        Account,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_events",
    )
    action = models.CharField(max_length=64, db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind)
    actor_user = models.ForeignKey(
        User,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # What the actor was called then: an e-mail, a key's hint, an operator's command.
    actor_label = models.CharField(max_length=200, blank=True)
    target_kind = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["account", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_label or self.actor_kind}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class OrgDomain(models.Model):
    """An e-mail domain an organisation claims (accounts/sso.py). Once proven by a DNS TXT record
    (or by an operator), people who sign in through single sign-on with a verified address at it
    join the organisation with ``default_role``. Any number of organisations may have a pending
    claim; only one may hold the domain verified."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="domains")
    domain = models.CharField(max_length=253)
    default_role = models.CharField(
        max_length=10, choices=Membership.Role, default=Membership.Role.DEVELOPER
    )
    # The value the TXT record _tokenfactory-verification.<domain> must hold: public, not a secret.
    proof = models.CharField(max_length=64)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(fields=["account", "domain"], name="one_claim_per_org"),
            models.UniqueConstraint(
                fields=["domain"],
                condition=models.Q(verified_at__isnull=False),
                name="one_verified_claim_per_domain",
            ),
        ]

    def __str__(self) -> str:
        return self.domain

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None


class SsoJoin(models.Model):
    """A person who joined an organisation just in time through single sign-on: they join once;
    if they are removed later, signing in again does not bring them back."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "user"], name="one_sso_join_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user} joined {self.account}"


class Invitation(models.Model):
    """An e-mailed invitation to join an organisation with a role. The link carries a random
    token of which only the SHA-256 is stored; it works once, until ``expires_at``, and not after
    it is withdrawn (accounts.members)."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(default=now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.email} to {self.account} ({self.role})"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.withdrawn_at is None

    def is_expired(self, at: Any = None) -> bool:
        return self.expires_at <= (at or now())
