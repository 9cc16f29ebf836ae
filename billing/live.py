"""The live token window, for billing's pages. The gateway's limiter counts it and registers its
reader at start-up (gateway/apps.py), so billing reads it without importing the gateway's
runtime; with no reader registered, pages show the window as metering last persisted it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

# account id -> {"start": ms, "used": tokens, "reserved": tokens}, or None when nothing is live.
WindowReader = Callable[[int], Mapping[str, int] | None]

_readers: list[WindowReader] = []


def register_window_reader(reader: WindowReader) -> None:
    _readers[:] = [reader]


def window_state(account_id: int) -> Mapping[str, int] | None:
    return _readers[0](account_id) if _readers else None
