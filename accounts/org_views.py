"""Organisation pages: the switcher, a new organisation, members and invitations, settings
(rename, transfer, delete), and the invitation link an invitee follows. Each handler checks its
permission with ``requires``, calls one function of accounts.members and redirects with a
message; the rules about owners live in accounts.members."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts import members, orgs
from accounts.forms import InviteForm, OrgNameForm, RoleForm, SignupForm
from accounts.members import InvitationError, MemberError
from accounts.models import Invitation, Membership, User
from accounts.orgs import requires
from accounts.roles import Perm, can
from accounts.services import SignupError


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/").rstrip("/")


def _membership(request: HttpRequest) -> Membership:
    return orgs.current_membership(request)


@requires(Perm.DASHBOARD)
@require_http_methods(["POST"])
def org_switch(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("account", "")
    found = orgs.switch(request, int(raw)) if raw.isdigit() else None
    if found is None:
        messages.error(
            request, "You are not a member of that organisation. Pick one from the list."
        )
        return redirect("dashboard")
    messages.success(request, f"You are now working in {found.account.name} as {found.role}.")
    return redirect("dashboard")


@requires(Perm.DASHBOARD)
@require_http_methods(["GET", "POST"])
def org_create(request: HttpRequest) -> HttpResponse:
    form = OrgNameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = request.user
        assert isinstance(user, User)
        try:
            membership = members.create_organisation(
                user=user, name=form.cleaned_data["name"], request=request
            )
        except MemberError as exc:
            form.add_error("name", str(exc))
        else:
            orgs.switch(request, membership.account_id)
            messages.success(
                request,
                f"Created {membership.account.name}; you are its owner. Invite people on the "
                "Members page.",
            )
            return redirect("org_members")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/org_new.html", {"form": form}, status=status)


def _members_context(request: HttpRequest, invite_form: InviteForm | None = None) -> dict[str, Any]:
    me = _membership(request)
    manage = can(me.role, Perm.MEMBERS_MANAGE)
    transfer = can(me.role, Perm.ORG_TRANSFER)
    roles = [(value, label) for value, label in Membership.Role.choices]
    rows = list(
        Membership.objects.filter(account=me.account)
        .select_related("user")
        .order_by("created_at", "id")
    )
    owners = sum(1 for row in rows if row.role == Membership.Role.OWNER)
    return {
        "account": me.account,
        "me": me,
        "rows": rows,
        # The last owner cannot leave (accounts.members says so too): the page says why instead.
        "sole_owner": me.role == Membership.Role.OWNER and owners == 1,
        "invitations": members.pending_invitations(me.account) if manage else [],
        "invite_form": invite_form or InviteForm(),
        "can_manage": manage,
        "can_transfer": transfer,
        # Admins assign roles below owner; owners any.
        "assignable": roles if transfer else [r for r in roles if r[0] != Membership.Role.OWNER],
    }


@requires(Perm.MEMBERS_VIEW)
@require_http_methods(["GET"])
def members_page(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/members.html", _members_context(request))


@requires(Perm.MEMBERS_MANAGE)
@require_http_methods(["POST"])
def member_invite(request: HttpRequest) -> HttpResponse:
    me = _membership(request)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation = members.invite(
                account=me.account,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                by=me,
                base_url=_base_url(request),
                request=request,
            )
        except MemberError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Invited {invitation.email} as {invitation.role}. The link in the e-mail works "
                f"once, until {invitation.expires_at:%d %B %Y}.",
            )
            return redirect("org_members")
    context = _members_context(request, invite_form=form)
    return render(request, "accounts/members.html", context, status=400)


def _invitation(request: HttpRequest, invitation_id: int) -> Invitation:
    return get_object_or_404(
        Invitation.objects.select_related("account", "invited_by"),
        pk=invitation_id,
        account=_membership(request).account,
    )


@requires(Perm.MEMBERS_MANAGE)
@require_http_methods(["POST"])
def invitation_resend(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    try:
        members.resend(invitation=invitation, base_url=_base_url(request), request=request)
    except MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Sent {invitation.email} a new link; the previous one no longer works."
        )
    return redirect("org_members")


@requires(Perm.MEMBERS_MANAGE)
@require_http_methods(["POST"])
def invitation_withdraw(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation(request, invitation_id)
    try:
        members.withdraw(invitation=invitation, request=request)
    except MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Withdrew the invitation for {invitation.email}.")
    return redirect("org_members")


def _member(request: HttpRequest, membership_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "account"),
        pk=membership_id,
        account=_membership(request).account,
    )


@requires(Perm.MEMBERS_MANAGE)
@require_http_methods(["POST"])
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    target = _member(request, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles: " + ", ".join(members.ROLES) + ".")
        return redirect("org_members")
    try:
        members.change_role(
            membership=target,
            role=form.cleaned_data["role"],
            by=_membership(request),
            request=request,
        )
    except MemberError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{target.user.email} is now {target.role}.")
    return redirect("org_members")


@requires(Perm.MEMBERS_MANAGE)
@require_http_methods(["POST"])
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    target = _member(request, membership_id)
    revoke = request.POST.get("revoke_keys") == "on"
    try:
        revoked = members.remove(
            membership=target, by=_membership(request), revoke_keys=revoke, request=request
        )
    except MemberError as exc:
        messages.error(request, str(exc))
    else:
        note = (
            f" {revoked} of their key{'s' if revoked != 1 else ''} stopped working at once."
            if revoke
            else " Their keys keep working; revoke them on the API keys page if needed."
        )
        messages.success(request, f"Removed {target.user.email}.{note}")
    return redirect("org_members")


@requires(Perm.MEMBERS_VIEW)
@require_http_methods(["POST"])
def org_leave(request: HttpRequest) -> HttpResponse:
    me = _membership(request)
    try:
        members.leave(membership=me, request=request)
    except MemberError as exc:
        messages.error(request, str(exc))
        return redirect("org_members")
    request.session.pop(orgs.ORG_SESSION_KEY, None)
    messages.success(request, f"You left {me.account.name}.")
    return redirect("dashboard")


def _settings_context(request: HttpRequest, form: OrgNameForm | None = None) -> dict[str, Any]:
    me = _membership(request)
    others = (
        Membership.objects.filter(account=me.account)
        .exclude(user=me.user)
        .select_related("user")
        .order_by("user__email")
    )
    return {
        "account": me.account,
        "me": me,
        "form": form or OrgNameForm(initial={"name": me.account.name}),
        "can_transfer": can(me.role, Perm.ORG_TRANSFER),
        "can_delete": can(me.role, Perm.ORG_DELETE),
        "others": others,
    }


@requires(Perm.ORG_SETTINGS)
@require_http_methods(["GET", "POST"])
def org_settings(request: HttpRequest) -> HttpResponse:
    """The organisation's name; for owners, transfer and delete; a link to single sign-on."""
    if request.method != "POST":
        return render(request, "accounts/org_settings.html", _settings_context(request))
    form = OrgNameForm(request.POST)
    if form.is_valid():
        try:
            account = members.rename(
                account=_membership(request).account,
                name=form.cleaned_data["name"],
                request=request,
            )
        except MemberError as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"The organisation is now called {account.name}.")
            return redirect("org_settings")
    context = _settings_context(request, form=form)
    return render(request, "accounts/org_settings.html", context, status=400)


@requires(Perm.ORG_TRANSFER)
@require_http_methods(["POST"])
def org_transfer(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("membership", "")
    if not raw.isdigit():
        messages.error(request, "Choose the member who becomes the owner.")
        return redirect("org_settings")
    target = _member(request, int(raw))
    try:
        members.transfer_ownership(to=target, by=_membership(request), request=request)
    except MemberError as exc:
        messages.error(request, str(exc))
        return redirect("org_settings")
    messages.success(
        request, f"{target.user.email} now owns {target.account.name}; you are an admin."
    )
    return redirect("org_members")


@requires(Perm.ORG_DELETE)
@require_http_methods(["POST"])
def org_delete(request: HttpRequest) -> HttpResponse:
    account = _membership(request).account
    try:
        revoked = members.delete_organisation(
            account=account, confirm_name=request.POST.get("confirm_name", ""), request=request
        )
    except MemberError as exc:
        messages.error(request, str(exc))
        return redirect("org_settings")
    request.session.pop(orgs.ORG_SESSION_KEY, None)
    messages.success(
        request,
        f"Deleted {account.name}: {revoked} key{'s' if revoked != 1 else ''} stopped working.",
    )
    return redirect("dashboard")


# The invitee's side: public, since the person following the link may not have an account yet.


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    try:
        found = members.find_invitation(token)
    except InvitationError as exc:
        return render(request, "accounts/invitation.html", {"error": str(exc)}, status=410)
    context: dict[str, Any] = {"invitation": found, "token": token}
    user = request.user
    if isinstance(user, User):
        if user.email.lower() != found.email.lower():
            context["wrong_user"] = True
            return render(request, "accounts/invitation.html", context, status=403)
        if request.method == "POST":
            try:
                membership = members.accept(invitation=found, user=user, request=request)
            except (MemberError, InvitationError) as exc:
                context["error"] = str(exc)
                return render(request, "accounts/invitation.html", context, status=400)
            return _landed(request, membership)
        return render(request, "accounts/invitation.html", context)
    context["login_url"] = reverse("login") + "?next=" + reverse("invitation", args=[token])
    if User.objects.filter(email__iexact=found.email).exists():
        context["existing"] = True
        return render(request, "accounts/invitation.html", context)
    data = None
    if request.method == "POST":
        data = request.POST.copy()
        data["email"] = found.email
    form = SignupForm(data, initial={"email": found.email})
    form.fields["email"].widget.attrs["readonly"] = True
    context["form"] = form
    if data is not None and form.is_valid():
        try:
            new_user, membership = members.sign_up_and_accept(
                invitation=found, password=form.cleaned_data["password1"], request=request
            )
        except SignupError as exc:
            form.add_error("password1" if exc.field == "password" else None, exc.message)
        except (MemberError, InvitationError) as exc:
            form.add_error(None, str(exc))
        else:
            login(request, new_user, backend="django.contrib.auth.backends.ModelBackend")
            return _landed(request, membership)
    status = 400 if data is not None else 200
    return render(request, "accounts/invitation.html", context, status=status)


def _landed(request: HttpRequest, membership: Membership) -> HttpResponse:
    orgs.switch(request, membership.account_id)
    messages.success(
        request,
        f"Welcome to {membership.account.name}. You joined as {membership.role}.",
    )
    return redirect("dashboard")
