# The agent inbox lists conversations newest activity first (inbox.conversations): an index on
# the leads' updated_at serves that ORDER BY ... LIMIT. Built CONCURRENTLY, so a populated
# leads table keeps taking writes while it is made (which needs a migration outside a transaction).

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('leads', '0013_lead_takeover'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='lead',
            index=models.Index(fields=['updated_at'], name='lead_updated'),
        ),
    ]
