"""Run the test identity provider: ``python -m tests.oidc_provider.serve``.

Environment: IDP_PORT (loopback port to serve on), IDP_DIR (a fresh directory for its SQLite
database), IDP_USERS (JSON list of {"username", "password", "email", "email_verified", "name"}),
IDP_CLIENT_ID, IDP_CLIENT_SECRET and IDP_REDIRECT_URIS (space-separated) for the one registered
client (the gateway). An RSA key to sign ID tokens is generated at start."""

from __future__ import annotations

import json
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    os.environ["IDP_RSA_KEY"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0, interactive=False)
    for entry in json.loads(os.environ.get("IDP_USERS", "[]")):
        User.objects.create_user(
            username=entry["username"], email=entry["email"], password=entry["password"]
        )
    Application.objects.create(
        name="Token Factory",
        client_id=os.environ["IDP_CLIENT_ID"],
        client_secret=os.environ["IDP_CLIENT_SECRET"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=os.environ["IDP_REDIRECT_URIS"],
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=False,
    )
    call_command(
        "runserver",
        f"127.0.0.1:{os.environ['IDP_PORT']}",
        use_reloader=False,
        use_threading=True,
        skip_checks=True,
    )


if __name__ == "__main__":
    main()
