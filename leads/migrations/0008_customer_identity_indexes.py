"""The indexes that find a lead by BSUID (unique per business) and by number, built
CONCURRENTLY so a populated leads table keeps taking writes while they build."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("leads", "0007_opaque_lead_ids")]

    operations = [
        AddIndexConcurrently(model_name="lead", index=models.Index(fields=["business", "wa_id"], name="lead_wa_id")),
        migrations.SeparateDatabaseAndState(
            # A conditional unique constraint is a partial unique index in Postgres: built
            # here CONCURRENTLY, recorded in the state as the model declares it.
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS lead_unique_bsuid "
                    "ON leads_lead (business_id, user_id) WHERE NOT (user_id = '')",
                    "DROP INDEX CONCURRENTLY IF EXISTS lead_unique_bsuid",
                )
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name="lead",
                    constraint=models.UniqueConstraint(
                        condition=~models.Q(user_id=""), fields=("business", "user_id"), name="lead_unique_bsuid"
                    ),
                )
            ],
        ),
    ]
