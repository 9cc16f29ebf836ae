"""The key-management API under /api/keys/: session and tf- key auth, scoping, validation, and
keys that are never stored or shown again in the clear."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import Client

from accounts import keys
from accounts.models import ApiKey, User
from accounts.services import account_for
from tests import factories

pytestmark = pytest.mark.django_db
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def post(client: Client, url: str, body: Any = None, **headers: Any) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json", **headers)


def create(client: Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "backend")
    response = post(client, "/api/keys/", body)
    assert response.status_code == 201, response.content
    return dict(response.json())


def test_it_creates_a_key_and_shows_it_once(api: Client, alice: User) -> None:
    data = create(api, name="backend", environment="dev")
    assert keys.looks_like_key(data["key"])
    assert data["key"].startswith("tf-dev-")
    assert data["hint"] == keys.hint_for(data["key"])
    assert data["status"] == "active"
    assert "key_hash" not in data
    found = keys.verify(data["key"])
    assert found is not None and found.account == account_for(alice)
    listed = api.get("/api/keys/").json()["data"]
    assert [row["id"] for row in listed] == [data["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    assert "key" not in api.get(f"/api/keys/{data['id']}/").json()


def test_it_lists_only_the_callers_keys(api: Client, alice: User, charlie: User) -> None:
    factories.api_key(account_for(charlie), name="charlie's")
    mine = create(api)
    assert [row["id"] for row in api.get("/api/keys/").json()["data"]] == [mine["id"]]


def test_a_management_key_can_manage_keys_of_its_own_account(alice: User) -> None:
    factories.api_key(account_for(alice), name="backend")
    _, secret = factories.management_key(account_for(alice), name="script")
    assert secret.startswith("tf-mgmt-")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    response = post(client, "/api/keys/", {"name": "from a script"}, **auth)
    assert response.status_code == 201
    assert ApiKey.objects.get(pk=response.json()["id"]).created_by == alice
    listed = client.get("/api/keys/", headers={"authorization": f"Bearer {secret}"}).json()
    names = {row["name"] for row in listed["data"]}
    assert names == {"backend", "from a script"}


def test_an_inference_key_cannot_manage_keys(alice: User) -> None:
    """Issue #16: a key limited to one model and 2 RPM could create an unrestricted key, clear its
    own limits and revoke its account's other keys."""
    account = account_for(alice)
    other, _ = factories.api_key(account, name="other")
    narrow, secret = factories.api_key(account, name="narrow", rpm_limit=2)
    bearer = {"authorization": f"Bearer {secret}"}
    attempts = [
        Client().get("/api/keys/", headers=bearer),
        post(Client(), "/api/keys/", {"name": "wide open"}, headers=bearer),
        Client().patch(
            f"/api/keys/{narrow.pk}/",
            json.dumps({"allowed_models": [], "rpm_limit": None}),
            "application/json",
            headers=bearer,
        ),
        post(Client(), f"/api/keys/{other.pk}/revoke/", headers=bearer),
        post(Client(), f"/api/keys/{narrow.pk}/rotate/", headers=bearer),
        Client().delete(f"/api/keys/{other.pk}/", headers=bearer),
    ]
    for response in attempts:
        assert response.status_code == 403, response.content
        error = response.json()["error"]
        assert error["type"] == "permission_error"
        assert "management key" in error["message"]
    assert ApiKey.objects.filter(account=account).count() == 2
    narrow.refresh_from_db()
    other.refresh_from_db()
    assert narrow.rpm_limit == 2 and narrow.replaced_by is None
    assert other.revoked_at is None


def test_a_read_only_management_key_only_reads(alice: User) -> None:
    key, _ = factories.api_key(account_for(alice), name="backend")
    _, secret = factories.management_key(account_for(alice), scopes=("keys:read",))
    bearer = {"authorization": f"Bearer {secret}"}
    assert Client().get("/api/keys/", headers=bearer).status_code == 200
    assert Client().get(f"/api/keys/{key.pk}/", headers=bearer).status_code == 200
    refused = post(Client(), "/api/keys/", {"name": "x"}, headers=bearer)
    assert refused.status_code == 403
    assert "keys:write" in refused.json()["error"]["message"]
    assert post(Client(), f"/api/keys/{key.pk}/revoke/", headers=bearer).status_code == 403
    assert keys.verify_management(secret) is not None
    assert ApiKey.objects.count() == 1


def test_a_revoked_management_key_stops_at_once(alice: User) -> None:
    mkey, secret = factories.management_key(account_for(alice))
    bearer = {"authorization": f"Bearer {secret}"}
    assert Client().get("/api/keys/", headers=bearer).status_code == 200
    keys.revoke_management(key=mkey)
    response = Client().get("/api/keys/", headers=bearer)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_management_key_is_stored_hashed_and_never_calls_models(alice: User) -> None:
    mkey, secret = factories.management_key(account_for(alice))
    assert mkey.key_hash == keys.hash_key(secret) and secret not in str(mkey.__dict__)
    assert mkey.hint == keys.hint_for(secret)
    assert keys.verify(secret) is None
    assert not keys.looks_like_key(secret)


def test_it_rejects_a_bad_or_missing_key(db: None) -> None:
    client = Client()
    response = client.get("/api/keys/", HTTP_AUTHORIZATION="Bearer tf-mgmt-" + "x" * 40)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    response = client.get("/api/keys/")
    assert response.status_code == 401
    assert "credentials" in response.json()["error"]["message"]


def test_the_session_api_needs_csrf(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post(client, "/api/keys/", {"name": "no token"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert not ApiKey.objects.exists()


def test_rotation_keeps_the_old_key_for_the_grace_period_only(api: Client) -> None:
    with time_machine.travel(START, tick=False) as clock:
        old = create(api)
        response = post(api, f"/api/keys/{old['id']}/rotate/", {"grace_hours": 2})
        assert response.status_code == 201
        new = response.json()
        assert new["replaces"] == old["id"]
        assert new["key"] != old["key"]
        assert keys.verify(new["key"]) is not None
        assert keys.verify(old["key"]) is not None
        assert api.get(f"/api/keys/{old['id']}/").json()["status"] == "rotating"
        clock.shift(timedelta(hours=1, minutes=59))
        assert keys.verify(old["key"]) is not None
        clock.shift(timedelta(minutes=1))
        assert keys.verify(old["key"]) is None
        assert keys.verify(new["key"]) is not None
        assert api.get(f"/api/keys/{old['id']}/").json()["status"] == "expired"


def test_rotation_uses_the_default_grace_and_refuses_out_of_range(
    api: Client, settings: Any
) -> None:
    settings.KEY_ROTATION_GRACE_HOURS = 5
    with time_machine.travel(START, tick=False):
        old = create(api)
        response = post(api, f"/api/keys/{old['id']}/rotate/", {"grace_hours": 169})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "grace_hours"
        assert post(api, f"/api/keys/{old['id']}/rotate/").status_code == 201
        expires = ApiKey.objects.get(pk=old["id"]).expires_at
        assert expires == START + timedelta(hours=5)
        again = post(api, f"/api/keys/{old['id']}/rotate/", {"grace_hours": 1})
        assert again.status_code == 400
        assert "already rotated" in again.json()["error"]["message"]


def test_a_key_stops_working_when_it_expires(api: Client) -> None:
    with time_machine.travel(START, tick=False) as clock:
        data = create(api, expires_at=(START + timedelta(hours=1)).isoformat())
        assert keys.verify(data["key"]) is not None
        clock.shift(timedelta(hours=1))
        assert keys.verify(data["key"]) is None


def test_it_refuses_an_expiry_in_the_past(api: Client) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = post(api, "/api/keys/", {"name": "x", "expires_at": past})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "expires_at"


def test_revocation_is_immediate(api: Client) -> None:
    data = create(api)
    assert keys.verify(data["key"]) is not None
    response = post(api, f"/api/keys/{data['id']}/revoke/")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert keys.verify(data["key"]) is None


def test_delete_revokes_too(api: Client) -> None:
    data = create(api)
    assert api.delete(f"/api/keys/{data['id']}/").status_code == 204
    assert keys.verify(data["key"]) is None
    assert ApiKey.objects.get(pk=data["id"]).revoked_at is not None


def test_it_refuses_models_and_caps_beyond_the_plan(api: Client) -> None:
    factories.model("std-model", tier="standard")
    factories.model("premium-model", tier="premium")
    response = post(api, "/api/keys/", {"name": "x", "allowed_models": ["premium-model"]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {
        "message": error["message"],
        "type": "invalid_request_error",
        "param": "allowed_models",
        "code": "invalid",
    }
    assert "premium-model" in error["message"]
    response = post(api, "/api/keys/", {"name": "x", "rpm_limit": 31})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "rpm_limit"
    assert "30" in response.json()["error"]["message"]
    response = post(api, "/api/keys/", {"name": "x", "tpm_limit": 10_001})
    assert response.json()["error"]["param"] == "tpm_limit"
    assert not ApiKey.objects.exists()
    ok = create(api, allowed_models=["std-model"], rpm_limit=30, tpm_limit=5_000)
    assert (ok["allowed_models"], ok["rpm_limit"], ok["tpm_limit"]) == (["std-model"], 30, 5_000)


def test_it_updates_name_models_and_caps(api: Client) -> None:
    factories.model("std-model")
    data = create(api, rpm_limit=10, tpm_limit=1_000)
    url = f"/api/keys/{data['id']}/"
    response = api.patch(url, json.dumps({"name": "renamed", "rpm_limit": 20}), "application/json")
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["rpm_limit"], body["tpm_limit"]) == ("renamed", 20, 1_000)
    response = api.patch(url, json.dumps({"allowed_models": ["std-model"]}), "application/json")
    assert response.json()["allowed_models"] == ["std-model"]
    response = api.patch(url, json.dumps({"tpm_limit": 10**9}), "application/json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tpm_limit"


def test_a_malformed_body_gets_a_clear_400(api: Client) -> None:
    response = api.post("/api/keys/", '{"name": "x",', content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Could not parse the request body")
    response = post(api, "/api/keys/", {"environment": "qa"})
    error = response.json()["error"]
    assert error["param"] == "name"
    assert "required" in error["message"]


def test_one_account_cannot_touch_anothers_keys(api: Client, alice: User, charlie: User) -> None:
    key, secret = factories.api_key(account_for(alice))
    other = Client()
    other.force_login(charlie)
    assert other.get(f"/api/keys/{key.pk}/").status_code == 404
    assert post(other, f"/api/keys/{key.pk}/rotate/").status_code == 404
    assert post(other, f"/api/keys/{key.pk}/revoke/").status_code == 404
    assert other.delete(f"/api/keys/{key.pk}/").status_code == 404
    response = other.patch(f"/api/keys/{key.pk}/", '{"name": "mine"}', "application/json")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert other.get("/api/keys/").json()["data"] == []
    _, charlies_secret = factories.management_key(account_for(charlie))
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {charlies_secret}"}
    assert post(Client(), f"/api/keys/{key.pk}/revoke/", **bearer).status_code == 404
    assert keys.verify(secret) is not None


def test_the_database_never_holds_a_key_in_the_clear(api: Client) -> None:
    created = create(api)
    rotated = post(api, f"/api/keys/{created['id']}/rotate/", {"grace_hours": 1}).json()
    table = connection.ops.quote_name(ApiKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        rows = cursor.fetchall()
    assert len(rows) == 2
    dump = repr(rows)
    for secret in (created["key"], rotated["key"]):
        assert secret not in dump
        assert secret.rpartition("-")[2] not in dump
        assert keys.hash_key(secret) in dump


def test_it_refuses_a_key_past_the_plans_cap_on_active_keys(api: Client, alice: User) -> None:
    account = account_for(alice)
    assert account.plan.max_keys == 3  # the Test plan's seed value
    first, *_ = [create(api, name=f"k{i}")["id"] for i in range(3)]
    response = post(api, "/api/keys/", {"name": "fourth"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "allows 3 active keys" in message and "revoke" in message
    assert keys.active_count(account) == 3
    # Rotating replaces a key: it is never refused, and leaves three active keys.
    assert post(api, f"/api/keys/{first}/rotate/").status_code in (200, 201)
    assert keys.active_count(account) == 3
    # Revoking one frees its place; an expired key holds none either.
    second = ApiKey.objects.filter(account=account, replaced_by__isnull=True).first()
    assert second is not None
    keys.revoke(key=second)
    create(api, name="fourth")
    ApiKey.objects.filter(account=account, name="fourth").update(
        expires_at=datetime.now(tz=UTC) - timedelta(seconds=1)
    )
    create(api, name="fifth")
    with pytest.raises(keys.KeyError_, match="allows 3 active keys"):
        factories.api_key(account, name="sixth")
    # The operator raises the cap in the admin (a plan field): the next key fits.
    account.plan.max_keys = 4
    account.plan.save(update_fields=["max_keys"])
    factories.api_key(account, name="sixth")
