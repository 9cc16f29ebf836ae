"""The documented public API (django-ninja): usage statistics at /v1/usage (also under /openai/
and /anthropic/), authorised by a tf- key, with its OpenAPI document at /v1/openapi.json and the
docs page at /v1/docs. Errors use the OpenAI envelope (the Anthropic one under /anthropic/)."""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.timezone import now
from ninja import NinjaAPI, Router, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.params import functions as params
from ninja.security import HttpBearer

from accounts import orgs
from accounts.models import ApiKey, Membership
from gateway import auth, errors, usage
from gateway.auth import Caller
from gateway.views.common import reply_error, with_limit_headers

API_VERSION = "1.0.0"


class TfKey(HttpBearer):
    """A tf- key, as ``Authorization: Bearer tf-...`` (OpenAI SDKs) or ``x-api-key: tf-...``
    (Anthropic SDKs)."""

    async def __call__(self, request: HttpRequest) -> Caller | None:
        secret = auth.bearer_from(request)
        if not secret:
            return None
        return await self.authenticate(request, secret)

    async def authenticate(self, request: HttpRequest, token: str) -> Caller | None:
        # No admission here to check the key's change counter: check it now.
        return await auth.authenticate_fresh(token)


api = NinjaAPI(
    title="Token Factory API",
    version=API_VERSION,
    description=(
        "Account-level endpoints of Token Factory. Authenticate with your tf- key as "
        "`Authorization: Bearer tf-...` or `x-api-key: tf-...`. Inference itself is served by "
        "the OpenAI-compatible surface (`/openai/v1/`) and the Anthropic-compatible one "
        "(`/anthropic/v1/`), documented by those SDKs."
    ),
    urls_namespace="public",
    auth=TfKey(),
)


def _error(request: HttpRequest, err: errors.GatewayError) -> HttpResponse:
    # The caller's envelope and request id headers, as on the inference endpoints.
    surface = errors.ANTHROPIC if request.path.startswith("/anthropic/") else errors.OPENAI
    return reply_error(err, surface)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path")]
    param = loc[0] if loc else None
    message = str(first.get("msg", "Invalid request."))
    text = f"Invalid '{param}': {message}." if param else f"{message}."
    return _error(request, errors.BadRequest(text.replace("..", "."), param=param))


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    if auth.bearer_from(request):
        message = (
            "Invalid API key: it is unknown, revoked or expired. Create a key in the dashboard."
        )
    else:
        message = (
            "No API key. Send your tf- key as 'Authorization: Bearer tf-...' "
            "or as 'x-api-key: tf-...'."
        )
    return _error(request, errors.Unauthorized(message))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, errors.GatewayError(exc.message, status=exc.status_code, code=None))


@api.exception_handler(errors.GatewayError)
def _gateway_error(request: HttpRequest, exc: errors.GatewayError) -> HttpResponse:
    return _error(request, exc)


# --- schemas ----------------------------------------------------------------------------------


class UsageTotals(Schema):
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_micros: int
    billed_micros: int
    cost: str
    tokenizer_counted_requests: int
    estimated_requests: int


class UsageBucket(UsageTotals):
    day: date | None = None
    model: str | None = None
    surface: str | None = None
    key_id: int | None = None
    key_name: str | None = None
    key_hint: str | None = None
    member_id: int | None = None  # the user who created the key; 0: nobody (or no key)
    member_email: str | None = None


class UsageReport(Schema):
    object: Literal["usage"] = "usage"
    start: datetime
    end: datetime
    period: str | None
    surface: str
    group_by: list[str]
    key_id: int | None
    member_id: int | None = None
    model: str | None
    totals: UsageTotals
    buckets: list[UsageBucket]


class ErrorDetail(Schema):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(Schema):
    error: ErrorDetail


def _totals(t: usage.Totals) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cached_tokens": t.cached_tokens,
        "total_tokens": t.total_tokens,
        "cost_micros": t.cost_micros,
        "billed_micros": t.billed_micros,
        "cost": t.cost,
        "tokenizer_counted_requests": t.tokenizer_counted_requests,
        "estimated_requests": t.estimated_requests,
    }


# --- usage ------------------------------------------------------------------------------------

router = Router(tags=["usage"])

_DESCRIPTION = """Token consumption, request counts and cost for the key's account, across both
surfaces. Counts are exact at any moment: hourly and daily rollups plus the requests not rolled up
yet. Days are UTC. Money is in micro-dollars (1 USD = 1,000,000); `cost` is the same amount as
text. `cost_micros` is the list-price value of the requests; `billed_micros` is the part taken
from the prepaid balance (requests inside the plan's token window are not).

Pick the range with `period` (`day`: today, `week`: the last 7 days, `month`: this calendar
month, the default) or with `start` and `end` (dates, both inclusive, or times on the hour).
`group_by` splits the totals into buckets by `model`, `key`, `member`, `day` and/or `surface`
(`group_by=model,day`); a key's member is the person who created it. `member` (an e-mail address
or a user id) keeps only the requests of the keys that member created. A key made by a developer
reads only the usage of the keys its maker made."""


def _visible_keys(caller: Caller) -> list[int] | None:
    """The keys whose usage the calling key may read: None for the whole account's, or, when
    the person who made it sees only their own usage (accounts.roles USAGE_OWN without
    USAGE_ALL, or no longer a member), the keys that person made."""
    creator = (
        ApiKey.objects.filter(pk=caller.key_id).values_list("created_by_id", flat=True).first()
    )
    if creator is None:
        return None
    membership = (
        Membership.objects.select_related("user")
        .filter(user_id=creator, account_id=caller.account_id)
        .first()
    )
    if membership is not None:
        return orgs.usage_key_ids(membership)
    made = ApiKey.objects.filter(account_id=caller.account_id, created_by_id=creator)
    return list(made.values_list("pk", flat=True))


def _key_filter(value: str | None, caller: Caller, visible: list[int] | None) -> int | None:
    if value is None or value == "":
        return None
    if value == "current":
        return caller.key_id
    if not value.isdigit():
        raise usage.InvalidQuery("key", f"key must be a key id or 'current', not {value!r}.")
    key_id = int(value)
    found = ApiKey.objects.filter(pk=key_id, account_id=caller.account_id).exists()
    if not found or (visible is not None and key_id not in visible):
        raise usage.InvalidQuery("key", f"This account has no key with id {key_id}.")
    return key_id


def _report(
    caller: Caller,
    *,
    period: str | None,
    start: str | None,
    end: str | None,
    surface: str,
    group_by: list[str],
    key: str | None,
    model: str | None,
    member: str | None = None,
) -> dict[str, Any]:
    grouping = usage.parse_group_by(group_by)
    visible = _visible_keys(caller)
    key_id = _key_filter(key, caller, visible)
    member_user, member_key_ids = (
        usage.member_keys(caller.account_id, member) if member else (None, None)
    )
    if visible is not None:
        member_key_ids = sorted(set(visible) & set(member_key_ids or visible))
    rng = usage.resolve_range(period=period, start=start, end=end, at=now())
    rep = usage.report(
        account_id=caller.account_id,
        start=rng.start,
        end=rng.end,
        surface=surface,
        group_by=grouping,
        key_id=key_id,
        model=model or None,
        key_ids=member_key_ids,
    )
    emails: dict[int, str] = {}
    if "member" in grouping:
        emails = dict(
            Membership.objects.filter(account_id=caller.account_id).values_list(
                "user_id", "user__email"
            )
        )
    names: dict[int, tuple[str, str]] = {}
    if "key" in grouping:
        names = {
            pk: (name, hint)
            for pk, name, hint in ApiKey.objects.filter(account_id=caller.account_id).values_list(
                "pk", "name", "hint"
            )
        }
    buckets = []
    for b in rep.buckets:
        row = _totals(b.totals)
        row.update(day=b.day, model=b.model, surface=b.surface, key_id=b.key_id)
        if b.key_id is not None:
            row["key_name"], row["key_hint"] = names.get(b.key_id, ("", ""))
        if b.member_id is not None:
            row["member_id"], row["member_email"] = b.member_id, emails.get(b.member_id, "")
        buckets.append(row)
    return {
        "object": "usage",
        "start": rep.start,
        "end": rep.end,
        "period": None if start else (period or "month"),
        "surface": rep.surface,
        "group_by": list(rep.group_by),
        "key_id": key_id,
        "member_id": member_user.pk if member_user is not None else None,
        "model": model or None,
        "totals": _totals(rep.totals),
        "buckets": buckets,
    }


@router.get(
    "/usage",
    response={200: UsageReport, 400: ErrorEnvelope, 401: ErrorEnvelope},
    summary="Usage statistics",
    description=_DESCRIPTION,
    operation_id="get_usage",
)
async def get_usage(
    request: HttpRequest,
    period: Literal["day", "week", "month"] | None = params.Query(
        None, description="day, week or month (the default); not with start/end"
    ),
    start: str | None = params.Query(
        None, description="first day (2025-01-01) or hour (2025-01-01T13:00:00Z), UTC"
    ),
    end: str | None = params.Query(
        None, description="last day, inclusive, or an hour, exclusive; default: today"
    ),
    surface: Literal["openai", "anthropic", "all"] = params.Query(
        "all", description="which API surface's requests to count"
    ),
    group_by: Annotated[
        list[str] | None,
        params.Query(
            None,
            description="model, key, member, day and/or surface, comma-separated or repeated",
        ),
    ] = None,
    key: str | None = params.Query(
        None, description="only this key's requests: its id, or 'current' for the calling key"
    ),
    model: str | None = params.Query(None, description="only this model's requests"),
    member: str | None = params.Query(
        None, description="only the requests of the keys this member created: e-mail or user id"
    ),
) -> Any:
    caller: Caller = request.auth  # type: ignore[attr-defined]
    if model is not None and ("\x00" in model or len(model) > 200):
        # A model name is at most 200 characters and never holds NUL (PostgreSQL's text refuses it).
        raise errors.BadRequest(
            "'model' must be a model name of at most 200 characters.",
            param="model",
        )
    if member is not None and ("\x00" in member or len(member) > 254):
        raise errors.BadRequest(
            "'member' must be a member's e-mail address or user id.", param="member"
        )
    try:
        return await sync_to_async(_report)(
            caller,
            period=period,
            start=start,
            end=end,
            surface=surface,
            group_by=group_by or [],
            key=key,
            model=model,
            member=member,
        )
    except usage.InvalidQuery as exc:
        raise errors.BadRequest(exc.message, param=exc.param) from exc


api.add_router("/", router)


def _view(route: str) -> Any:
    for pattern in api.urls[0]:
        if isinstance(pattern, URLPattern) and str(pattern.pattern) == route:
            return pattern.callback
    raise LookupError(route)


def _get_only(route: str) -> Any:
    """The view for ``route``, answering a wrong method in the caller's envelope with a request
    id (ninja's own 405 is a bare text page)."""
    callback = _view(route)

    @functools.wraps(callback)
    async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return _error(
                request, errors.MethodNotAllowed(f"{request.method} is not allowed here; use GET.")
            )
        response: HttpResponse = await callback(request, *args, **kwargs)
        caller = getattr(request, "auth", None)  # set by ninja once the key authenticated
        if isinstance(caller, Caller):
            auth.remember(request, caller)
        await with_limit_headers(request, response)
        return response

    return view


# The same view under each surface's prefix, so either SDK's base URL reaches it.
urlpatterns: list[Any] = [
    path("v1/usage", _get_only("usage")),
    path("v1/", api.urls),
    path("openai/v1/usage", _get_only("usage"), name="usage_openai"),
    path("anthropic/v1/usage", _get_only("usage"), name="usage_anthropic"),
]
