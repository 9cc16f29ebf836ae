"""Upstream API keys at rest: Fernet tokens (``cryptography``) under the keys named in
``TOKENFACTORY_SECRET_KEYS``. The first key encrypts, every key decrypts (``MultiFernet``), so a
new key goes first, ``manage.py rotatekeys`` re-encrypts every stored key with it, and the old
one can then be dropped. With none set, one key is derived from ``SECRET_KEY`` (HKDF-SHA256), the
embedded mode's default: changing SECRET_KEY then makes the stored keys unreadable."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

# The longest upstream key accepted; its token (about 4/3 of it plus 76 characters) fits the
# 1,000-character column.
MAX_KEY_CHARS = 500
_DERIVATION_INFO = b"tokenfactory upstream api keys"
_fernet: MultiFernet | None = None


class UndecryptableKey(ImproperlyConfigured):
    """A stored upstream key that no configured key decrypts: the wrong keys are configured."""


def derived_key(secret_key: str) -> bytes:
    """The Fernet key the embedded mode uses: HKDF-SHA256 of Django's SECRET_KEY."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVATION_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


def configured_keys() -> list[bytes]:
    """The Fernet keys in use, the encrypting one first."""
    names: list[str] = settings.TOKENFACTORY_SECRET_KEYS
    if not names:
        return [derived_key(settings.SECRET_KEY)]
    return [name.encode() for name in names]


def fernet() -> MultiFernet:
    global _fernet
    if _fernet is None:
        keys = []
        for i, key in enumerate(configured_keys()):
            try:
                keys.append(Fernet(key))
            except ValueError as exc:
                raise ImproperlyConfigured(
                    f"TOKENFACTORY_SECRET_KEYS: key {i + 1} is not a Fernet key (32 bytes, "
                    "url-safe base64); make one with `python -c 'from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())'`."
                ) from exc
        _fernet = MultiFernet(keys)
    return _fernet


def encrypt(plain: str) -> str:
    """The token stored for ``plain`` (empty stays empty: "no key")."""
    if not plain:
        return ""
    if len(plain) > MAX_KEY_CHARS:
        raise ValueError(f"An upstream API key may be at most {MAX_KEY_CHARS} characters.")
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """The key a stored token holds, or UndecryptableKey (loudly: requests cannot go upstream)."""
    if not token:
        return ""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        source = (
            "any key in TOKENFACTORY_SECRET_KEYS"
            if settings.TOKENFACTORY_SECRET_KEYS
            else "the key derived from SECRET_KEY (TOKENFACTORY_SECRET_KEYS is not set)"
        )
        raise UndecryptableKey(
            f"An upstream API key stored in the database cannot be decrypted with {source}: "
            "it was encrypted with another key. Put that key back in TOKENFACTORY_SECRET_KEYS "
            "(after the new one), or enter the provider's key again in the admin. See "
            "docs/operating.md, 'Upstream API keys'."
        ) from None


def rotate(token: str) -> str:
    """``token`` re-encrypted with the first configured key."""
    if not token:
        return ""
    decrypt(token)  # the clear error when no configured key opens it
    return fernet().rotate(token.encode()).decode()


@checks.register(checks.Tags.security)
def keys_are_valid(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every configured key is a Fernet key (``manage.py check``, and before ``migrate``)."""
    try:
        fernet()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="gateway.E001")]
    return []


@checks.register(checks.Tags.security, deploy=True)
def keys_are_set(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """``check --deploy``: production names its own keys rather than the derived one."""
    if settings.TOKENFACTORY_SECRET_KEYS:
        return []
    return [
        checks.Warning(
            "TOKENFACTORY_SECRET_KEYS is not set: upstream API keys are encrypted with a key "
            "derived from SECRET_KEY, so changing SECRET_KEY makes them unreadable.",
            hint="Set TOKENFACTORY_SECRET_KEYS (docs/operating.md, 'Upstream API keys').",
            id="gateway.W001",
        )
    ]


def _forget(*, setting: str, **kwargs: Any) -> None:
    global _fernet
    if setting in ("TOKENFACTORY_SECRET_KEYS", "SECRET_KEY"):
        _fernet = None


setting_changed.connect(_forget, dispatch_uid="gateway.crypto.forget")
