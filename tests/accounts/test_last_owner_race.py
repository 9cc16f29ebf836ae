"""Two owners demoting each other at the same moment: the organisation keeps an owner (the
organisation's row is locked while the owners are counted)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from accounts import members
from accounts.members import MemberError
from accounts.models import Membership
from tests import factories


@pytest.mark.django_db(transaction=True)
def test_it_keeps_an_owner_when_two_owners_demote_each_other_at_once() -> None:
    account = factories.account()
    first = Membership.objects.get(account=account)
    second = Membership.objects.create(
        user=factories.UserFactory.create(), account=account, role=Membership.Role.OWNER
    )
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(target_id: int, actor_id: int) -> None:
        try:
            target = Membership.objects.select_related("user", "account").get(pk=target_id)
            actor = Membership.objects.select_related("user", "account").get(pk=actor_id)
            barrier.wait()
            members.change_role(membership=target, role="admin", by=actor)
            outcomes.append("demoted")
        except MemberError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=demote, args=(second.pk, first.pk)),
        threading.Thread(target=demote, args=(first.pk, second.pk)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 2 and outcomes.count("demoted") == 1, outcomes
    assert Membership.objects.filter(account=account, role=Membership.Role.OWNER).count() == 1
