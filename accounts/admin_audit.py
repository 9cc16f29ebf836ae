"""Operators' edits in the Django admin, in the audit log: one mixin every ModelAdmin that edits
plans, models, routes, providers, aliases, accounts, people or keys puts first in its bases.

Each save records admin.added or admin.changed with the fields that changed, before and after
(inline rows included); each delete records admin.deleted with what the row held. Secrets never
go in: fields whose name looks secret (``audit.is_secret_name``), encrypted fields (upstream API
keys) and a ModelAdmin's ``audit_exclude`` are listed by name only, under ``"not shown"``.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID
from weakref import WeakKeyDictionary

from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts import audit
from accounts.models import Account, AuditEvent, User

_M = TypeVar("_M", bound=models.Model)

HIDDEN = "not shown"


def shown(value: Any) -> Any:
    """A value as the audit log keeps it: plain JSON, rows by their name."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, QuerySet | models.Manager):
        rows = value.all() if isinstance(value, models.Manager) else value
        return sorted(str(row) for row in rows)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [shown(v) for v in value]
    if isinstance(value, dict):
        return {str(k): shown(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _model_field(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:  # a form-only field
        return None


def _is_hidden(model: type[models.Model], name: str, exclude: tuple[str, ...]) -> bool:
    field = _model_field(model, name)
    encrypted = field is not None and type(field).__name__.startswith("Encrypted")
    return name in exclude or encrypted or audit.is_secret_name(name)


def _value(obj: models.Model, name: str) -> Any:
    field = _model_field(type(obj), name)
    if field is not None and field.many_to_many:
        return shown(getattr(obj, name).all()) if obj.pk else []
    return shown(getattr(obj, name, None))


def _account_of(obj: models.Model) -> int | None:
    if isinstance(obj, Account):
        return obj.pk
    account_id = getattr(obj, "account_id", None)
    return account_id if isinstance(account_id, int) else None


def _diff(
    model: type[models.Model], form: Any, old: models.Model | None, exclude: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Before and after of the form's changed model fields; hidden ones named only."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    hidden: list[str] = []
    for name in form.changed_data:
        if _model_field(model, name) is None:
            continue
        if _is_hidden(model, name, exclude):
            hidden.append(name)
            continue
        if old is not None:
            before[name] = _value(old, name)
        after[name] = shown(form.cleaned_data.get(name))
    if hidden:
        after[HIDDEN] = sorted(hidden)
    return before, after


def _inline_changes(formsets: Any) -> dict[str, list[str]]:
    """What the inline rows of one save added, changed and deleted, by the rows' names."""
    changes: dict[str, list[str]] = {}
    for formset in formsets:
        label = str(formset.model._meta.verbose_name_plural)
        notes = [f"added {obj}" for obj in formset.new_objects]
        notes += [f"changed {obj}: {', '.join(fields)}" for obj, fields in formset.changed_objects]
        notes += [f"deleted {obj}" for obj in formset.deleted_objects]
        if notes:
            changes[label] = notes
    return changes


class AuditedAdmin(admin.ModelAdmin[_M]):
    """Records every add, change and delete this ModelAdmin makes, as the operator doing it."""

    # Model fields never written to the log, besides secret-looking and encrypted ones.
    audit_exclude: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The before values of a save, kept from save_model until save_related records it.
        self._audit_pending: WeakKeyDictionary[Any, tuple[dict[str, Any], dict[str, Any]]] = (
            WeakKeyDictionary()
        )

    def _record(
        self,
        request: HttpRequest,
        *,
        action: str,
        obj: models.Model,
        before: Any = None,
        after: Any = None,
    ) -> None:
        user = request.user if isinstance(request.user, User) else None
        audit.record(
            action=action,
            account=_account_of(obj),
            request=request,
            user=user,
            actor_kind=AuditEvent.ActorKind.OPERATOR,
            actor_label=user.email if user else "admin",
            target=obj,
            target_kind=obj._meta.model_name or "",
            before=before,
            after=after,
        )

    def save_model(self, request: HttpRequest, obj: _M, form: Any, change: bool) -> None:
        model = type(obj)
        old = self.get_queryset(request).filter(pk=obj.pk).first() if change else None
        self._audit_pending[form] = _diff(model, form, old, self.audit_exclude)
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        before, after = self._audit_pending.pop(form, ({}, {}))
        after = {**after, **_inline_changes(formsets)}
        if not change:
            self._record(request, action="admin.added", obj=form.instance, after=after)
        elif after:
            self._record(
                request, action="admin.changed", obj=form.instance, before=before, after=after
            )

    def delete_model(self, request: HttpRequest, obj: _M) -> None:
        self._record(request, action="admin.deleted", obj=obj, before=self._snapshot(obj))
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_M]) -> None:
        for obj in queryset:
            self._record(request, action="admin.deleted", obj=obj, before=self._snapshot(obj))
        super().delete_queryset(request, queryset)

    def _snapshot(self, obj: models.Model) -> dict[str, Any]:
        model = type(obj)
        return {
            field.name: _value(obj, field.name)
            for field in model._meta.concrete_fields
            if not _is_hidden(model, field.name, self.audit_exclude)
        }

    def record_bulk_change(
        self, request: HttpRequest, queryset: QuerySet[_M], **changes: Any
    ) -> None:
        """For admin actions that change rows with one UPDATE: an event per row, before the
        update (call it first)."""
        for obj in queryset:
            before = {name: _value(obj, name) for name in changes}
            after = {name: shown(value) for name, value in changes.items()}
            if before != after:
                self._record(request, action="admin.changed", obj=obj, before=before, after=after)
