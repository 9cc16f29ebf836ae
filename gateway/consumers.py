"""The dashboard's live meter over a websocket (Channels): window remaining, balance and requests
this minute for the signed-in person's account, pushed each time metering writes its records."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.services import account_for
from gateway import usage

# Closed before accepting: nobody is signed in (the browser then stops retrying).
NOT_SIGNED_IN = 4401


class MeterConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    account_id: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        account_id = await database_sync_to_async(_account_id)(user)
        self.group = usage.meter_group(account_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.account_id = account_id
        await sync_to_async(usage.watch_meter)(account_id, opened=True)
        await self.accept()
        await self.send_json(await database_sync_to_async(usage.meter_state)(account_id))

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.account_id is not None:
            await sync_to_async(usage.watch_meter)(self.account_id, opened=False)
            self.account_id = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The meter only talks; anything the browser sends is ignored."""

    async def meter_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event["state"])


def _account_id(user: Any) -> int:
    return int(account_for(user).pk)
