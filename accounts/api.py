"""Dashboard key-management API (DRF) under /api/keys/: list, create, update, rotate, revoke.

Signed-in browsers use the session (with CSRF) and act for the organisation the session has
chosen, with their role there; scripts send a management key, ``Authorization: Bearer
tf-mgmt-...`` (never an inference key: those only call models), which acts with an admin's
powers in its organisation, within its scopes. ``RolePermission`` asks accounts.roles.can for
the view's ``required_perms``, the same table the dashboard's ``requires`` reads. Every query is
scoped to the caller's organisation (and a developer's to the keys they made), and the full key
appears only in the response that creates it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit, budgets, keys, orgs, sso
from accounts.forms import models_for
from accounts.models import Account, ApiKey, AuditEvent, ManagementKey, Membership, User
from accounts.roles import Perm, can
from gateway import errors


class ManagementKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer tf-mgmt-...``: a management key acts for its organisation with an
    admin's powers (``membership``), within its scopes. An inference key (tf-prod-/tf-stag-/
    tf-dev-) is refused: a leaked key that may only call one model must not be able to widen
    itself."""

    def authenticate(self, request: Request) -> tuple[User, ManagementKey] | None:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret.startswith("tf-"):
            return None
        if not secret.startswith(keys.MANAGEMENT_PREFIX):
            raise exceptions.PermissionDenied(
                "Inference keys cannot manage keys. Create a management key (tf-mgmt-...) on "
                "the Keys page and send it instead."
            )
        key = keys.verify_management(secret)
        if key is None:
            raise exceptions.AuthenticationFailed("This management key is invalid or revoked.")
        owner = (
            Membership.objects.filter(account=key.account, role=Membership.Role.OWNER)
            .select_related("user")
            .order_by("created_at")
            .first()
        )
        user = owner.user if owner else key.created_by
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("This key's account has no active owner.")
        # What this request changes is recorded as done by the key, not by the owner it acts for.
        audit.act_as(audit.Actor(kind=AuditEvent.ActorKind.MANAGEMENT_KEY, label=key.hint))
        return user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class KeyScopes(BasePermission):
    """A management key reads with keys:read and changes keys only with keys:write; a signed-in
    owner may do both."""

    message = "This management key may only read keys (it lacks the keys:write scope)."

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ManagementKey):
            return True
        if request.method in SAFE_METHODS:
            return key.allows(ManagementKey.Scope.READ)
        return key.allows(ManagementKey.Scope.WRITE)


def membership(request: Request) -> Membership:
    """Whom the request acts as: a management key is an admin of its organisation (not saved;
    the user is the person who made it, or an owner); a session is the person's membership in
    the organisation the session has chosen."""
    cached = getattr(request, "tf_membership", None)
    if isinstance(cached, Membership):
        return cached
    key = request.auth
    if isinstance(key, ManagementKey):
        user = request.user
        assert isinstance(user, User)
        found = Membership(user=user, account=key.account, role=Membership.Role.ADMIN)
    else:
        found = orgs.current_membership(request._request)  # noqa: SLF001
    request.tf_membership = found  # type: ignore[attr-defined]
    return found


class RolePermission(BasePermission):
    """The view's ``required_perms`` (accounts.roles), checked for the caller's role."""

    message = "Your role in this organisation does not allow this. Ask an owner or admin."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        acting = membership(request)
        if not isinstance(request.auth, ManagementKey):
            # A session: an organisation that requires single sign-on refuses a password one
            # here as on its pages.
            refused = sso.refusal(request._request, acting)  # noqa: SLF001
            if refused is not None:
                self.message = refused
                return False
        return all(can(acting.role, perm) for perm in getattr(view, "required_perms", ()))


# Imported after ManagementKeyAuthentication exists: APIView reads
# DEFAULT_AUTHENTICATION_CLASSES (which names it) when rest_framework.views is first imported.
from rest_framework.views import APIView  # noqa: E402
from rest_framework.views import exception_handler as drf_exception_handler  # noqa: E402


def _account(request: Request) -> Account:
    return membership(request).account


def _maker(request: Request) -> User | None:
    """Who a new key is recorded as made by: the person, or for a management key the person
    who made that key (so removing them with their keys also stops what their scripts made),
    else the owner it acts through."""
    if isinstance(request.auth, ManagementKey) and request.auth.created_by is not None:
        return request.auth.created_by
    return request.user if isinstance(request.user, User) else None


def _keys(request: Request) -> Any:
    """The keys the caller may see: all of the organisation's with KEYS_ALL, else their own."""
    return orgs.keys_for(membership(request))


def _own_key(request: Request, key_id: int) -> ApiKey:
    key = _keys(request).select_related("account__plan").filter(pk=key_id).first()
    if key is None:
        raise exceptions.NotFound(f"No key with id {key_id} that you can manage in this account.")
    return key


class KeyOutput(serializers.ModelSerializer[ApiKey]):
    status = serializers.CharField(read_only=True)
    monthly_budget_usd = serializers.SerializerMethodField()
    replaced_by: serializers.PrimaryKeyRelatedField[ApiKey] = serializers.PrimaryKeyRelatedField(
        read_only=True
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "environment",
            "hint",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "replaced_by",
            "allowed_models",
            "rpm_limit",
            "tpm_limit",
            "monthly_budget_usd",
        ]
        read_only_fields = fields

    def get_monthly_budget_usd(self, key: ApiKey) -> str | None:
        """The key's monthly spend cap in dollars ("12.50"); null: none."""
        return budgets.as_usd(key.monthly_budget_micros)


def _issued(issued: keys.IssuedKey) -> dict[str, Any]:
    return {**KeyOutput(issued.key).data, "key": issued.secret}


class _KeySettings(serializers.Serializer[Any]):
    """Fields a key's owner may set; checked against the account's plan."""

    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=500
    )
    rpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    tpm_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    # Dollars ("12.50" or 12.5); null: no cap. Owners and admins only.
    monthly_budget_usd = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=30
    )

    @property
    def account(self) -> Account:
        account = self.context["account"]
        assert isinstance(account, Account)
        return account

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        offered = {m.model_id for m in models_for(self.account.plan)}
        unknown = sorted(set(value) - offered)
        if unknown:
            raise serializers.ValidationError(
                f"not available on your plan ({self.account.plan.name}): {', '.join(unknown)}"
            )
        return value

    def _cap(self, value: int | None, plan_cap: int | None, name: str) -> int | None:
        if value is not None and plan_cap is not None and value > plan_cap:
            raise serializers.ValidationError(
                f"{name} cannot be above your plan's {plan_cap} ({self.account.plan.name})"
            )
        return value

    def validate_monthly_budget_usd(self, value: str | None) -> int | None:
        try:
            return budgets.parse_usd(value)
        except budgets.BudgetError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_rpm_limit(self, value: int | None) -> int | None:
        return self._cap(value, self.account.plan.rpm_limit, "rpm_limit")

    def validate_tpm_limit(self, value: int | None) -> int | None:
        return self._cap(value, self.account.plan.tpm_limit, "tpm_limit")


class KeyCreateInput(_KeySettings):
    name = serializers.CharField(max_length=100)
    environment = serializers.ChoiceField(choices=ApiKey.Environment.choices, default="prod")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class KeyUpdateInput(_KeySettings):
    name = serializers.CharField(max_length=100, required=False)


class KeyRotateInput(serializers.Serializer[Any]):
    grace_hours = serializers.IntegerField(min_value=0, max_value=168, required=False)


def _check_budget_role(request: Request) -> None:
    # A management key acts as an admin of its organisation (``membership``).
    if not can(membership(request).role, Perm.BUDGETS):
        raise exceptions.PermissionDenied(
            "Only an owner or admin of the organisation can set a key's monthly budget."
        )


def _set_budget(request: Request, key: ApiKey, data: dict[str, Any]) -> None:
    """A monthly budget in the request: only an owner or admin (or a management key, which acts
    through an owner) may set one."""
    if "monthly_budget_usd" not in data:
        return
    _check_budget_role(request)
    # The audit reads the address and agent from Django's request under DRF's.
    django_request = request._request  # noqa: SLF001
    budgets.set_key_budget(
        key=key, budget_micros=data["monthly_budget_usd"], request=django_request
    )


def _key_error(exc: keys.KeyError_) -> exceptions.ValidationError:
    message = str(exc)
    param = next(
        (p for p in ("rpm_limit", "tpm_limit", "expires_at", "environment") if p in message),
        None,
    )
    return exceptions.ValidationError({param or "non_field_errors": [message]})


class _KeysApi(APIView):
    permission_classes = [IsAuthenticated, KeyScopes, RolePermission]
    required_perms: tuple[Perm, ...] = (Perm.KEYS_OWN,)

    def get_authenticate_header(self, request: Request) -> str:
        # Session auth comes first in settings and has no challenge, which would turn every
        # "who are you?" into 403; scripts should get 401 and know to send a key.
        return 'Bearer realm="api"'


class KeyListApi(_KeysApi):
    def get(self, request: Request) -> Response:
        rows = _keys(request).select_related("replaced_by")
        return Response({"object": "list", "data": KeyOutput(rows, many=True).data})

    def post(self, request: Request) -> Response:
        account = _account(request)
        form = KeyCreateInput(data=request.data, context={"account": account})
        form.is_valid(raise_exception=True)
        data = form.validated_data
        user = _maker(request)
        if "monthly_budget_usd" in data:
            _check_budget_role(request)
        try:
            issued = keys.issue(
                account=account,
                name=data["name"],
                environment=data["environment"],
                created_by=user,
                expires_at=data.get("expires_at"),
                allowed_models=data.get("allowed_models"),
                rpm_limit=data.get("rpm_limit"),
                tpm_limit=data.get("tpm_limit"),
            )
        except keys.KeyError_ as exc:
            raise _key_error(exc) from exc
        _set_budget(request, issued.key, data)
        return Response(_issued(issued), status=status.HTTP_201_CREATED)


class KeyDetailApi(_KeysApi):
    def get(self, request: Request, key_id: int) -> Response:
        return Response(KeyOutput(_own_key(request, key_id)).data)

    def patch(self, request: Request, key_id: int) -> Response:
        key = _own_key(request, key_id)
        form = KeyUpdateInput(data=request.data, context={"account": key.account}, partial=True)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        caps_given = "rpm_limit" in data or "tpm_limit" in data
        if "monthly_budget_usd" in data:
            _check_budget_role(request)
        try:
            keys.update(
                key=key,
                name=data.get("name"),
                allowed_models=data.get("allowed_models"),
                # keys.update sets both caps together: keep the one not being changed.
                rpm_limit=data.get("rpm_limit", key.rpm_limit) if caps_given else None,
                tpm_limit=data.get("tpm_limit", key.tpm_limit) if caps_given else None,
            )
        except keys.KeyError_ as exc:
            raise _key_error(exc) from exc
        _set_budget(request, key, data)
        return Response(KeyOutput(key).data)

    def delete(self, request: Request, key_id: int) -> Response:
        keys.revoke(key=_own_key(request, key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyRotateApi(_KeysApi):
    def post(self, request: Request, key_id: int) -> Response:
        key = _own_key(request, key_id)
        form = KeyRotateInput(data=request.data)
        form.is_valid(raise_exception=True)
        hours = form.validated_data.get("grace_hours", settings.KEY_ROTATION_GRACE_HOURS)
        user = _maker(request)
        try:
            issued = keys.rotate(key=key, grace=timedelta(hours=hours), by=user)
        except keys.KeyError_ as exc:
            raise _key_error(exc) from exc
        return Response({**_issued(issued), "replaces": key.pk}, status=status.HTTP_201_CREATED)


class KeyRevokeApi(_KeysApi):
    def post(self, request: Request, key_id: int) -> Response:
        key = keys.revoke(key=_own_key(request, key_id))
        return Response(KeyOutput(key).data)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _first_error(detail: Any) -> tuple[str | None, str]:
    """The first message in a DRF error tree and the top-level field it belongs to."""
    param: str | None = None
    while True:
        if isinstance(detail, dict | list) and not detail:
            return param, "Invalid request."
        if isinstance(detail, dict):
            field, detail = next(iter(detail.items()))
            if param is None and field != "non_field_errors":
                param = str(field)
        elif isinstance(detail, list):
            detail = detail[0]
        else:
            return param, str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error as ``{"error": {"message", "type", "param", "code"}}``."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    param: str | None = None
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_error(exc.detail)
        if param and param not in message:
            message = f"{param}: {message}"
    elif isinstance(exc, exceptions.ParseError):
        message = f"Could not parse the request body: {exc.detail}"
    elif isinstance(exc, exceptions.APIException):
        message = str(exc.detail)
    else:
        message = "The request failed."
    response.data = errors.envelope(
        message=message,
        type=_ERROR_TYPES.get(response.status_code, "api_error"),
        param=param,
        code=getattr(exc, "default_code", None),
    )
    return response
