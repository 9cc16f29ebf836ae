"""Upstream API keys encrypted at rest: the column widens to hold a Fernet token, every stored
key is encrypted (gateway/crypto.py: the first of TOKENFACTORY_SECRET_KEYS, or the key derived
from SECRET_KEY), and the field becomes an EncryptedCharField. Reversible: back to plain text."""

from django.db import migrations, models

import gateway.models
from gateway import crypto


def encrypt_stored(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Here the historical field is still a plain CharField: it reads and writes the column as is.
    provider = apps.get_model("gateway", "Provider")
    for pk, plain in provider.objects.exclude(api_key="").values_list("pk", "api_key"):
        provider.objects.filter(pk=pk).update(api_key=crypto.encrypt(plain))


def decrypt_stored(apps, schema_editor):  # type: ignore[no-untyped-def]
    provider = apps.get_model("gateway", "Provider")
    for pk, token in provider.objects.exclude(api_key="").values_list("pk", "api_key"):
        provider.objects.filter(pk=pk).update(api_key=crypto.decrypt(token))


HELP = "used when no environment variable is named or set"


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0006_model_aliases"),
    ]

    operations = [
        migrations.AlterField(
            model_name="provider",
            name="api_key",
            field=models.CharField(blank=True, help_text=HELP, max_length=1000),
        ),
        migrations.RunPython(encrypt_stored, decrypt_stored),
        migrations.AlterField(
            model_name="provider",
            name="api_key",
            field=gateway.models.EncryptedCharField(blank=True, help_text=HELP, max_length=1000),
        ),
    ]
