"""A delivery's body hash, unique, and the TOO_OLD state. The column is nullable (a fast
ADD COLUMN; deliveries stored before keep none) and its unique index is built CONCURRENTLY,
then attached as the constraint, so a populated table keeps taking deliveries."""

from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('whatsapp', '0012_inbound_unroutable_index'),
    ]

    operations = [
        migrations.AddField(
            model_name='webhookdelivery',
            name='body_sha256',
            field=models.CharField(blank=True, editable=False, max_length=64, null=True, verbose_name='SHA-256 of the body'),
        ),
        migrations.AlterField(
            model_name='inboundmessage',
            name='state',
            field=models.CharField(choices=[('PENDING', 'to publish'), ('PUBLISHED', 'published'), ('UNROUTABLE', 'no business for the number'), ('REJECTED', 'not a valid request'), ('UNREADABLE', 'could not be read'), ('APPLIED', 'applied at the webhook'), ('TOO_OLD', "older than Meta's retry horizon")], default='PENDING', max_length=16),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS webhook_delivery_unique_body "
                    "ON whatsapp_webhookdelivery (body_sha256)",
                    "DROP INDEX CONCURRENTLY IF EXISTS webhook_delivery_unique_body",
                ),
                migrations.RunSQL(
                    "ALTER TABLE whatsapp_webhookdelivery ADD CONSTRAINT webhook_delivery_unique_body "
                    "UNIQUE USING INDEX webhook_delivery_unique_body",
                    "ALTER TABLE whatsapp_webhookdelivery DROP CONSTRAINT IF EXISTS webhook_delivery_unique_body",
                ),
            ],
            state_operations=[
                migrations.AddConstraint(
                    model_name='webhookdelivery',
                    constraint=models.UniqueConstraint(fields=('body_sha256',), name='webhook_delivery_unique_body'),
                ),
            ],
        ),
    ]
