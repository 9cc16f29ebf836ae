"""Websocket routes (Channels)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from gateway.consumers import MeterConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/meter/", MeterConsumer.as_asgi()),
]
