"""Where a business's messages come from and its notifications go: one active business
per phone-number id (a database constraint, and a migration that stops on shared
numbers), and changes that take their own permission and are logged."""

from __future__ import annotations

import logging

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from leads.models import Business

NUMBER = "106540352242922"
HOOK = "https://crm.example.com/hooks/sales?token=s3cret-in-the-query"


@pytest.fixture
def shop(db) -> Business:
    return Business.objects.create(
        business_id="shop", tenant_id="t", display_name="Shop", phone_number_id=NUMBER, sales_webhook_url=HOOK
    )


def staff(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leads", codename__in=codenames))
    return user


def form(business: Business, **changes: str) -> dict[str, str]:
    """The business's change form as the browser posts it (checkboxes on are "on")."""
    data = {
        "business_id": business.business_id,
        "tenant_id": business.tenant_id,
        "display_name": business.display_name,
        "is_active": "on",
        "replies_enabled": "on",
        "accepts_direct_results": "on",
        "default_language": "en",
        "confidence_thresholds": "{}",
        "phone_number_id": business.phone_number_id,
        "waba_id": business.waba_id,
        "products-TOTAL_FORMS": "0",
        "products-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_two_active_businesses_cannot_claim_one_number(shop):
    with pytest.raises(IntegrityError, match="business_one_active_per_phone_number"), transaction.atomic():
        Business.objects.create(business_id="rival", tenant_id="t2", display_name="Rival", phone_number_id=NUMBER)
    # An inactive one may keep the number (a shop being moved), and many may have none.
    Business.objects.create(
        business_id="old", tenant_id="t", display_name="Old", phone_number_id=NUMBER, is_active=False
    )
    Business.objects.create(business_id="a", tenant_id="t", display_name="A")
    Business.objects.create(business_id="b", tenant_id="t", display_name="B")
    with pytest.raises(IntegrityError), transaction.atomic():
        Business.objects.filter(business_id="old").update(is_active=True)


def test_without_the_routing_permission_the_ids_and_the_webhook_cannot_be_changed(client, django_user_model, shop):
    clerk = staff(django_user_model, "clerk", "view_business", "change_business")
    client.force_login(clerk)
    url = f"/admin/leads/business/{shop.pk}/change/"
    page = client.get(url).content.decode()
    assert NUMBER in page, "the number is shown"
    assert 'name="phone_number_id"' not in page and 'name="sales_webhook_url"' not in page
    assert 'name="new_webhook_secret"' not in page and "s3cret-in-the-query" not in page
    # A forged post of every routing field: the rest of the form saves, routing stays.
    answer = client.post(
        url,
        form(
            shop,
            display_name="Shop & Co",
            phone_number_id="999",
            waba_id="888",
            sales_webhook_url="https://attacker.example.net/x",
            new_webhook_secret="attacker-secret",
            clear_sales_webhook_url="on",
        ),
    )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    shop.refresh_from_db()
    assert shop.display_name == "Shop & Co"
    assert (shop.phone_number_id, shop.waba_id, shop.sales_webhook_url, shop.sales_webhook_secret) == (
        NUMBER,
        "",
        HOOK,
        "",
    )


def test_with_the_permission_a_routing_change_is_saved_and_logged(client, django_user_model, shop, caplog):
    router = staff(django_user_model, "router", "view_business", "change_business", "change_business_routing")
    client.force_login(router)
    url = f"/admin/leads/business/{shop.pk}/change/"
    assert 'name="phone_number_id"' in client.get(url).content.decode()
    with caplog.at_level(logging.WARNING, logger="leads.admin"):
        answer = client.post(
            url,
            form(
                shop,
                phone_number_id="555",
                sales_webhook_url="https://crm2.example.com/in?k=v",
                new_webhook_secret="rotated-7",
            ),
        )
    assert answer.status_code == 302, answer.content.decode()[:2000]
    shop.refresh_from_db()
    assert (shop.phone_number_id, shop.sales_webhook_url, shop.sales_webhook_secret) == (
        "555",
        "https://crm2.example.com/in?k=v",
        "rotated-7",
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "leads.admin"]
    expected = (
        "business shop: routing changed by router: phone_number_id 106540352242922 -> 555; sales_webhook_url "
        "https://crm.example.com:443 -> https://crm2.example.com:443 (paths hidden); sales_webhook_secret set"
    )
    assert logged == [expected]
    assert not any("s3cret" in m or "rotated-7" in m or "k=v" in m for m in logged)
    assert LogEntry.objects.get().user == router


def test_a_number_another_active_business_has_is_a_form_error(client, django_user_model, shop):
    other = Business.objects.create(business_id="other", tenant_id="t", display_name="Other")
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    answer = client.post(f"/admin/leads/business/{other.pk}/change/", form(other, phone_number_id=NUMBER))
    assert answer.status_code == 200
    assert "The active business shop already has the WhatsApp phone-number id" in answer.content.decode()
    other.refresh_from_db()
    assert other.phone_number_id == ""
    # Nor may a clerk reactivate a business whose number has been taken since.
    Business.objects.filter(pk=shop.pk).update(is_active=False)
    Business.objects.filter(pk=other.pk).update(phone_number_id=NUMBER)
    client.force_login(staff(django_user_model, "clerk", "view_business", "change_business"))
    answer = client.post(f"/admin/leads/business/{shop.pk}/change/", form(shop))
    assert answer.status_code == 200 and "already has the WhatsApp phone-number id" in answer.content.decode()
    assert not Business.objects.get(pk=shop.pk).is_active


@pytest.mark.django_db(transaction=True)
def test_the_migration_stops_on_shared_numbers_and_names_them():
    before = [("leads", "0009_business_accepts_direct_results")]
    executor = MigrationExecutor(connection)
    # Every app's newest, not only leads': going back unapplies the migrations of other apps that
    # depend on leads' (whatsapp's templates), and the later tests of this database need them.
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("leads", "Business")
    try:
        for name in ("north", "south"):
            old.objects.create(business_id=name, tenant_id="t", display_name=name, phone_number_id=NUMBER)
        old.objects.create(business_id="gone", tenant_id="t", display_name="g", phone_number_id=NUMBER, is_active=False)
        executor = MigrationExecutor(connection)
        with pytest.raises(RuntimeError, match=f"phone-number id {NUMBER}: north, south$"):
            executor.migrate(latest)
        old.objects.filter(business_id="south").update(is_active=False)
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert Business.objects.filter(is_active=True, phone_number_id=NUMBER).count() == 1
