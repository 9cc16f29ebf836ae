"""Organisation pages under /org/ and the invitation link under /invitations/ (included by
accounts/urls.py)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from accounts import org_views

urlpatterns: list[URLPattern | URLResolver] = [
    path("org/switch/", org_views.org_switch, name="org_switch"),
    path("org/new/", org_views.org_create, name="org_create"),
    path("org/members/", org_views.members_page, name="org_members"),
    path("org/members/invite/", org_views.member_invite, name="org_invite"),
    path("org/members/<int:membership_id>/role/", org_views.member_role, name="org_member_role"),
    path(
        "org/members/<int:membership_id>/remove/",
        org_views.member_remove,
        name="org_member_remove",
    ),
    path(
        "org/invitations/<int:invitation_id>/resend/",
        org_views.invitation_resend,
        name="org_invitation_resend",
    ),
    path(
        "org/invitations/<int:invitation_id>/withdraw/",
        org_views.invitation_withdraw,
        name="org_invitation_withdraw",
    ),
    path("org/leave/", org_views.org_leave, name="org_leave"),
    path("org/settings/", org_views.org_settings, name="org_settings"),
    path("org/transfer/", org_views.org_transfer, name="org_transfer"),
    path("org/delete/", org_views.org_delete, name="org_delete"),
    path("invitations/<str:token>/", org_views.invitation, name="invitation"),
]
