"""The dashboard's live meter over a websocket (Channels): window remaining, balance and requests
this minute for the organisation the signed-in person's session acts for (the dashboard's
switcher sets it), pushed each time metering writes its records.

A meter lives only as long as the session that opened it: logging out, changing the password
(which ends the person's other sessions) or being deactivated closes it (``end_sessions``)."""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from accounts import orgs
from gateway import usage

log = logging.getLogger(__name__)

# Closed before accepting, or later when the session ends: nobody is signed in (the browser then
# stops retrying).
NOT_SIGNED_IN = 4401


def sessions_group(user_id: int) -> str:
    """Every meter a person has open, whatever the session."""
    return f"meter-user-{user_id}"


class MeterConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    account_id: int | None = None
    user_group: str | None = None
    session_key: str | None = None
    user_id: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.user_id = int(user.pk)
        self.user_group = sessions_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        account_id = await database_sync_to_async(_account_id)(user, session)
        self.group = usage.meter_group(account_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.account_id = account_id
        await sync_to_async(usage.watch_meter)(account_id, opened=True)
        await self.accept()
        await self.send_json(await database_sync_to_async(usage.meter_state)(account_id))

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        if self.user_group is not None:
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
            self.user_group = None
        if self.account_id is not None:
            await sync_to_async(usage.watch_meter)(self.account_id, opened=False)
            self.account_id = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The meter only talks; anything the browser sends is ignored."""

    async def meter_update(self, event: dict[str, Any]) -> None:
        await self.send_json(event["state"])

    async def session_check(self, event: dict[str, Any]) -> None:
        """Something about this person's sessions changed: stay open only while the session that
        opened this meter still signs the same person in."""
        if self.session_key is None or event.get("ended") == self.session_key:
            await self._end()
            return
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=self.session_key)
        user = await get_user({"session": store})
        if not user.is_authenticated or user.pk != self.user_id:
            await self._end()

    async def _end(self) -> None:
        await self.disconnect(NOT_SIGNED_IN)
        await self.close(code=NOT_SIGNED_IN)


def _account_id(user: Any, session: Any) -> int:
    """The organisation the session acts for (reading the session may query the database)."""
    wanted = session.get(orgs.ORG_SESSION_KEY) if session is not None else None
    return int(orgs.membership_for(user, wanted).account_id)


def end_sessions(*, user_id: int, ended_session_key: str | None = None) -> None:
    """Ask this person's open meters to check their sessions (one ended, or the password or the
    account changed). Receivers of user_logged_out and User saves, connected in gateway/apps.py;
    a broken channel layer must not break a log-out, so it is logged."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            sessions_group(user_id), {"type": "session.check", "ended": ended_session_key}
        )
    except Exception:  # the channel layer's own errors vary by backend
        log.exception("could not tell the live meters of user %s to check their session", user_id)
