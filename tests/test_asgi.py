"""The ASGI entry point over a real socket: what it answers to requests no view serves."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin
from websockets.sync.client import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["/v1/responses", "/openai/v1/chat/completions", "/nope", "/"])
def test_a_websocket_upgrade_to_a_path_without_a_socket_is_refused_with_403(
    gateway_server: Any, path: str
) -> None:
    url: str = gateway_server.url.replace("http://", "ws://") + path
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin("http://127.0.0.1"), open_timeout=5).close()
    assert refused.value.response.status_code == 403
    # The server carries on.
    with pytest.raises(InvalidStatus) as again:
        connect(url, origin=Origin("http://127.0.0.1"), open_timeout=5).close()
    assert again.value.response.status_code == 403
