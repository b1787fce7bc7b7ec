import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('leads', '0005_business_updated_at'),
        ('whatsapp', '0005_kafka_timestamp_ms'),
    ]

    operations = [
        migrations.AddField(
            model_name='processedmessage',
            name='lead_record',
            field=models.ForeignKey(blank=True, help_text='The lead, once the intent stage has created or updated it.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='inbox_messages', to='leads.lead', verbose_name='lead'),
        ),
    ]
