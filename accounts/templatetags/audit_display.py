"""How the audit log page shows an action and a before/after value."""

from __future__ import annotations

from typing import Any

import orjson
from django import template

from accounts.audit import ACTIONS

register = template.Library()


@register.filter
def audit_action(action: str) -> str:
    return ACTIONS.get(action, action)


@register.filter
def audit_value(value: Any) -> str:
    """A value in one short line: lists joined, nothing as a dash, long text cut."""
    if value is None or value == "" or value == []:
        text = "—"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    return text if len(text) <= 120 else text[:119] + "…"
