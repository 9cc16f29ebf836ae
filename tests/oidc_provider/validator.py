"""The provider's claims: e-mail and whether it is verified come from IDP_USERS."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator


def _entry(username: str) -> dict[str, Any]:
    users: list[dict[str, Any]] = getattr(settings, "USERS", [])
    return next((u for u in users if u["username"] == username), {})


class Validator(OAuth2Validator):
    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        entry = _entry(request.user.username)
        return {
            "email": request.user.email,
            "email_verified": bool(entry.get("email_verified", False)),
            "name": entry.get("name", ""),
            "preferred_username": request.user.username,
        }
