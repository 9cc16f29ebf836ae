"""Admin for the model catalog (providers, models, routes) and the usage log (read-only).

Catalog edits (aliases too) drop this process's catalog snapshot once the transaction commits
and tell the other processes, which reload theirs within a second (gateway.catalog.invalidate)."""

from __future__ import annotations

import os
from typing import Any, TypeVar

import orjson
from django import forms
from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin_audit import AuditedAdmin
from billing import money
from billing.admin import dollars_formfield
from gateway import catalog, presets
from gateway.models import CatalogModel, ModelAlias, Provider, Route, UsageRecord

_M = TypeVar("_M", bound=models.Model)


def _clear_catalog_on_commit() -> None:
    transaction.on_commit(catalog.invalidate)


class CatalogAdmin(AuditedAdmin[_M]):
    """Any change to a catalog row invalidates the gateway's catalog snapshot."""

    def save_model(self, request: HttpRequest, obj: _M, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        _clear_catalog_on_commit()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        _clear_catalog_on_commit()

    def delete_model(self, request: HttpRequest, obj: _M) -> None:
        super().delete_model(request, obj)
        _clear_catalog_on_commit()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_M]) -> None:
        super().delete_queryset(request, queryset)
        _clear_catalog_on_commit()


def _https_urls(db_field: models.Field[Any, Any], **kwargs: Any) -> forms.Field | None:
    if isinstance(db_field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return db_field.formfield(**kwargs)


# The Provider fields a preset fills: on save, each one the operator left at its default takes
# the preset's value (the small static/js/provider_preset.js fills them as soon as it is picked).
PRESET_FIELDS = (
    "protocol",
    "auth_style",
    "url_style",
    "api_version",
    "region",
    "output_limit_field",
    "reports_stream_usage",
    "tokenizer",
    "tokenizer_url",
    "request_id_header",
    "forward_headers",
    "extra_headers",
)


def _preset_data() -> str:
    """Every preset's field values for the form's script (a data attribute: CSP allows no inline
    script), with the base URL as its template."""
    data = {}
    for key, preset in presets.PRESETS.items():
        values = preset.fields(base_url=preset.base_url)
        values["base_url"] = preset.base_url
        values["api_key_env"] = preset.api_key_env
        values["needs"] = list(preset.needs)
        data[key] = values
    return orjson.dumps(data).decode()


class ProviderForm(forms.ModelForm[Provider]):
    preset = forms.ChoiceField(
        required=False,
        choices=[("", "none (fill the fields by hand)"), *presets.choices()],
        help_text="fills the fields below for a known kind of server; change any of them after",
    )
    resource = forms.CharField(
        required=False,
        max_length=60,
        help_text="Azure OpenAI resource name: https://<resource>.openai.azure.com",
    )
    base_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text="e.g. https://api.openai.com/v1; empty: the preset's",
    )
    # Write-only: the stored key is never sent back to the browser.
    api_key = forms.CharField(
        required=False,
        max_length=300,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Used when no environment variable is named or set; stored encrypted and "
        "never shown again. Leave blank to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")

    class Meta:
        model = Provider
        formfield_callback = _https_urls
        fields = (
            "slug",
            "name",
            "preset",
            "protocol",
            "base_url",
            "api_key_env",
            "api_key",
            "connect_timeout_ms",
            "first_byte_timeout_ms",
            "total_timeout_ms",
            "is_active",
            *PRESET_FIELDS[1:],
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["preset"].widget.attrs["data-presets"] = _preset_data()
        self.fields["protocol"].required = False  # a preset sets it; checked in clean()

    def clean_api_key(self) -> str:
        value = str(self.cleaned_data.get("api_key") or "")
        return value or self.instance.api_key

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("clear_api_key"):
            cleaned["api_key"] = ""
        key = cleaned.get("preset") or ""
        if key and "preset" in self.changed_data:
            self._fill_from_preset(cleaned, presets.PRESETS[key])
        if not cleaned.get("base_url") and "base_url" not in self.errors:
            self.add_error("base_url", "Give the upstream's base URL, or pick a preset.")
        if not cleaned.get("protocol") and "protocol" not in self.errors:
            self.add_error("protocol", "Pick the upstream's protocol, or a preset.")
        return cleaned

    def _fill_from_preset(self, cleaned: dict[str, Any], preset: presets.Preset) -> None:
        """A newly picked preset: the fields left at their defaults, or at the values the
        previous preset gave them, take its values; what the operator set stays."""
        previous = presets.PRESETS.get(self.instance.preset) if self.instance.pk else None
        given_url = str(cleaned.get("base_url") or "")
        if previous is not None and given_url == self.instance.base_url:
            was = previous.fields(base_url=self.instance.base_url)
            if given_url == previous.base_url or "{" in previous.base_url:
                given_url = ""  # the old preset's own URL: the new one's replaces it
        else:
            was = {}
        try:
            values = preset.fields(
                base_url=given_url,
                resource=str(cleaned.get("resource") or ""),
                region=str(cleaned.get("region") or ""),
            )
        except ValueError as exc:
            self.add_error("resource" if "resource" in preset.needs else "region", str(exc))
            return
        cleaned["base_url"] = values["base_url"]
        for name in PRESET_FIELDS:
            field = Provider._meta.get_field(name)
            default = field.get_default() if isinstance(field, models.Field) else None
            untouched = cleaned.get(name) in (default, "", None) or (
                name in was and cleaned.get(name) == was[name]
            )
            if name == "protocol" or untouched:
                cleaned[name] = values[name]
        if preset.api_key_env and not cleaned.get("api_key_env"):
            cleaned["api_key_env"] = preset.api_key_env

    @property
    def changed_data(self) -> list[str]:
        # Never list api_key as "changed" just because the blank field differs from the stored
        # value; it changed only when something was typed or removal was asked for.
        changed = [name for name in super().changed_data if name != "api_key"]
        if self.data.get(self.add_prefix("api_key")) or "clear_api_key" in changed:
            changed.append("api_key")
        return changed


@admin.register(Provider)
class ProviderAdmin(CatalogAdmin[Provider]):
    form = ProviderForm
    list_display = ("slug", "name", "protocol", "base_url", "is_active", "key_source")
    list_filter = ("protocol", "is_active")
    search_fields = ("slug", "name", "base_url")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("preset", "name", "slug", "protocol", "resource", "base_url")}),
        (None, {"fields": ("region", "is_active")}),
        ("Credentials", {"fields": ("key_source", "api_key_env", "api_key", "clear_api_key")}),
        (
            "Timeouts (empty: the gateway's defaults)",
            {"fields": ("connect_timeout_ms", "first_byte_timeout_ms", "total_timeout_ms")},
        ),
        (
            "How to talk to it (a preset fills these)",
            {
                "fields": (
                    "auth_style",
                    "url_style",
                    "api_version",
                    "output_limit_field",
                    "reports_stream_usage",
                    "tokenizer",
                    "tokenizer_url",
                    "request_id_header",
                    "forward_headers",
                    "extra_headers",
                )
            },
        ),
    )
    readonly_fields = ("key_source",)

    class Media:
        js = ("js/provider_preset.js",)

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name == "base_url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="key source")
    def key_source(self, obj: Provider) -> str:
        if obj.pk is None:
            return "—"
        if obj.api_key_env and os.environ.get(obj.api_key_env):
            return f"${obj.api_key_env} (set)"
        stored = "stored key: set" if obj.api_key else "stored key: not set"
        if obj.api_key_env:
            return f"${obj.api_key_env} not set; {stored}"
        return stored


class RouteInline(admin.TabularInline[Route, CatalogModel]):
    model = Route
    extra = 0
    fields = (
        "provider",
        "upstream_model",
        "priority",
        "weight",
        "first_byte_timeout_ms",
        "is_active",
    )
    autocomplete_fields = ("provider",)


class CapabilityFilter(admin.SimpleListFilter):
    title = "capability"
    parameter_name = "capability"
    _fields = {
        "tools": "supports_tools",
        "vision": "supports_vision",
        "json": "supports_json",
        "thinking": "supports_thinking",
    }

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name.capitalize()) for name in self._fields]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        field = self._fields.get(self.value() or "")
        return queryset.filter(**{field: True}) if field else queryset


_PRICE_LABELS = {
    "input_price_micros": "Input price ($ per 1M tokens)",
    "output_price_micros": "Output price ($ per 1M tokens)",
    "cached_input_price_micros": "Cached input price ($ per 1M tokens)",
    "unit_price_micros": "Unit price ($ per unit)",
}


@admin.register(CatalogModel)
class CatalogModelAdmin(CatalogAdmin[CatalogModel]):
    list_display = (
        "model_id",
        "display_name",
        "kind",
        "tier",
        "input_price",
        "output_price",
        "context_window",
        "ultrafast",
        "is_active",
        "priced",
    )
    list_filter = ("kind", "tier", "is_active", CapabilityFilter, "owned_by", "ultrafast")
    search_fields = ("model_id", "display_name")
    inlines = (RouteInline,)
    actions = ("activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("model_id", "display_name", "owned_by", "description", "kind")}),
        (
            "Capabilities",
            {
                "fields": (
                    "supports_tools",
                    "supports_vision",
                    "supports_json",
                    "supports_thinking",
                    "context_window",
                    "max_output_tokens",
                    "ultrafast",
                )
            },
        ),
        (
            "Prices (empty: not priced, and an unpriced model is refused)",
            {
                "fields": (
                    "input_price_micros",
                    "output_price_micros",
                    "cached_input_price_micros",
                    "unit",
                    "unit_price_micros",
                )
            },
        ),
        ("Access", {"fields": ("tier", "is_active")}),
    )

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        if db_field.name in _PRICE_LABELS:
            return dollars_formfield(db_field, _PRICE_LABELS[db_field.name])
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="input / 1M", ordering="input_price_micros")
    def input_price(self, obj: CatalogModel) -> str:
        return money.format_price_per_million(obj.input_price_micros)

    @admin.display(description="output / 1M", ordering="output_price_micros")
    def output_price(self, obj: CatalogModel) -> str:
        return money.format_price_per_million(obj.output_price_micros)

    @admin.display(description="priced", boolean=True)
    def priced(self, obj: CatalogModel) -> bool:
        return obj.is_priced

    @admin.action(description="Activate selected models", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        self.record_bulk_change(request, queryset, is_active=True)
        count = queryset.update(is_active=True)
        _clear_catalog_on_commit()
        self.message_user(request, f"Activated {count} model(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected models", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        self.record_bulk_change(request, queryset, is_active=False)
        count = queryset.update(is_active=False)
        _clear_catalog_on_commit()
        self.message_user(request, f"Deactivated {count} model(s).", messages.SUCCESS)


@admin.register(Route)
class RouteAdmin(CatalogAdmin[Route]):
    list_display = ("model", "provider", "upstream_model", "priority", "weight", "is_active")
    list_editable = ("priority", "weight", "is_active")
    list_filter = ("provider", "is_active")
    list_select_related = ("model", "provider")
    search_fields = ("model__model_id", "upstream_model", "provider__slug")
    autocomplete_fields = ("model", "provider")


class ModelAliasForm(forms.ModelForm[ModelAlias]):
    class Meta:
        model = ModelAlias
        fields = ("name", "model", "priority", "is_active")

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name or any(c.isspace() for c in name):
            raise forms.ValidationError("A name has no spaces.")
        if catalog.base_name(name) != name:
            raise forms.ValidationError(
                "Leave out the [...] suffix: clients' suffixes are stripped before the lookup."
            )
        if not catalog.is_pattern(name) and CatalogModel.objects.filter(model_id=name).exists():
            raise forms.ValidationError(
                "A catalog model has this id, and a model's own id always wins over an alias."
            )
        return name


@admin.register(ModelAlias)
class ModelAliasAdmin(CatalogAdmin[ModelAlias]):
    """Names and glob patterns clients send, mapped to catalog models. Resolution order: the
    catalog id itself, exact aliases, patterns (longest literal part first), then priority; the
    first model the caller's key and plan may use serves the request."""

    form = ModelAliasForm
    list_display = ("name", "model", "match", "priority", "is_active")
    list_editable = ("priority", "is_active")
    list_filter = ("is_active",)
    list_select_related = ("model",)
    search_fields = ("name", "model__model_id")
    autocomplete_fields = ("model",)
    ordering = ("name", "priority", "id")

    @admin.display(description="match")
    def match(self, obj: ModelAlias) -> str:
        return "pattern" if obj.is_pattern else "exact"


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin[UsageRecord]):
    """The metered log: written by gateway.metering only."""

    list_display = (
        "created_at",
        "request_id",
        "account",
        "model",
        "requested_model",
        "surface",
        "status",
        "input_tokens",
        "output_tokens",
        "billed",
        "latency_ms",
    )
    list_filter = ("surface", "status", "stream", "is_estimate", "counted_by", "in_window")
    list_select_related = ("account",)
    date_hierarchy = "created_at"
    search_fields = ("request_id", "model", "requested_model", "account__name")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    @admin.display(description="billed", ordering="billed_micros")
    def billed(self, obj: UsageRecord) -> str:
        return money.format_usd(obj.billed_micros)
