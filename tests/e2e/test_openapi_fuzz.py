"""schemathesis against the public API's own OpenAPI document (/v1/openapi.json), over HTTP: for
every operation it documents, generated requests (valid and not) never get a server error, and
every refusal comes in the API's error envelope.

(schemathesis' own pytest plugin does not load under pytest 9, so its strategies drive
hypothesis directly.)"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import ServerThread

pytestmark = pytest.mark.e2e


def test_no_documented_operation_answers_with_a_server_error(
    live: dict[str, Any], gateway_server: ServerThread
) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_server.url}/v1/openapi.json")
    headers = {"authorization": f"Bearer {live['secret']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the OpenAPI document lists the public API's operations"
    seen: list[int] = []

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            seen.append(response.status_code)
            assert response.status_code < 500, (case.path, case.query, response.text)
            if response.status_code >= 400:
                assert "error" in response.json(), "refusals come in the error envelope"

        run()
    assert 200 in seen and any(400 <= s < 500 for s in seen), "both answers and refusals"
