"""The customer-identity migrations on a populated database: every lead gets an opaque id,
its old id (the phone number one, or an upstream's own) stays as its alias, and what pointed
at the lead still does. Run backwards to before them and forwards again on this test's own
database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("leads", "0005_business_updated_at"), ("whatsapp", "0010_overview_index")]


def migrate(targets: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    # Every app's newest: going back unapplies what depends on these apps' migrations too.
    return executor.loader.graph.leaf_nodes()


def test_existing_leads_get_opaque_ids_and_keep_their_old_ids_as_aliases():
    old = migrate(BEFORE)
    try:
        Business = old.get_model("leads", "Business")
        Lead = old.get_model("leads", "Lead")
        Order = old.get_model("leads", "Order")
        shop = Business.objects.create(business_id="shop", tenant_id="t", display_name="Shop")
        # More than one batch of the data migration (500).
        Lead.objects.bulk_create(
            [Lead(business=shop, lead_id=f"wa.1555000{n:04d}", wa_id=f"1555000{n:04d}") for n in range(1203)]
        )
        upstream = Lead.objects.create(business=shop, lead_id="lead-123", wa_id="15559990000")
        order = Order.objects.create(
            business=shop, lead=upstream, processing_id="p", saga_run=1, idempotency_key="k", currency="USD"
        )
    finally:
        new = migrate(latest())
    Lead = new.get_model("leads", "Lead")
    LeadAlias = new.get_model("leads", "LeadAlias")
    assert Lead.objects.count() == 1204
    assert not Lead.objects.exclude(lead_id__startswith="ld.").exists()
    assert not Lead.objects.filter(lead_id__regex=r"[0-9]{7}").exclude(lead_id__regex=r"^ld\.[0-9a-f]{20}$").exists()
    assert LeadAlias.objects.count() == 1204
    moved = LeadAlias.objects.get(alias="lead-123").lead
    assert moved.pk == upstream.pk and moved.wa_id == "15559990000"
    assert new.get_model("leads", "Order").objects.get(pk=order.pk).lead_id == moved.pk
    by_number = LeadAlias.objects.get(alias="wa.15550000042").lead
    assert by_number.wa_id == "15550000042" and by_number.lead_id.startswith("ld.")
