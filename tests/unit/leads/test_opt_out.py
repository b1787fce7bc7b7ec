"""A lead's opt-out: the model's methods (once, with an activity), and the admin's actions
(their own permission, an activity naming who)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from leads.models import Lead, LeadActivity

URL = "/admin/leads/lead/"


@pytest.fixture
def lead(business) -> Lead:
    return Lead.objects.create(lead_id="ld.opt", business=business, wa_id="15550123456")


def kinds(lead: Lead) -> list[tuple[str, dict]]:
    return [(a.kind, a.detail) for a in LeadActivity.objects.filter(lead=lead)]


def test_opting_out_is_recorded_once_and_opting_in_undoes_it(lead):
    assert lead.opt_out(source="keyword", processing_id="p-1") is True
    assert lead.opt_out(source="admin", by="ops") is False, "already out: nothing written"
    stored = Lead.objects.get(pk=lead.pk)
    assert stored.opted_out_at is not None and stored.opt_out_source == "keyword"
    assert lead.opt_in(source="keyword", processing_id="p-2") is True
    assert lead.opt_in(source="keyword") is False
    stored = Lead.objects.get(pk=lead.pk)
    assert stored.opted_out_at is None and stored.opt_out_source == ""
    assert kinds(lead) == [
        ("opted_out", {"source": "keyword", "by": ""}),
        ("opted_in", {"source": "keyword", "by": ""}),
    ]
    assert list(LeadActivity.objects.filter(lead=lead).values_list("processing_id", flat=True)) == ["p-1", "p-2"]


def test_a_stale_copy_of_the_lead_does_not_record_a_second_opt_out(lead):
    stale = Lead.objects.get(pk=lead.pk)
    assert lead.opt_out(source="keyword") is True
    assert stale.opt_out(source="admin", by="ops") is False
    assert stale.opted_out_at is not None, "the copy learnt the stored state"
    assert len(kinds(lead)) == 1


def test_marketing_stopped_is_recorded_once(lead):
    assert lead.stop_marketing(source="cloud_api_131050") is True
    assert lead.stop_marketing(source="cloud_api_131050") is False
    assert Lead.objects.get(pk=lead.pk).marketing_stopped_at is not None
    assert kinds(lead) == [("marketing_stopped", {"source": "cloud_api_131050"})]


def staff_with(*codenames: str) -> User:
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_lead", *codenames]))
    return User.objects.get(pk=user.pk)


def test_the_admin_shows_the_opt_out(lead, client):
    lead.opt_out(source="keyword")
    client.force_login(staff_with())
    listing = client.get(URL, {"opted_out_at__isempty": "0"})
    assert listing.status_code == 200 and b"ld.opt" in listing.content
    assert b"opted out" in listing.content
    assert b"ld.opt" not in client.get(URL, {"opted_out_at__isempty": "1"}).content
    page = client.get(f"{URL}{lead.pk}/change/")
    assert b"Opted out at" in page.content and b"keyword" in page.content


def test_the_admin_actions_need_their_permission(lead, client):
    client.force_login(staff_with())
    listing = client.get(URL)
    assert b"opt_out_customers" not in listing.content
    client.post(URL, {"action": "opt_out_customers", "_selected_action": [lead.pk]})
    assert Lead.objects.get(pk=lead.pk).opted_out_at is None, "no permission: nothing changed"
    assert kinds(lead) == []


def test_the_admin_opts_out_and_back_in_naming_who(lead, business, client):
    other = Lead.objects.create(lead_id="ld.other", business=business, wa_id="15550999999")
    other.opt_out(source="keyword")
    client.force_login(staff_with("change_opt_out"))
    assert b"opt_out_customers" in client.get(URL).content
    done = client.post(URL, {"action": "opt_out_customers", "_selected_action": [lead.pk, other.pk]}, follow=True)
    assert b"1 customer(s) opted out; 1 already were." in done.content
    stored = Lead.objects.get(pk=lead.pk)
    assert stored.opted_out_at is not None and stored.opt_out_source == "admin"
    assert kinds(lead) == [("opted_out", {"source": "admin", "by": "ops"})]

    done = client.post(URL, {"action": "opt_in_customers", "_selected_action": [lead.pk]}, follow=True)
    assert b"1 customer(s) opted back in." in done.content
    assert Lead.objects.get(pk=lead.pk).opted_out_at is None
    assert kinds(lead)[-1] == ("opted_in", {"source": "admin", "by": "ops"})
    assert Lead.objects.get(pk=other.pk).opt_out_source == "keyword", "the other's opt-out is theirs"
