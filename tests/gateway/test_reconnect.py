"""The gateway's database reads run in worker threads that no request signal ever tidies up: when
PostgreSQL restarts under them, each read must drop the dead connection and succeed on a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from gateway import auth, catalog, limits
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _die() -> None:
    """What a database restart leaves behind: Django holds a connection whose socket is gone."""
    connection.ensure_connection()
    assert connection.connection is not None
    connection.connection.close()


READS: dict[str, Callable[[Any, str], Any]] = {
    "key lookup": lambda acct, secret: auth._load(secret, 0),
    "catalog": lambda acct, secret: catalog.load(),
    "window and balance": lambda acct, secret: limits._persisted(acct.pk),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_a_read_on_a_connection_that_died_with_the_database_succeeds(read):
    if connection.vendor != "postgresql":
        pytest.skip("closing SQLite's handle is not what a restart does (CI runs PostgreSQL)")
    acct = factories.account(owner=factories.UserFactory.create(), balance_micros=1_234)
    _, secret = factories.api_key(acct)
    expected = read(acct, secret)
    _die()
    again = read(acct, secret)
    assert again is not None
    assert type(again) is type(expected)
    if isinstance(expected, tuple | int):
        assert again == expected
