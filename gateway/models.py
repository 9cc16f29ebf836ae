"""The model catalog: models people call, the upstream providers that serve them, and the routes
between the two."""

from __future__ import annotations

import os
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Expression

from gateway import crypto


class EncryptedCharField(models.CharField):  # type: ignore[type-arg]
    """Text stored as a Fernet token (``gateway.crypto``) and read back as the plain text: the
    column never holds the plain value. Tokens differ on every save, so only "" (empty) can be
    looked up. ``max_length`` sizes the column for the token; the plain text may hold up to
    ``crypto.MAX_KEY_CHARS`` characters (a longer one is refused with ValueError)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 1000)
        super().__init__(*args, **kwargs)

    def from_db_value(
        self, value: str | None, expression: Expression, connection: BaseDatabaseWrapper
    ) -> str | None:
        return None if value is None else crypto.decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return None if value is None else crypto.encrypt(str(value))


class Provider(models.Model):
    """An upstream and how to talk to it. A preset (``gateway/presets.py``) fills these fields for
    a known kind of server; an operator may then change any of them."""

    class Protocol(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        BEDROCK = "bedrock", "AWS Bedrock (Converse API)"

    class AuthStyle(models.TextChoices):
        PROTOCOL = "", "the protocol's own (Bearer for OpenAI, x-api-key for Anthropic)"
        BEARER = "bearer", "Authorization: Bearer <key>"
        X_API_KEY = "x-api-key", "x-api-key: <key>"
        API_KEY = "api-key", "api-key: <key> (Azure OpenAI)"
        SIGV4 = "sigv4", "AWS Signature Version 4"
        NONE = "none", "no credentials"

    class UrlStyle(models.TextChoices):
        STANDARD = "standard", "base URL + the protocol's path (/chat/completions, /v1/messages)"
        AZURE = "azure", "Azure deployments (/openai/deployments/<model>/...?api-version=)"

    class OutputLimitField(models.TextChoices):
        MAX_TOKENS = "max_tokens", "max_tokens"
        MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens"
        BOTH = "both", "both fields"

    class Tokenizer(models.TextChoices):
        ESTIMATE = "", "none: our estimate (tiktoken)"
        LLAMA_CPP = "llama.cpp", "llama.cpp server (POST /tokenize)"
        LLAMA_CPP_PYTHON = "llama-cpp-python", "llama-cpp-python (POST /extras/tokenize/count)"
        VLLM = "vllm", "vLLM (POST /tokenize)"
        ANTHROPIC = "anthropic", "Anthropic (POST /v1/messages/count_tokens)"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    protocol = models.CharField(max_length=20, choices=Protocol)
    base_url = models.URLField(
        help_text="e.g. https://api.openai.com/v1 or https://api.anthropic.com"
    )
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="environment variable holding the upstream API key"
    )
    # Encrypted at rest (gateway/crypto.py); shown nowhere once saved.
    api_key = EncryptedCharField(
        blank=True, help_text="used when no environment variable is named or set"
    )
    connect_timeout_ms = models.PositiveIntegerField(null=True, blank=True)
    first_byte_timeout_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="also bounds a whole non-streamed generation (the answer is its first byte)",
    )
    total_timeout_ms = models.PositiveIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    preset = models.CharField(
        max_length=40, blank=True, help_text="the preset that filled these fields (informational)"
    )
    auth_style = models.CharField(max_length=20, choices=AuthStyle, blank=True, default="")
    url_style = models.CharField(max_length=20, choices=UrlStyle, default=UrlStyle.STANDARD)
    api_version = models.CharField(
        max_length=40, blank=True, help_text="Azure OpenAI's api-version query parameter"
    )
    region = models.CharField(max_length=40, blank=True, help_text="AWS region (Bedrock)")
    output_limit_field = models.CharField(
        max_length=30,
        choices=OutputLimitField,
        default=OutputLimitField.MAX_TOKENS,
        help_text="which request field carries the output limit on OpenAI-protocol upstreams",
    )
    reports_stream_usage = models.BooleanField(
        default=True,
        help_text="honours stream_options.include_usage (when it does not, streams are counted "
        "with the tokenizer below)",
    )
    tokenizer = models.CharField(max_length=30, choices=Tokenizer, blank=True, default="")
    tokenizer_url = models.URLField(
        blank=True, help_text="the tokenizer endpoint, when not at its usual place on the server"
    )
    request_id_header = models.CharField(
        max_length=100,
        blank=True,
        help_text="header that carries our request id upstream; empty: not sent",
    )
    forward_headers = models.JSONField(
        default=list, blank=True, help_text="names of client request headers passed upstream"
    )
    extra_headers = models.JSONField(
        default=dict, blank=True, help_text="fixed headers sent on every upstream request"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def resolve_api_key(self) -> str:
        if self.api_key_env and os.environ.get(self.api_key_env):
            return os.environ[self.api_key_env]
        return self.api_key


class CatalogModel(models.Model):
    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDING = "embedding", "Embedding"
        TRANSCRIPTION = "transcription", "Transcription"
        SPEECH = "speech", "Speech"
        IMAGE = "image", "Image"

    class Unit(models.TextChoices):
        TOKENS = "tokens", "per 1M tokens"
        SECONDS = "seconds", "per second of audio"
        CHARACTERS = "characters", "per 1M characters"
        IMAGES = "images", "per image"

    model_id = models.CharField(max_length=200, unique=True, help_text="the public id callers send")
    display_name = models.CharField(max_length=200)
    owned_by = models.CharField(max_length=100, help_text="the lab that made it, e.g. DeepSeek")
    description = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=20, choices=Kind, default=Kind.CHAT)
    supports_tools = models.BooleanField(default=False)
    supports_vision = models.BooleanField(default=False)
    supports_json = models.BooleanField(default=False)
    supports_thinking = models.BooleanField(default=False)
    context_window = models.PositiveIntegerField(default=0, help_text="tokens")
    max_output_tokens = models.PositiveIntegerField(default=4096)
    # Prices are micro-dollars (1 USD = 1,000,000) per 1M tokens; empty means "not priced", and an
    # unpriced model is refused rather than served for free.
    input_price_micros = models.BigIntegerField(null=True, blank=True)
    output_price_micros = models.BigIntegerField(null=True, blank=True)
    cached_input_price_micros = models.BigIntegerField(null=True, blank=True)
    # Non-token kinds: micro-dollars per `unit` (per second, per image, per 1M characters).
    unit = models.CharField(max_length=20, choices=Unit, default=Unit.TOKENS)
    unit_price_micros = models.BigIntegerField(null=True, blank=True)
    ultrafast = models.BooleanField(default=False, help_text="served on LPU hardware")
    tier = models.CharField(
        max_length=20, default="standard", help_text="plans list the tiers they allow"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id"]
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_price_micros__gte=0) | models.Q(input_price_micros=None),
                name="model_input_price_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(output_price_micros__gte=0) | models.Q(output_price_micros=None),
                name="model_output_price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.model_id

    @property
    def is_priced(self) -> bool:
        if self.unit == self.Unit.TOKENS:
            if self.kind == self.Kind.EMBEDDING:
                return self.input_price_micros is not None
            return self.input_price_micros is not None and self.output_price_micros is not None
        return self.unit_price_micros is not None


class Route(models.Model):
    """How one catalog model is served by one provider. Lower priority numbers are tried first;
    among equal priorities, traffic splits by weight."""

    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="routes")
    upstream_model = models.CharField(max_length=200, help_text="the name the provider knows it by")
    priority = models.PositiveIntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)
    first_byte_timeout_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="overrides the provider's; also bounds a whole non-streamed generation",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["model", "priority", "-weight", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "provider", "upstream_model"], name="one_route_per_upstream_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.provider.slug}:{self.upstream_model}"


class ModelAlias(models.Model):
    """Another name for a catalog model: an exact name (``claude-sonnet-5``) or a glob pattern
    (``claude-opus-*``; ``*`` is any run of characters, ``?`` one) that clients may send.

    Resolution (``gateway.catalog.resolve``): a catalog model's own id always wins; then exact
    aliases, then patterns, the longer literal part first, then ``priority`` (lower first). The
    first matching alias whose model the key and plan may use serves the request, so a pattern
    can fall through to a cheaper tier's model; an alias never widens access."""

    name = models.CharField(
        max_length=200, help_text="an exact model name, or a pattern with * (any text) and ? (one)"
    )
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="aliases")
    priority = models.IntegerField(
        default=0, help_text="among equally specific matches, lower numbers are tried first"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "priority", "id"]
        verbose_name = "model alias"
        verbose_name_plural = "model aliases"
        constraints = [
            models.UniqueConstraint(fields=["name", "model"], name="one_alias_per_name_and_model")
        ]

    def __str__(self) -> str:
        return f"{self.name} → {self.model}"

    @property
    def is_pattern(self) -> bool:
        return "*" in self.name or "?" in self.name


class UsageRecord(models.Model):
    """One request, as metered: exactly one row per request id, whatever its outcome."""

    request_id = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="usage")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    surface = models.CharField(max_length=20)
    endpoint = models.CharField(max_length=40, default="chat")
    model = models.CharField(max_length=200, help_text="the catalog model that served it")
    # The name the client sent when it was not the served model's id: an alias, or an id with a
    # client's suffix such as "[1m]". Empty otherwise.
    requested_model = models.CharField(max_length=200, blank=True)
    route = models.CharField(max_length=300, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=60, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    is_estimate = models.BooleanField(default=False, help_text="counted by our tokenizer")
    counted_by = models.CharField(
        max_length=40,
        blank=True,
        default="",
        help_text="who counted the tokens: upstream (its usage report), tokenizer:<kind> (the "
        "upstream's tokenizer, for an answer sent without usage) or estimate (ours)",
    )
    # List-price value of the request and what was taken from the prepaid balance, in micro-dollars
    # (1 USD = 1,000,000); requests inside the plan's token window are not taken from the balance.
    cost_micros = models.BigIntegerField(default=0)
    billed_micros = models.BigIntegerField(default=0)
    in_window = models.BooleanField(default=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    stream = models.BooleanField(default=False)
    batch_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["account", "created_at"]),
            models.Index(fields=["account", "model", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status}"


class UsageRollup(models.Model):
    """Usage records summed per account, key, model and surface over one hour or one day (UTC).

    Written only by ``gateway.usage.roll_up``, which adds every record exactly once: the records
    up to ``RollupWatermark.last_record_id`` are in here, the ones after it are not yet.
    """

    class Granularity(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    # No index of its own: the unique constraint below leads with the account.
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # The key's id, or 0 for a request without one: a number rather than a nullable foreign key,
    # because NULLs never collide in a unique constraint and the upsert relies on collisions.
    key_id = models.BigIntegerField(default=0)
    model = models.CharField(max_length=200)
    surface = models.CharField(max_length=20)
    granularity = models.CharField(max_length=4, choices=Granularity)
    bucket = models.DateTimeField(help_text="start of the hour or day, UTC")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0, help_text="requests answered with a 4xx or 5xx")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    # Micro-dollars (1 USD = 1,000,000), summed from the records' cost_micros and billed_micros.
    cost_micros = models.BigIntegerField(default=0)
    billed_micros = models.BigIntegerField(default=0)
    tokenizer_counted_requests = models.BigIntegerField(
        default=0, help_text="requests counted by the upstream's tokenizer (it reported no usage)"
    )
    estimated_requests = models.BigIntegerField(
        default=0, help_text="requests whose tokens we estimated (the upstream reported none)"
    )

    class Meta:
        constraints = [
            # Leading with (account, granularity, bucket) lets this index serve /v1/usage too.
            models.UniqueConstraint(
                fields=["account", "granularity", "bucket", "key_id", "model", "surface"],
                name="one_rollup_per_bucket",
            )
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.granularity} {self.bucket:%Y-%m-%d %H:00} {self.model}"


class RollupWatermark(models.Model):
    """How far the rollups have got: every usage record with an id up to ``last_record_id`` is
    counted in ``UsageRollup``, and none after it. One row, locked while a rollup runs."""

    name = models.CharField(max_length=40, unique=True)
    last_record_id = models.BigIntegerField(default=0)
    rolled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ≤ {self.last_record_id}"


class BatchFile(models.Model):
    """A stored file: of the OpenAI Files API (a batch's input, output or errors) or of the
    Anthropic Files API (``files_api``: documents and images that messages refer to by id). The
    row describes it, the bytes live in Django's default storage under ``storage_name``."""

    class Purpose(models.TextChoices):
        BATCH = "batch", "Batch input"
        BATCH_OUTPUT = "batch_output", "Batch output"
        FILES_API = "files_api", "Anthropic Files API"

    id = models.CharField(primary_key=True, max_length=40)  # "file-..."
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="batch_files"
    )
    purpose = models.CharField(max_length=20, choices=Purpose)
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    line_count = models.PositiveIntegerField(default=0)
    storage_name = models.CharField(max_length=300)
    created_at = models.DateTimeField(db_index=True)
    deleted = models.BooleanField(default=False)
    # Files API files: the type sniffed at upload, and when the bytes expire (null: never).
    mime_type = models.CharField(max_length=120, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} {self.filename}"


class Batch(models.Model):
    """One batch of either surface. ``status`` keeps OpenAI's states (Anthropic's
    processing_status is derived from it); the counts move as lines finish."""

    class Status(models.TextChoices):
        VALIDATING = "validating"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        FAILED = "failed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    id = models.CharField(primary_key=True, max_length=40)  # "batch_..." or "msgbatch_..."
    account = models.ForeignKey(
        "accounts.Account", on_delete=models.CASCADE, related_name="batches"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="batches"
    )
    surface = models.CharField(max_length=20)
    endpoint = models.CharField(max_length=60)
    input_file = models.ForeignKey(
        BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    output_file = models.ForeignKey(
        BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error_file = models.ForeignKey(
        BatchFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=20, choices=Status, default=Status.VALIDATING)
    total_count = models.PositiveIntegerField(default=0)
    completed_count = models.PositiveIntegerField(default=0)  # lines that succeeded
    failed_count = models.PositiveIntegerField(default=0)
    cancelled_count = models.PositiveIntegerField(default=0)
    expired_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # The lease: the one runner (host-pid-thread) driving the batch, and when it last said so.
    runner = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"


class BatchLine(models.Model):
    """One request of a batch. ``request_id`` is fixed when the line is created, so its usage
    record and ledger charge are idempotent however often a crashed worker retries it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="lines")
    index = models.PositiveIntegerField()
    custom_id = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=64, unique=True)
    body = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    runner = models.CharField(max_length=200, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    # {"status", "type", "code", "message", "param"}; set at creation for a line that cannot run.
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "index"], name="batch_line_unique_index")
        ]
        indexes = [models.Index(fields=["batch", "status"])]

    def __str__(self) -> str:
        return f"{self.batch_id}#{self.index} {self.status}"
