"""The organisation's single sign-on page, /org/sso/: claimed e-mail domains (claim, prove by
DNS, default role, remove) and "require single sign-on". Each form calls one function of
accounts/sso.py."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from accounts import sso
from accounts.models import Account, Membership, OrgDomain
from accounts.orgs import requires
from accounts.roles import Perm

_ROLES = [(value, label) for value, label in Membership.Role.choices if value != "owner"]


class ClaimForm(forms.Form):
    domain = forms.CharField(label="Domain", max_length=253, help_text="For example acme.com")
    default_role = forms.ChoiceField(
        label="Role for people who join through it", choices=_ROLES, initial="developer"
    )


class RoleForm(forms.Form):
    default_role = forms.ChoiceField(label="Default role", choices=_ROLES)


def _page(request: HttpRequest, account: Account, *, form: ClaimForm | None = None) -> HttpResponse:
    claims = list(OrgDomain.objects.filter(account=account))
    return TemplateResponse(
        request,
        "accounts/org_sso.html",
        {
            "page": "org_sso",
            "account": account,
            "form": form or ClaimForm(),
            "claims": [(claim, sso.record_name(claim)) for claim in claims],
            "roles": _ROLES,
        },
        status=400 if form is not None and form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@requires(Perm.ORG_SETTINGS)
def org_sso(request: HttpRequest) -> HttpResponse:
    account: Account = request.account  # type: ignore[attr-defined]
    if request.method != "POST":
        return _page(request, account)
    action = request.POST.get("action", "")
    if action == "require":
        required = request.POST.get("required") == "on"
        sso.set_required(account=account, required=required, request=request)
        messages.success(
            request,
            "Single sign-on is now required (owners are exempt)."
            if required
            else "Single sign-on is no longer required.",
        )
        return redirect("org_sso")
    if action == "claim":
        form = ClaimForm(request.POST)
        if not form.is_valid():
            return _page(request, account, form=form)
        try:
            claim = sso.claim_domain(
                account=account,
                domain=form.cleaned_data["domain"],
                default_role=form.cleaned_data["default_role"],
                request=request,
            )
        except sso.DomainError as exc:
            form.add_error("domain", str(exc))
            return _page(request, account, form=form)
        messages.success(
            request,
            f"{claim.domain} claimed. Add the TXT record below at your DNS host, then check it.",
        )
        return redirect("org_sso")
    claim = get_object_or_404(OrgDomain, pk=request.POST.get("claim") or 0, account=account)
    try:
        if action == "check":
            sso.check_dns(claim=claim, request=request)
            messages.success(request, f"{claim.domain} is verified.")
        elif action == "role":
            role_form = RoleForm(request.POST)
            if role_form.is_valid():
                sso.set_default_role(
                    claim=claim, role=role_form.cleaned_data["default_role"], request=request
                )
                messages.success(
                    request, f"New members from {claim.domain} join as {claim.default_role}."
                )
        elif action == "remove":
            sso.remove_domain(claim=claim, request=request)
            messages.success(request, f"{claim.domain} removed.")
    except sso.DomainError as exc:
        messages.error(request, str(exc))
    return redirect("org_sso")
