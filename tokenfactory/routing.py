"""Websocket routes (Channels): the live meter, and a refusal for every other path."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from gateway.consumers import MeterConsumer


class Refuse(AsyncWebsocketConsumer):
    """A websocket to a path that has none: closed before it is accepted (the upgrade is answered
    403), rather than Channels' "No route found" error and a 500."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns: list[Any] = [
    path("ws/meter/", MeterConsumer.as_asgi()),
    re_path(r"", Refuse.as_asgi()),
]
