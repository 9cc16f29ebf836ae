"""Upstream API keys are encrypted at rest: the column never holds the key, rotation re-encrypts
with the first key, a wrong key fails loudly, and the admin never shows the key."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from gateway import catalog, crypto
from gateway.models import Provider
from tests import factories

SECRET = "sk-upstream-very-secret-0123456789"


def _column(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM gateway_provider WHERE id = %s", [provider.pk])
        return str(cursor.fetchone()[0])


def _stored(slug: str = "up") -> Provider:
    provider = factories.provider(base_url="https://upstream.example/v1", slug=slug)
    provider.api_key = SECRET
    provider.save(update_fields=["api_key"])
    return provider


@pytest.fixture
def two_keys(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.TOKENFACTORY_SECRET_KEYS = [old]
    return old, new


def test_it_never_stores_the_plain_key(db: None, settings) -> None:
    provider = _stored()
    column = _column(provider)
    assert SECRET not in column
    assert column.startswith("gAAAA")  # a Fernet token
    provider.refresh_from_db()
    assert provider.api_key == SECRET
    assert provider.resolve_api_key() == SECRET
    assert Provider.objects.values_list("api_key", flat=True).get(pk=provider.pk) == SECRET


def test_it_keeps_an_empty_key_empty_and_findable(db: None) -> None:
    provider = factories.provider(base_url="https://upstream.example/v1", slug="keyless")
    Provider.objects.filter(pk=provider.pk).update(api_key="")
    assert _column(provider) == ""
    assert Provider.objects.filter(api_key="", pk=provider.pk).exists()


def test_the_catalog_snapshot_holds_the_decrypted_key(db: None, settings) -> None:
    provider = _stored()
    factories.model("enc-model", routes=[(provider, "upstream-name")])
    route = catalog.load().models["enc-model"].routes[0]
    assert route.api_key == SECRET


def test_it_derives_a_key_from_secret_key_when_none_is_set(db: None, settings) -> None:
    settings.TOKENFACTORY_SECRET_KEYS = []
    provider = _stored()
    derived = Fernet(crypto.derived_key(settings.SECRET_KEY))
    assert derived.decrypt(_column(provider).encode()).decode() == SECRET
    settings.SECRET_KEY = "another-secret-key-entirely"
    with pytest.raises(crypto.UndecryptableKey, match="derived from SECRET_KEY"):
        provider.refresh_from_db()


def test_it_fails_loudly_with_a_wrong_key(db: None, settings, two_keys) -> None:
    _, new = two_keys
    provider = _stored()
    settings.TOKENFACTORY_SECRET_KEYS = [new]
    with pytest.raises(crypto.UndecryptableKey) as caught:
        provider.refresh_from_db()
    assert "cannot be decrypted with any key in TOKENFACTORY_SECRET_KEYS" in str(caught.value)
    with pytest.raises(crypto.UndecryptableKey):
        catalog.load()
    assert catalog.undecryptable_providers() == ["up"]
    with pytest.raises(CommandError, match="up"):
        call_command("rotatekeys", "--check")
    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("rotatekeys")


def test_serve_refuses_to_start_when_a_stored_key_cannot_be_decrypted(db: None, settings, two_keys):
    _, new = two_keys
    _stored(slug="locked-out")
    settings.TOKENFACTORY_SECRET_KEYS = [new]
    with pytest.raises(CommandError, match=r"locked-out.*TOKENFACTORY_SECRET_KEYS"):
        call_command("serve", "--port", "1")


def test_the_checks_name_a_bad_key_and_in_production_a_missing_one(settings) -> None:
    settings.TOKENFACTORY_SECRET_KEYS = []
    ids = {m.id for m in checks.run_checks(include_deployment_checks=True)}
    assert "gateway.W001" in ids
    assert "gateway.E001" not in ids
    settings.TOKENFACTORY_SECRET_KEYS = [Fernet.generate_key().decode(), "nope"]
    found = [m for m in checks.run_checks() if m.id == "gateway.E001"]
    assert len(found) == 1
    assert "key 2 is not a Fernet key" in found[0].msg
    settings.TOKENFACTORY_SECRET_KEYS = [Fernet.generate_key().decode()]
    ids = {m.id for m in checks.run_checks(include_deployment_checks=True)}
    assert not ids & {"gateway.W001", "gateway.E001"}


def test_it_refuses_a_malformed_key_setting(db: None, settings) -> None:
    settings.TOKENFACTORY_SECRET_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="key 1 is not a Fernet key"):
        crypto.encrypt(SECRET)


def test_rotation_re_encrypts_every_stored_key_with_the_first_key(
    db: None, settings, two_keys, capsys
) -> None:
    old, new = two_keys
    first = _stored(slug="first")
    second = _stored(slug="second")
    keyless = factories.provider(base_url="https://x.example/v1", slug="keyless")
    Provider.objects.filter(pk=keyless.pk).update(api_key="")
    before = _column(first)

    settings.TOKENFACTORY_SECRET_KEYS = [new, old]  # the new key first; the old one still reads
    call_command("rotatekeys")
    assert capsys.readouterr().out.strip() == "2"

    for provider in (first, second):
        token = _column(provider)
        assert token != before
        assert Fernet(new.encode()).decrypt(token.encode()).decode() == SECRET
    assert _column(keyless) == ""
    # The old key can go now.
    settings.TOKENFACTORY_SECRET_KEYS = [new]
    first.refresh_from_db()
    assert first.api_key == SECRET
    call_command("rotatekeys", "--check")
    assert capsys.readouterr().out.strip() == "ok"


def test_the_admin_renders_neither_the_key_nor_its_token(admin_client: Client, settings) -> None:
    provider = _stored()
    token = _column(provider)
    for url in (
        f"/admin/gateway/provider/{provider.pk}/change/",
        "/admin/gateway/provider/",
    ):
        page = admin_client.get(url).content.decode()
        assert SECRET not in page
        assert token not in page
        assert "stored key: set" in page
    Provider.objects.filter(pk=provider.pk).update(api_key="")
    assert "stored key: not set" in admin_client.get("/admin/gateway/provider/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_the_keys_already_stored() -> None:
    # Found by name, whatever number the migration is given, with the gateway's one before it.
    executor = MigrationExecutor(connection)
    target = next(
        key
        for key in executor.loader.disk_migrations
        if key[0] == "gateway" and key[1].endswith("_encrypted_api_keys")
    )
    migration = executor.loader.get_migration(*target)
    before = next(d for d in migration.dependencies if d[0] == "gateway")
    executor.migrate([before])
    old_provider = executor.loader.project_state(before).apps.get_model("gateway", "Provider")
    old_provider.objects.create(
        slug="old", name="Old", protocol="openai", base_url="https://old.example/v1", api_key=SECRET
    )
    assert _column(Provider(pk=old_provider.objects.get(slug="old").pk)) == SECRET

    executor = MigrationExecutor(connection)
    executor.migrate([target])
    provider = Provider.objects.get(slug="old")
    assert SECRET not in _column(provider)
    assert provider.api_key == SECRET

    executor = MigrationExecutor(connection)
    executor.migrate([before])  # reversed: plain text again
    assert _column(provider) == SECRET
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Provider.objects.get(slug="old").api_key == SECRET
