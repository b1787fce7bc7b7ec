"""Every webhook change kept, templates and account notices, BSUIDs on inbound messages
and statuses, and UNREADABLE items (no id, no time). Only new tables, new columns with
constant defaults and dropped NOT NULLs or widened varchars: no table is rewritten."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leads", "0008_customer_identity_indexes"),
        ("whatsapp", "0010_overview_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccountNotice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("waba_id", models.CharField(blank=True, max_length=64, verbose_name="WhatsApp Business Account id")),
                ("field", models.CharField(max_length=64)),
                ("event", models.CharField(blank=True, max_length=64)),
                (
                    "severity",
                    models.CharField(
                        choices=[("critical", "Critical"), ("warning", "Warning"), ("info", "Info")],
                        db_index=True,
                        max_length=16,
                    ),
                ),
                ("summary", models.CharField(max_length=300)),
                ("detail", models.JSONField(blank=True, default=dict)),
                ("received_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
                ("acknowledged_by", models.CharField(blank=True, max_length=150)),
            ],
            options={
                "ordering": ["-received_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="MessageTemplate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("waba_id", models.CharField(max_length=64, verbose_name="WhatsApp Business Account id")),
                ("name", models.CharField(max_length=512)),
                ("language", models.CharField(max_length=16)),
                ("template_id", models.CharField(blank=True, max_length=64, verbose_name="Meta's template id")),
                ("status", models.CharField(blank=True, db_index=True, max_length=32)),
                ("reason", models.CharField(blank=True, max_length=200)),
                ("quality", models.CharField(blank=True, max_length=32)),
                ("category", models.CharField(blank=True, max_length=32)),
                ("last_update", models.JSONField(blank=True, default=dict)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["waba_id", "name", "language"],
            },
        ),
        migrations.CreateModel(
            name="WebhookChange",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("field", models.CharField(db_index=True, max_length=64)),
                ("json_path", models.CharField(max_length=200)),
                ("waba_id", models.CharField(blank=True, max_length=64)),
                ("phone_number_id", models.CharField(blank=True, max_length=64)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("APPLIED", "applied"),
                            ("STORED", "stored only"),
                            ("UNREADABLE", "could not be read"),
                        ],
                        max_length=16,
                    ),
                ),
                ("reason", models.TextField(blank=True)),
                ("value", models.JSONField(blank=True, null=True)),
                ("received_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["-received_at", "-id"],
            },
        ),
        migrations.AddField(
            model_name="deliverystatus",
            name="recipient_user_id",
            field=models.CharField(blank=True, max_length=140, verbose_name="recipient BSUID"),
        ),
        migrations.AddField(
            model_name="inboundmessage",
            name="json_path",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="inboundmessage",
            name="parent_user_id",
            field=models.CharField(blank=True, max_length=140, verbose_name="customer parent BSUID"),
        ),
        migrations.AddField(
            model_name="inboundmessage",
            name="user_id",
            field=models.CharField(blank=True, max_length=140, verbose_name="customer BSUID"),
        ),
        migrations.AddField(
            model_name="inboundmessage",
            name="username",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="lead_id",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="processing_id",
            field=models.CharField(blank=True, max_length=128, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="received_at",
            field=models.DateTimeField(
                blank=True, help_text="When the customer sent it (Meta's timestamp).", null=True
            ),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="state",
            field=models.CharField(
                choices=[
                    ("PENDING", "to publish"),
                    ("PUBLISHED", "published"),
                    ("UNROUTABLE", "no business for the number"),
                    ("REJECTED", "not a valid request"),
                    ("UNREADABLE", "could not be read"),
                    ("APPLIED", "applied at the webhook"),
                ],
                default="PENDING",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="wa_id",
            field=models.CharField(blank=True, max_length=32, verbose_name="customer WhatsApp number"),
        ),
        migrations.AlterField(
            model_name="inboundmessage",
            name="wamid",
            field=models.CharField(
                blank=True, max_length=256, null=True, unique=True, verbose_name="WhatsApp message id"
            ),
        ),
        migrations.AlterField(
            model_name="outboundmessage",
            name="to",
            field=models.CharField(max_length=140, verbose_name="recipient"),
        ),
        migrations.AddField(
            model_name="accountnotice",
            name="business",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="account_notices",
                to="leads.business",
            ),
        ),
        migrations.AddConstraint(
            model_name="messagetemplate",
            constraint=models.UniqueConstraint(
                fields=("waba_id", "name", "language"), name="template_unique_per_account"
            ),
        ),
        migrations.AddField(
            model_name="webhookchange",
            name="delivery",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="changes", to="whatsapp.webhookdelivery"
            ),
        ),
    ]
