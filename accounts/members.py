"""People in organisations: creating one, inviting by e-mail, joining, changing roles, removing,
leaving, transferring ownership, renaming and deleting.

Every change that could leave an organisation without an owner locks the organisation's row
first (``_locked``), so two admins acting at once cannot both demote "the other" last owner.
What a role may do is accounts/roles.py; the views check it with ``requires`` and the functions
here check the rules about owners again, so no caller can skip them.

An invitation link carries a random token; only its SHA-256 is stored (``Invitation.token_hash``)
and the mail is sent in the request (console backend by default), so the token never passes
through the task broker either.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.timezone import now

from accounts import audit, keys
from accounts.models import Account, ApiKey, Invitation, ManagementKey, Membership, User
from accounts.roles import Perm, can
from accounts.services import SignupError, sign_up
from billing import plans

ROLES = [choice.value for choice in Membership.Role]


class MemberError(ValueError):
    """A change that the rules refuse; the message says what to do instead."""


class InvitationError(ValueError):
    """An invitation link that cannot be used; the message says why and what to do."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _locked(account: Account) -> Account:
    return Account.objects.select_for_update().get(pk=account.pk)


def _refresh_actor(by: Membership, perm: Perm, message: str) -> None:
    """Inside the lock: the actor's role as it is now (someone may have just changed it)."""
    current = Membership.objects.filter(pk=by.pk).values_list("role", flat=True).first()
    if current is None:
        raise MemberError("You are no longer a member of this organisation.")
    by.role = current
    if not can(by.role, perm):
        raise MemberError(message)


def _owner_count(account: Account) -> int:
    return Membership.objects.filter(account=account, role=Membership.Role.OWNER).count()


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise MemberError(f"There is no role {role!r}. Roles: {', '.join(ROLES)}.")
    return role


def _org_name(name: str, *, empty: str) -> str:
    name = name.strip()
    if not name:
        raise MemberError(empty)
    if len(name) > 150:
        raise MemberError("An organisation's name can be at most 150 characters.")
    return name


def create_organisation(*, user: User, name: str, request: HttpRequest | None = None) -> Membership:
    """A new organisation on the default plan, owned by ``user``."""
    name = _org_name(name, empty="Give the new organisation a name.")
    with transaction.atomic():
        account = Account.objects.create(name=name, plan=plans.default())
        membership = Membership.objects.create(
            user=user, account=account, role=Membership.Role.OWNER
        )
        audit.record(
            action="org.created",
            account=account,
            request=request,
            user=user,
            target=account,
            after={"name": name, "plan": account.plan.slug},
        )
    return membership


def rename(*, account: Account, name: str, request: HttpRequest | None = None) -> Account:
    name = _org_name(name, empty="The organisation's name cannot be empty.")
    before = account.name
    if name == before:
        return account
    with transaction.atomic():
        account.name = name
        account.save(update_fields=["name"])
        audit.record(
            action="org.renamed",
            account=account,
            request=request,
            target=account,
            before={"name": before},
            after={"name": name},
        )
    return account


# Invitations


def invitation_link(*, token: str, base_url: str) -> str:
    return base_url.rstrip("/") + reverse("invitation", args=[token])


def _send(*, invitation: Invitation, token: str, base_url: str) -> None:
    inviter = invitation.invited_by
    context = {
        "site_name": settings.SITE_NAME,
        "organisation": invitation.account.name,
        "role": Membership.Role(invitation.role).label,
        "inviter": (inviter.name or inviter.email) if inviter else "An administrator",
        "email": invitation.email,
        "link": invitation_link(token=token, base_url=base_url),
        "expires_at": invitation.expires_at,
    }
    body = render_to_string("emails/invitation.txt", context)
    subject = f"Join {invitation.account.name} on {settings.SITE_NAME}"
    send_mail(subject, body, None, [invitation.email])


def invite(
    *,
    account: Account,
    email: str,
    role: str,
    by: Membership,
    base_url: str,
    request: HttpRequest | None = None,
) -> Invitation:
    """Mail ``email`` a link to join ``account`` as ``role``. Only owners invite owners."""
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise MemberError("Enter a valid e-mail address to invite.") from exc
    _check_role(role)
    if role == Membership.Role.OWNER and not can(by.role, Perm.ORG_TRANSFER):
        raise MemberError("Only an owner can invite another owner. Invite them as an admin.")
    if Membership.objects.filter(account=account, user__email__iexact=email).exists():
        raise MemberError(f"{email} is already a member of {account.name}.")
    pending = Invitation.objects.filter(
        account=account,
        email__iexact=email,
        accepted_at__isnull=True,
        withdrawn_at__isnull=True,
        expires_at__gt=now(),
    )
    if pending.exists():
        raise MemberError(
            f"{email} already has a pending invitation: resend or withdraw it in the list below."
        )
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            account=account,
            email=email,
            role=role,
            token_hash=_hash(token),
            invited_by=by.user,
            expires_at=now() + timedelta(days=settings.INVITATION_DAYS),
        )
        audit.record(
            action="member.invited",
            account=account,
            request=request,
            user=by.user,
            target_kind="invitation",
            target_id=invitation.pk,
            target_label=email,
            after={"email": email, "role": role},
        )
    _send(invitation=invitation, token=token, base_url=base_url)
    return invitation


def resend(
    *, invitation: Invitation, base_url: str, request: HttpRequest | None = None
) -> Invitation:
    """A fresh link (the old one stops working) with a fresh expiry, mailed again."""
    if not invitation.is_pending:
        raise MemberError(
            f"The invitation for {invitation.email} was already accepted or withdrawn."
        )
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation.token_hash = _hash(token)
        invitation.sent_at = now()
        invitation.expires_at = invitation.sent_at + timedelta(days=settings.INVITATION_DAYS)
        invitation.save(update_fields=["token_hash", "sent_at", "expires_at"])
        audit.record(
            action="member.invited",
            account=invitation.account_id,
            request=request,
            target_kind="invitation",
            target_id=invitation.pk,
            target_label=invitation.email,
            after={"email": invitation.email, "role": invitation.role, "resent": True},
        )
    _send(invitation=invitation, token=token, base_url=base_url)
    return invitation


def withdraw(*, invitation: Invitation, request: HttpRequest | None = None) -> Invitation:
    if not invitation.is_pending:
        raise MemberError(
            f"The invitation for {invitation.email} was already accepted or withdrawn."
        )
    with transaction.atomic():
        invitation.withdrawn_at = now()
        invitation.save(update_fields=["withdrawn_at"])
        audit.record(
            action="member.invitation_revoked",
            account=invitation.account_id,
            request=request,
            target_kind="invitation",
            target_id=invitation.pk,
            target_label=invitation.email,
            before={"email": invitation.email, "role": invitation.role},
        )
    return invitation


def pending_invitations(account: Account) -> list[Invitation]:
    return list(
        Invitation.objects.filter(
            account=account, accepted_at__isnull=True, withdrawn_at__isnull=True
        ).select_related("invited_by")
    )


def _usable(invitation: Invitation | None) -> Invitation:
    if invitation is None:
        raise InvitationError(
            "This invitation link is not valid (it may have been re-sent, which replaces the "
            "old link). Check you copied the whole link, or ask for a new invitation."
        )
    if invitation.withdrawn_at is not None:
        raise InvitationError(
            f"This invitation to {invitation.account.name} was withdrawn. Ask an owner or admin "
            "of the organisation for a new one."
        )
    if invitation.accepted_at is not None:
        raise InvitationError(
            f"This invitation to {invitation.account.name} was already used. Log in as "
            f"{invitation.email} to reach the organisation."
        )
    if not invitation.account.is_active:
        raise InvitationError(f"{invitation.account.name} was deleted; the invitation is void.")
    if invitation.is_expired():
        raise InvitationError(
            f"This invitation to {invitation.account.name} expired on "
            f"{invitation.expires_at:%d %B %Y at %H:%M} UTC. Ask an owner or admin to resend it."
        )
    return invitation


def find_invitation(token: str) -> Invitation:
    """The invitation behind a link, if it can still be accepted (InvitationError says why not)."""
    found = (
        Invitation.objects.select_related("account", "invited_by")
        .filter(token_hash=_hash(token))
        .first()
    )
    return _usable(found)


def accept(*, invitation: Invitation, user: User, request: HttpRequest | None = None) -> Membership:
    """``user`` joins with the invited role. The link was mailed to the invited address, so
    following it also confirms that address."""
    with transaction.atomic():
        locked = _usable(
            Invitation.objects.select_for_update()
            .select_related("account")
            .filter(pk=invitation.pk)
            .first()
        )
        if user.email.lower() != locked.email.lower():
            raise MemberError(
                f"This invitation is for {locked.email}, and you are logged in as {user.email}. "
                f"Log out, then open the link again and log in or sign up as {locked.email}."
            )
        membership, created = Membership.objects.get_or_create(
            user=user, account=locked.account, defaults={"role": locked.role}
        )
        locked.accepted_at = now()
        locked.accepted_by = user
        locked.save(update_fields=["accepted_at", "accepted_by"])
        if user.email_verified_at is None:
            user.email_verified_at = now()
            user.save(update_fields=["email_verified_at"])
        if created:
            audit.record(
                action="member.joined",
                account=locked.account,
                request=request,
                user=user,
                target=membership.user,
                target_kind="membership",
                after={"email": user.email, "role": membership.role, "invitation": locked.pk},
            )
    return membership


def sign_up_and_accept(
    *, invitation: Invitation, password: str, name: str = "", request: HttpRequest | None = None
) -> tuple[User, Membership]:
    """A new person from an invitation: their address is the invited one and counts as
    confirmed; they get no personal organisation, only the one they were invited to."""
    _usable(invitation)
    if User.objects.filter(email__iexact=invitation.email).exists():
        raise SignupError(
            "email", f"{invitation.email} already has an account: log in to accept the invitation."
        )
    with transaction.atomic():
        user = sign_up(
            email=invitation.email, password=password, name=name, verified=True, personal=False
        )
        audit.record(
            action="user.signup",
            account=invitation.account_id,
            request=request,
            user=user,
            target=user,
            after={"email": user.email, "name": name, "invited_as": invitation.role},
        )
        membership = accept(invitation=invitation, user=user, request=request)
    return user, membership


# Roles, removal, leaving, ownership


def _same_org(membership: Membership, by: Membership) -> None:
    if membership.account_id != by.account_id:
        raise MemberError("That person is not a member of this organisation.")


def change_role(
    *, membership: Membership, role: str, by: Membership, request: HttpRequest | None = None
) -> Membership:
    """Admins change roles below owner; only owners make or unmake owners; the last owner
    stays one."""
    _check_role(role)
    _same_org(membership, by)
    if role == membership.role:
        return membership
    refused = "Only an owner can make someone an owner or change an owner's role."
    with transaction.atomic():
        account = _locked(membership.account)
        membership.refresh_from_db(fields=["role"])
        _refresh_actor(by, Perm.MEMBERS_MANAGE, "Only owners and admins change roles.")
        if Membership.Role.OWNER in (role, membership.role) and not can(by.role, Perm.ORG_TRANSFER):
            raise MemberError(refused)
        before = membership.role
        if before == Membership.Role.OWNER and _owner_count(account) == 1:
            raise MemberError(
                f"{membership.user.email} is the last owner of {account.name} and cannot be "
                "demoted. Make someone else an owner first."
            )
        membership.role = role
        membership.save(update_fields=["role"])
        audit.record(
            action="member.role_changed",
            account=account,
            request=request,
            user=by.user,
            target=membership.user,
            target_kind="membership",
            before={"role": before},
            after={"role": role},
        )
    return membership


def _revoke_keys_of(*, account: Account, user: User) -> int:
    revoked = 0
    for key in ApiKey.objects.filter(account=account, created_by=user, revoked_at__isnull=True):
        keys.revoke(key=key)
        revoked += 1
    for mkey in ManagementKey.objects.filter(
        account=account, created_by=user, revoked_at__isnull=True
    ):
        keys.revoke_management(key=mkey)
        revoked += 1
    return revoked


def remove(
    *,
    membership: Membership,
    by: Membership,
    revoke_keys: bool,
    request: HttpRequest | None = None,
) -> int:
    """Take someone out of the organisation, and with ``revoke_keys`` revoke every key they
    made in it (they stop working at once). Returns how many keys were revoked."""
    _same_org(membership, by)
    if membership.user_id == by.user_id:
        raise MemberError("To take yourself out, use “Leave organisation”.")
    with transaction.atomic():
        account = _locked(membership.account)
        membership.refresh_from_db(fields=["role"])
        _refresh_actor(by, Perm.MEMBERS_MANAGE, "Only owners and admins remove members.")
        if membership.role == Membership.Role.OWNER and not can(by.role, Perm.ORG_TRANSFER):
            raise MemberError("Only an owner can remove an owner.")
        if membership.role == Membership.Role.OWNER and _owner_count(account) == 1:
            raise MemberError(
                f"{membership.user.email} is the last owner of {account.name} and cannot be "
                "removed."
            )
        user = membership.user
        role = membership.role
        membership.delete()
        revoked = _revoke_keys_of(account=account, user=user) if revoke_keys else 0
        audit.record(
            action="member.removed",
            account=account,
            request=request,
            user=by.user,
            target=user,
            target_kind="membership",
            before={"email": user.email, "role": role},
            after={"keys_revoked": revoked},
        )
    return revoked


def leave(*, membership: Membership, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        account = _locked(membership.account)
        membership.refresh_from_db(fields=["role"])
        if membership.role == Membership.Role.OWNER and _owner_count(account) == 1:
            raise MemberError(
                f"You are the last owner of {account.name}, so you cannot leave it. Make "
                "someone else an owner first, or delete the organisation."
            )
        role = membership.role
        membership.delete()
        audit.record(
            action="member.left",
            account=account,
            request=request,
            user=membership.user,
            target=membership.user,
            target_kind="membership",
            before={"role": role},
        )


def transfer_ownership(
    *, to: Membership, by: Membership, request: HttpRequest | None = None
) -> None:
    """``to`` becomes an owner and ``by`` (an owner) steps down to admin."""
    _same_org(to, by)
    if not can(by.role, Perm.ORG_TRANSFER):
        raise MemberError("Only an owner can transfer ownership.")
    if to.user_id == by.user_id:
        raise MemberError("Choose another member to hand the organisation to.")
    with transaction.atomic():
        account = _locked(by.account)
        _refresh_actor(by, Perm.ORG_TRANSFER, "Only an owner can transfer ownership.")
        to.refresh_from_db(fields=["role"])
        before = to.role
        Membership.objects.filter(pk=to.pk).update(role=Membership.Role.OWNER)
        Membership.objects.filter(pk=by.pk).update(role=Membership.Role.ADMIN)
        to.role, by.role = Membership.Role.OWNER, Membership.Role.ADMIN
        audit.record(
            action="org.ownership_transferred",
            account=account,
            request=request,
            user=by.user,
            target=to.user,
            target_kind="membership",
            before={"owner": by.user.email, "new_owner_role": before},
            after={"owner": to.user.email, "previous_owner_role": Membership.Role.ADMIN.value},
        )


def delete_organisation(
    *, account: Account, confirm_name: str, request: HttpRequest | None = None
) -> int:
    """Mark the organisation inactive after its name is typed back: every key stops working,
    pending invitations are withdrawn, and nobody can act for it. Returns the keys revoked."""
    if confirm_name.strip() != account.name:
        raise MemberError(f"Type the organisation's name, {account.name}, exactly to delete it.")
    with transaction.atomic():
        account = _locked(account)
        revoked = 0
        for key in ApiKey.objects.filter(account=account, revoked_at__isnull=True):
            keys.revoke(key=key)
            revoked += 1
        for mkey in ManagementKey.objects.filter(account=account, revoked_at__isnull=True):
            keys.revoke_management(key=mkey)
        Invitation.objects.filter(
            account=account, accepted_at__isnull=True, withdrawn_at__isnull=True
        ).update(withdrawn_at=now())
        account.is_active = False
        account.save(update_fields=["is_active"])
        audit.record(
            action="org.deleted",
            account=account,
            request=request,
            target=account,
            before={"name": account.name},
            after={"keys_revoked": revoked},
        )
    return revoked
