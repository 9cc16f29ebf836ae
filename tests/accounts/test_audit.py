"""The audit log: each action done for real (pages and the key API over the test client, the
management API with a tf-mgmt- key, the admin, management commands) leaves exactly one event with
the right actor, target, before and after, and nothing secret anywhere in the stored row; the
/audit/ page filters, pages and exports for owners and admins only, one organisation at a time;
the table refuses changes and deletions, in code and in PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.forms.models import model_to_dict
from django.test import Client
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts import audit, keys
from accounts.models import Account, ApiKey, AuditEvent, ManagementKey, Membership, User
from accounts.services import account_for
from billing import ledger
from billing.models import LedgerEntry, Plan
from gateway.models import CatalogModel, Provider, Route
from tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
BROWSER = "Mozilla/5.0 (audit test)"


@pytest.fixture(autouse=True)
def _mail_tasks_run_here(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True


def only(action: str, **match: Any) -> AuditEvent:
    """The one event of ``action`` (failing when there are none or several)."""
    found = list(AuditEvent.objects.filter(action=action, **match))
    assert len(found) == 1, f"{len(found)} {action} events: {found}"
    return found[0]


def before(event: AuditEvent) -> dict[str, Any]:
    assert isinstance(event.before, dict)
    return event.before


def after(event: AuditEvent) -> dict[str, Any]:
    assert isinstance(event.after, dict)
    return event.after


def row_text(event: AuditEvent) -> str:
    """Everything stored for the event, as one string to search for secrets."""
    return json.dumps(model_to_dict(event), default=str) + str(event)


def assert_secret_free(event: AuditEvent, *secrets: str) -> None:
    text = row_text(event)
    for secret in secrets:
        assert secret and secret not in text, f"{secret[:12]}... is in {event.action}"


def signed_in(user: User) -> Client:
    client = Client(HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="203.0.113.7")
    client.force_login(user)
    return client


def member(account: Account, role: str, email: str) -> User:
    user = factories.UserFactory.create(email=email)
    Membership.objects.create(user=user, account=account, role=role)
    return user


# --- people: sign-up, log-in, log-out, passwords ----------------------------------------------


def test_it_records_a_sign_up_as_the_new_person(client: Client) -> None:
    password = "a-long pass phrase"
    client.post(
        "/signup/",
        {"email": "dana@example.com", "password1": password, "password2": password},
        HTTP_USER_AGENT=BROWSER,
    )

    event = only("user.signup")
    dana = User.objects.get(email="dana@example.com")
    assert event.actor_kind == "user" and event.actor_user_id == dana.pk
    assert event.account_id == account_for(dana).pk
    assert (event.target_kind, event.target_id) == ("user", str(dana.pk))
    assert event.after == {"email": "dana@example.com", "name": "", "plan": "test"}
    assert event.ip == "127.0.0.1" and event.user_agent == BROWSER
    assert_secret_free(event, password, dana.password)


def test_it_records_createaccount_as_an_operator() -> None:
    call_command("createaccount", "--email", "erin@example.com", "--password", "x-long-password1")

    event = only("user.signup")
    assert (event.actor_kind, event.actor_label) == ("operator", "manage.py createaccount")
    assert event.actor_user_id is None
    assert_secret_free(event, "x-long-password1")


def test_it_records_log_ins_failed_log_ins_and_log_outs(client: Client, alice: User) -> None:
    client.post("/login/", {"username": "alice@example.com", "password": "wrong guess 123"})
    client.post("/login/", {"username": "alice@example.com", "password": PASSWORD})
    client.post("/logout/")

    failed = only("user.login_failed")
    assert (failed.actor_kind, failed.actor_label) == ("user", "alice@example.com")
    assert failed.account_id is None and failed.actor_user_id is None
    assert failed.ip == "127.0.0.1"
    assert_secret_free(failed, "wrong guess 123", PASSWORD)
    login = only("user.login")
    assert login.actor_user_id == alice.pk and login.account_id == account_for(alice).pk
    assert_secret_free(login, PASSWORD, alice.password)
    logout = only("user.logout")
    assert logout.actor_user_id == alice.pk and logout.account_id == account_for(alice).pk


def test_it_records_a_password_change_without_the_passwords(alice: User) -> None:
    client = signed_in(alice)
    new = "a brand new pass phrase"
    response = client.post(
        "/password/change/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302

    event = only("user.password_changed")
    alice.refresh_from_db()
    assert event.actor_user_id == alice.pk and event.target_id == str(alice.pk)
    assert event.ip == "203.0.113.7" and event.user_agent == BROWSER
    assert_secret_free(event, PASSWORD, new, alice.password)


def test_it_records_a_password_reset_by_the_links_holder(client: Client, alice: User) -> None:
    uid = urlsafe_base64_encode(force_bytes(alice.pk))
    token = default_token_generator.make_token(alice)
    form_url = client.get(f"/password/reset/{uid}/{token}/")["Location"]
    new = "reset pass phrase 42"
    response = client.post(form_url, {"new_password1": new, "new_password2": new})
    assert response.status_code == 302, response.content

    event = only("user.password_reset")
    assert event.actor_user_id == alice.pk and event.account_id == account_for(alice).pk
    assert_secret_free(event, token, new, PASSWORD)


# --- keys ---------------------------------------------------------------------------------------


def _api(client: Client, method: str, url: str, body: Any = None, **headers: Any) -> Any:
    send = getattr(client, method)
    return send(url, json.dumps(body or {}), content_type="application/json", **headers)


def test_it_records_each_key_change_through_the_dashboard_api(alice: User) -> None:
    client = signed_in(alice)
    account = account_for(alice)
    created = _api(client, "post", "/api/keys/", {"name": "backend", "rpm_limit": 10}).json()
    secret = created["key"]
    _api(client, "patch", f"/api/keys/{created['id']}/", {"name": "backend v2", "rpm_limit": 5})
    rotated = _api(client, "post", f"/api/keys/{created['id']}/rotate/", {"grace_hours": 1}).json()
    _api(client, "post", f"/api/keys/{rotated['id']}/revoke/")

    made = only("key.created")
    assert made.actor_user_id == alice.pk and made.account_id == account.pk
    assert (made.target_kind, made.target_id) == ("apikey", str(created["id"]))
    assert after(made)["name"] == "backend" and after(made)["rpm_limit"] == 10
    assert after(made)["hint"] == created["hint"]
    changed = only("key.limits_changed")
    assert changed.before == {"name": "backend", "rpm_limit": 10}
    assert changed.after == {"name": "backend v2", "rpm_limit": 5}
    turned = only("key.rotated")
    assert turned.target_id == str(created["id"])
    assert after(turned)["successor_id"] == rotated["id"]
    gone = only("key.revoked")
    assert gone.target_id == str(rotated["id"]) and after(gone)["status"] == "revoked"
    hashes = [keys.hash_key(secret), keys.hash_key(rotated["key"])]
    for event in AuditEvent.objects.filter(action__startswith="key."):
        assert event.ip == "203.0.113.7" and event.user_agent == BROWSER
        assert_secret_free(event, secret, rotated["key"], *hashes)


def test_it_records_key_changes_made_with_a_management_key_as_that_key(alice: User) -> None:
    account = account_for(alice)
    mgmt, mgmt_secret = factories.management_key(account, name="deploy script")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {mgmt_secret}"}
    client = Client()
    created = _api(client, "post", "/api/keys/", {"name": "from ci"}, **auth).json()
    _api(client, "delete", f"/api/keys/{created['id']}/", **auth)

    for action in ("key.created", "key.revoked"):
        event = only(action)
        assert (event.actor_kind, event.actor_label) == ("management_key", mgmt.hint)
        assert event.actor_user_id is None and event.account_id == account.pk
        assert_secret_free(event, mgmt_secret, created["key"], mgmt.key_hash)


def test_it_records_issuekey_as_an_operator(alice: User) -> None:
    out = io.StringIO()
    call_command("issuekey", "--email", "alice@example.com", stdout=out)
    secret = out.getvalue().strip()

    event = only("key.created")
    assert (event.actor_kind, event.actor_label) == ("operator", "manage.py issuekey")
    assert_secret_free(event, secret, keys.hash_key(secret))


def test_it_records_management_keys_made_and_revoked_on_the_keys_page(alice: User) -> None:
    client = signed_in(alice)
    client.post("/keys/management/", {"mgmt-name": "deploy", "mgmt-access": "keys:write"})
    key = ManagementKey.objects.get(name="deploy")
    client.post(f"/keys/management/{key.pk}/revoke/")

    made = only("management_key.created")
    assert made.actor_user_id == alice.pk and after(made)["scopes"] == ["keys:read", "keys:write"]
    revoked = only("management_key.revoked")
    assert revoked.target_id == str(key.pk)
    for event in (made, revoked):
        assert_secret_free(event, key.key_hash)


# --- plans and money ----------------------------------------------------------------------------


def test_it_records_a_plan_change_on_the_plans_page(alice: User) -> None:
    client = signed_in(alice)
    client.post("/plans/", {"plan": "pro"})

    event = only("plan.changed")
    assert event.actor_user_id == alice.pk and event.account_id == account_for(alice).pk
    assert (event.before, event.after) == ({"plan": "test"}, {"plan": "pro"})


def test_it_records_a_credit_command_as_an_operator_adjustment(alice: User) -> None:
    call_command(
        "credit", "--email", "alice@example.com", "--amount", "12.50", "--reason", "goodwill",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip

    event = only("billing.adjustment")
    assert (event.actor_kind, event.actor_label) == ("operator", "manage.py credit")
    assert event.account_id == account_for(alice).pk
    assert after(event)["amount_micros"] == 12_500_000
    assert event.before == {"balance_micros": 0}
    assert event.target_label == "goodwill"


def test_it_records_a_refund_once_however_often_it_is_posted(alice: User) -> None:
    account = account_for(alice)
    with audit.acting(audit.operator("support@example.com")):
        for _ in range(2):
            ledger.credit(
                account=account,
                amount_micros=3_000_000,
                idempotency_key="refund:r1",
                kind=LedgerEntry.Kind.REFUND,
                description="refund of a failed batch",
            )

    event = only("billing.refund")
    assert event.actor_label == "support@example.com" and after(event)["amount_micros"] == 3_000_000


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def operator() -> User:
    return User.objects.create_superuser(email="ops@example.com", password="ops pass phrase 1")


def _admin_client(user: User) -> Client:
    client = Client(HTTP_USER_AGENT="ops-browser", REMOTE_ADDR="198.51.100.4")
    client.force_login(user)
    return client


def _url(model: type[Any], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_it_records_an_admin_plan_edit_with_before_and_after(operator: User) -> None:
    factories.plan()
    plan = Plan.objects.get(slug="pro")
    client = _admin_client(operator)
    page = client.get(_url(Plan, "change", plan.pk))
    data = {
        name: value
        for name, value in page.context["adminform"].form.initial.items()
        if value is not None
    }
    data.update(
        rpm_limit="77",
        model_tiers=json.dumps(plan.model_tiers),
        monthly_price_micros="20",
        is_public="on" if plan.is_public else "",
        is_default="",
    )
    response = client.post(_url(Plan, "change", plan.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    event = only("admin.changed")
    assert (event.actor_kind, event.actor_label) == ("operator", "ops@example.com")
    assert event.actor_user_id == operator.pk and event.account_id is None
    assert (event.target_kind, event.target_id) == ("plan", str(plan.pk))
    assert before(event)["rpm_limit"] == plan.rpm_limit and after(event)["rpm_limit"] == 77
    assert (event.ip, event.user_agent) == ("198.51.100.4", "ops-browser")


def _provider_data(provider: Provider, **overrides: str) -> dict[str, str]:
    data = {
        "name": provider.name,
        "slug": provider.slug,
        "protocol": provider.protocol,
        "base_url": provider.base_url,
        "is_active": "on",
        "api_key_env": provider.api_key_env,
        "api_key": "",
        "connect_timeout_ms": "",
        "first_byte_timeout_ms": "",
        "total_timeout_ms": "",
        "url_style": provider.url_style,
        "output_limit_field": provider.output_limit_field,
        "reports_stream_usage": "on" if provider.reports_stream_usage else "",
        "forward_headers": json.dumps(provider.forward_headers),
        "extra_headers": json.dumps(provider.extra_headers),
        "request_id_header": provider.request_id_header,
    }
    data.update(overrides)
    return data


def test_it_names_a_changed_provider_key_but_never_stores_it(operator: User) -> None:
    provider = factories.provider(base_url="https://upstream.example/v1", slug="up-one")
    client = _admin_client(operator)
    url = _url(Provider, "change", provider.pk)
    old_key = provider.api_key
    new_key = "sk-upstream-very-secret-0123456789"
    headers = json.dumps({"Authorization": "Bearer gateway-proxy-secret", "x-team": "ml"})
    response = client.post(
        url, _provider_data(provider, name="Renamed", api_key=new_key, extra_headers=headers)
    )
    assert response.status_code == 302, response.content

    event = only("admin.changed")
    assert (before(event)["name"], after(event)["name"]) == (provider.name, "Renamed")
    assert after(event)["not shown"] == ["api_key"] and "api_key" not in before(event)
    assert after(event)["extra_headers"] == {"x-team": "ml"}
    assert "gateway-proxy-secret" not in row_text(event)
    assert_secret_free(event, new_key, *([old_key] if old_key else []))


def test_it_records_admin_additions_and_deletions(operator: User) -> None:
    provider = factories.provider(base_url="https://upstream.example/v1", slug="up-two")
    model = factories.model("zebra-chat-1", routes=[(provider, "zebra-0312")])
    route = Route.objects.get(model=model)
    client = _admin_client(operator)

    client.post(_url(Route, "delete", route.pk), {"post": "yes"})
    client.post(
        _url(CatalogModel, "changelist"),
        {"action": "deactivate", "_selected_action": [model.pk]},
    )

    deleted = only("admin.deleted")
    assert deleted.target_kind == "route" and before(deleted)["upstream_model"] == "zebra-0312"
    assert deleted.after is None
    deactivated = only("admin.changed")
    assert deactivated.target_id == str(model.pk)
    assert (deactivated.before, deactivated.after) == ({"is_active": True}, {"is_active": False})


def test_it_records_an_admin_balance_adjustment_and_plan_move_as_the_operator(
    operator: User, alice: User
) -> None:
    account = account_for(alice)
    client = _admin_client(operator)
    client.post(
        _url(Account, "changelist"),
        {
            "action": "adjust_balance",
            "_selected_action": [account.pk],
            "apply": "1",
            "amount": "-1.5",
            "reason": "double charge",
            "idempotency_key": "8a7f8a52-4a5e-4ac2-9d4b-6d1f2e3f4a5b",
        },
    )
    pro = Plan.objects.get(slug="pro")
    response = client.post(
        _url(Account, "change", account.pk),
        {
            "name": account.name,
            "plan": str(pro.pk),
            "is_active": "on",
            "stripe_customer_id": "",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
            "api_keys-MIN_NUM_FORMS": "0",
            "api_keys-MAX_NUM_FORMS": "0",
        },
    )
    assert response.status_code == 302

    adjusted = only("billing.adjustment")
    assert (adjusted.actor_kind, adjusted.actor_label) == ("operator", "ops@example.com")
    assert after(adjusted)["amount_micros"] == -1_500_000
    moved = only("plan.changed")
    assert moved.actor_kind == "operator" and moved.after == {"plan": "pro"}
    edited = only("admin.changed")
    assert (edited.before, edited.after) == ({"plan": "Test"}, {"plan": "Token Pro"})
    assert edited.account_id == account.pk


def test_it_records_an_operator_revoking_keys_and_changing_a_password(
    operator: User, alice: User
) -> None:
    key, secret = factories.api_key(account_for(alice), name="leaked")
    client = _admin_client(operator)
    client.post(_url(ApiKey, "changelist"), {"action": "revoke_keys", "_selected_action": [key.pk]})
    new = "operator set this 99"
    response = client.post(
        reverse("admin:auth_user_password_change", args=[alice.pk]),
        {"password1": new, "password2": new, "usable_password": "true"},
    )
    assert response.status_code == 302

    revoked = only("key.revoked")
    assert (revoked.actor_kind, revoked.actor_label) == ("operator", "ops@example.com")
    changed = only("user.password_changed")
    assert changed.actor_kind == "operator" and changed.target_id == str(alice.pk)
    assert_secret_free(revoked, secret, key.key_hash)
    assert_secret_free(changed, new, PASSWORD)


def test_operators_read_the_log_in_the_admin_and_cannot_change_it(
    operator: User, alice: User
) -> None:
    factories.api_key(account_for(alice), name="backend")
    event = only("key.created")
    client = _admin_client(operator)

    listing = client.get(_url(AuditEvent, "changelist"), {"q": "backend"})
    assert listing.status_code == 200 and b"backend" in listing.content
    assert client.get(_url(AuditEvent, "change", event.pk)).status_code == 200
    assert client.get(_url(AuditEvent, "add")).status_code == 403
    assert client.post(_url(AuditEvent, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


# --- usage exports ------------------------------------------------------------------------------


def test_it_records_a_usage_export(alice: User) -> None:
    client = signed_in(alice)
    response = client.get("/usage/export.csv", {"period": "week"})
    assert response.status_code == 200

    event = only("usage.exported")
    assert event.actor_user_id == alice.pk and event.account_id == account_for(alice).pk
    assert after(event)["period"] == "week"


# --- the page -----------------------------------------------------------------------------------


def test_it_shows_owners_their_organisations_log_newest_first(alice: User, charlie: User) -> None:
    mine = account_for(alice)
    factories.api_key(mine, name="first key")
    factories.api_key(mine, name="second key")
    factories.api_key(account_for(charlie), name="charlies secret project")

    response = signed_in(alice).get("/audit/")

    assert response.status_code == 200
    page = response.content.decode()
    assert page.index("second key") < page.index("first key")
    assert "charlies secret project" not in page
    assert "Created a key" in page
    assert 'href="/audit/"' in page  # the nav link


def test_it_filters_by_category_action_actor_target_and_date(alice: User) -> None:
    account = account_for(alice)
    client = signed_in(alice)
    created = _api(client, "post", "/api/keys/", {"name": "alpha"}).json()
    _api(client, "post", f"/api/keys/{created['id']}/revoke/")
    factories.api_key(account, name="beta")  # no person: a system event
    client.post("/plans/", {"plan": "pro"})

    def shown(**query: str) -> list[str]:
        response = client.get("/audit/", query)
        assert response.status_code == 200, response.content
        return [event.action for event, _ in response.context["rows"]]

    assert shown(action="key") == ["key.created", "key.revoked", "key.created"]
    assert shown(action="key.revoked") == ["key.revoked"]
    assert shown(action="plan") == ["plan.changed"]
    # Signing the test client in is a log-in like any other.
    assert shown(actor="alice@") == ["plan.changed", "key.revoked", "key.created", "user.login"]
    assert shown(target="beta") == ["key.created"]
    today = AuditEvent.objects.first().at.date()  # type: ignore[union-attr]
    assert len(shown(since=str(today), until=str(today))) == 5
    assert shown(until="2000-01-01") == []
    bad = client.get("/audit/", {"since": "yesterday"})
    assert bad.status_code == 400 and b"must be a date" in bad.content


def test_it_pages_long_logs(alice: User, settings: Any) -> None:
    account = account_for(alice)
    for n in range(55):
        audit.record(action="usage.exported", account=account, target_label=f"export {n}")
    client = signed_in(alice)

    first = client.get("/audit/")
    second = client.get("/audit/", {"page": "2"})

    # 55 exports and the client's log-in.
    assert len(first.context["rows"]) == 50 and len(second.context["rows"]) == 6
    assert first.context["rows"][1][0].target_label == "export 54"
    assert b"Older" in first.content and b"Newer" in second.content


def test_it_shows_amounts_in_dollars_on_the_page(alice: User) -> None:
    account = account_for(alice)
    audit.record(
        action="member.budget_changed",
        account=account,
        target_label="bob@example.com",
        before={"monthly_budget_micros": None},
        after={"monthly_budget_micros": 2_500_000},
    )
    page = signed_in(alice).get("/audit/").content.decode()
    assert "monthly_budget</span>: $2.50" in page and "2500000" not in page


def test_it_downloads_the_filtered_rows_as_csv_and_records_the_download(alice: User) -> None:
    account = account_for(alice)
    client = signed_in(alice)
    created = _api(client, "post", "/api/keys/", {"name": "=cmd|calc"}).json()
    client.post("/plans/", {"plan": "pro"})

    response = client.get("/audit/export.csv", {"action": "key"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response.streaming
    text = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["action"] for row in rows] == ["key.created"]
    assert rows[0]["actor"] == "alice@example.com" and rows[0]["what"] == "Created a key"
    assert rows[0]["target"] == "'" + f"=cmd|calc ({created['hint']})"
    assert json.loads(rows[0]["after"])["name"] == "=cmd|calc"
    assert created["key"] not in text
    exported = only("audit.exported")
    assert exported.account_id == account.pk and exported.after == {"action": "key"}


@pytest.mark.parametrize("role", ["developer", "viewer", "billing"])
def test_it_refuses_the_page_and_the_csv_below_admin(alice: User, role: str) -> None:
    person = member(account_for(alice), role, f"{role}@example.com")
    Membership.objects.filter(user=person).exclude(role=role).delete()
    client = signed_in(person)

    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    assert not AuditEvent.objects.filter(action="audit.exported").exists()
    assert b'href="/audit/"' not in client.get("/usage/").content


def test_an_admin_sees_the_page_and_a_stranger_only_their_own(alice: User, charlie: User) -> None:
    mine = account_for(alice)
    admin = member(mine, "admin", "admin@example.com")
    Membership.objects.filter(user=admin).exclude(account=mine).delete()
    factories.api_key(mine, name="alices key")
    assert b"alices key" in signed_in(admin).get("/audit/").content

    theirs = signed_in(charlie)
    assert b"alices key" not in theirs.get("/audit/").content
    assert b"alices key" not in b"".join(
        theirs.get("/audit/export.csv").streaming_content  # type: ignore[attr-defined]
    )


def test_signed_out_visitors_are_sent_to_log_in(client: Client) -> None:
    response = client.get("/audit/")
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- append-only --------------------------------------------------------------------------------


def test_it_refuses_to_change_or_delete_events_through_the_orm(alice: User) -> None:
    event = audit.record(action="usage.exported", account=account_for(alice))
    event.target_label = "tampered"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(target_label="tampered")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).target_label == ""


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_the_database_refuses_raw_updates_and_deletes(alice: User) -> None:
    event = audit.record(action="usage.exported", account=account_for(alice))
    for sql in (
        "UPDATE accounts_auditevent SET target_label = 'tampered' WHERE id = %s",
        "DELETE FROM accounts_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk, target_label="").exists()


def test_it_drops_whatever_is_named_like_a_secret_and_keeps_the_rest() -> None:
    event = audit.record(
        action="admin.changed",
        after={
            "window_tokens": 5,
            "max_output_tokens": 10,
            "extra_headers": {
                "Authorization": "Bearer abc",
                "x-api-key": "k1",
                "X-Auth-Token": "t1",
                "anthropic-version": "2023-06-01",
            },
            "access_token": "t2",
            "key_hash": "h",
            "password": "p",
            "note": "tf-prod-" + "a" * 40,
        },
    )
    assert event.after == {
        "window_tokens": 5,
        "max_output_tokens": 10,
        "extra_headers": {"anthropic-version": "2023-06-01"},
        "note": "tf-prod-...",
    }


def test_it_refuses_an_action_it_does_not_know() -> None:
    with pytest.raises(ValueError, match=r"add it to accounts\.audit\.ACTIONS"):
        audit.record(action="key.teleported")
