"""Billing pages and the Stripe webhook (mounted at /billing/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from billing import views

app_name = "billing"
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.billing_page, name="billing"),
    path("topup/", views.topup, name="topup"),
    path("subscribe/", views.subscribe, name="subscribe"),
    path("portal/", views.portal, name="portal"),
    path("success/", views.success, name="success"),
    path("receipts/<int:entry_id>/", views.receipt, name="receipt"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
]
