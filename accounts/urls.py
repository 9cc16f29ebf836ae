"""Pages (landing, sign-up, log-in, keys, plans) and the dashboard's key-management API. The
gateway's pages (home, activity, the model catalog, usage, batches) are routed in
gateway/urls.py."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path
from django_ratelimit.decorators import ratelimit

from accounts import api, audit_views, sso_views, throttle, views
from accounts.forms import LoginForm, ResetRequestForm

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.landing, name="landing"),
    path("signup/", views.signup, name="signup"),
    path("signup/verify/<uidb64>/<token>/", views.verify_email, name="verify_email"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            authentication_form=LoginForm, redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password/change/", views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path(
        "password/reset/",
        ratelimit(
            key=throttle.client_key,
            rate=throttle.reset_client_rate,
            method="POST",
            group="password-reset-client",
        )(auth_views.PasswordResetView.as_view(form_class=ResetRequestForm)),
        name="password_reset",
    ),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("keys/", views.keys_page, name="keys"),
    path("keys/<int:key_id>/rotate/", views.key_rotate, name="key_rotate"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("keys/management/", views.management_key_create, name="management_key_create"),
    path(
        "keys/management/<int:key_id>/revoke/",
        views.management_key_revoke,
        name="management_key_revoke",
    ),
    path("plans/", views.plans_page, name="plans"),
    path("api/keys/", api.KeyListApi.as_view(), name="api_keys"),
    path("api/keys/<int:key_id>/", api.KeyDetailApi.as_view(), name="api_key"),
    path("api/keys/<int:key_id>/rotate/", api.KeyRotateApi.as_view(), name="api_key_rotate"),
    path("api/keys/<int:key_id>/revoke/", api.KeyRevokeApi.as_view(), name="api_key_revoke"),
    path("audit/", audit_views.audit_page, name="audit"),
    path("audit/export.csv", audit_views.audit_csv, name="audit_export"),
    path("org/sso/", sso_views.org_sso, name="org_sso"),
    path("org/budgets/", views.budgets_page, name="budgets"),
    # Organisations: switcher, members, invitations, settings (accounts/org_urls.py).
    path("", include("accounts.org_urls")),
]
