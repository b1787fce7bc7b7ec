"""Every lead gets an opaque id (`ld.` and 20 hex digits); the id it had (`wa.` and the
customer's number, or an upstream's own) becomes its alias, so records already in flight
(Kafka, the outbox, dead letters) still find it.

Batched, each batch its own short transaction (the migration is not atomic): a populated
table is never locked whole, and the pipeline keeps running while it works (a message that
arrives mid-way finds its lead by the old id through the alias, or by the new one)."""

import secrets

from django.db import migrations, transaction

BATCH = 500


def give_opaque_ids(apps, schema_editor):
    Lead = apps.get_model("leads", "Lead")
    LeadAlias = apps.get_model("leads", "LeadAlias")
    while True:
        with transaction.atomic():
            batch = list(
                Lead.objects.exclude(lead_id__startswith="ld.")
                .select_for_update(skip_locked=True)
                .order_by("pk")[:BATCH]
            )
            if not batch:
                return
            LeadAlias.objects.bulk_create(
                [LeadAlias(business_id=lead.business_id, alias=lead.lead_id, lead=lead) for lead in batch],
                ignore_conflicts=True,
            )
            for lead in batch:
                lead.lead_id = "ld." + secrets.token_hex(10)
            Lead.objects.bulk_update(batch, ["lead_id"])


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("leads", "0006_customer_identity")]

    # Backwards: the aliases stay; the old ids are still found through them.
    operations = [migrations.RunPython(give_opaque_ids, migrations.RunPython.noop, elidable=True)]
