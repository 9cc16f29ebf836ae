"""Database reads from the gateway's worker threads that survive a database restart.

The inference paths send no ``request_started`` and send ``request_finished`` in the event loop's
thread, which holds no connection (see handlers), so nothing closes a worker thread's connection
after the database went away and came back: its next query fails on the dead socket. A read
made through ``reconnecting`` drops that connection and tries once more on a new one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection


def reconnecting[**P, T](read: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(read)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return read(*args, **kwargs)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise  # a transaction cannot move to another connection
            connection.close()
            return read(*args, **kwargs)

    return wrapper
