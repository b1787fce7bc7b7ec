from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built CONCURRENTLY on a populated inbox: ingest keeps writing meanwhile. A partial index,
    # so it holds only the rows waiting for their conversation's turn (none, before this release).
    atomic = False

    dependencies = [
        ('whatsapp', '0017_conversation_turns'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='processedmessage',
            index=models.Index(condition=models.Q(('status', 'WAITING')), fields=['business_id', 'lead_id', 'sent_at', 'kafka_offset'], name='inbox_waiting'),
        ),
    ]
