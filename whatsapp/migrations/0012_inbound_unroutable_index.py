"""The index route_unroutable reads, built CONCURRENTLY: the inbound table may be large."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("whatsapp", "0011_webhook_everything")]

    operations = [
        AddIndexConcurrently(
            model_name="inboundmessage",
            index=models.Index(
                condition=models.Q(("state", "UNROUTABLE")), fields=["phone_number_id"], name="inbound_unroutable"
            ),
        ),
    ]
