"""The customer as Meta names them now: BSUID, parent BSUID and username beside the number,
which becomes optional, and aliases for the ids a lead had before. Columns with constant
defaults and a new table: no rewrite of leads_lead, no long lock."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leads", "0005_business_updated_at"),
    ]

    operations = [
        migrations.CreateModel(
            name="LeadAlias",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("alias", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "verbose_name_plural": "lead aliases",
            },
        ),
        migrations.AddField(
            model_name="business",
            name="waba_id",
            field=models.CharField(
                blank=True,
                db_index=True,
                max_length=64,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[0-9]+\\Z", "A WhatsApp phone-number id is digits only.", code="invalid_phone_number_id"
                    )
                ],
                verbose_name="WhatsApp Business Account id",
            ),
        ),
        migrations.AddField(
            model_name="lead",
            name="marketing_stopped_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="lead",
            name="parent_user_id",
            field=models.CharField(blank=True, max_length=140, verbose_name="parent BSUID"),
        ),
        migrations.AddField(
            model_name="lead",
            name="user_id",
            field=models.CharField(blank=True, max_length=140, verbose_name="business-scoped user id (BSUID)"),
        ),
        migrations.AddField(
            model_name="lead",
            name="username",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="lead",
            name="wa_id",
            field=models.CharField(blank=True, max_length=15, verbose_name="customer WhatsApp number"),
        ),
        migrations.AddField(
            model_name="leadalias",
            name="business",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="lead_aliases", to="leads.business"
            ),
        ),
        migrations.AddField(
            model_name="leadalias",
            name="lead",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="aliases", to="leads.lead"
            ),
        ),
        migrations.AddConstraint(
            model_name="leadalias",
            constraint=models.UniqueConstraint(fields=("business", "alias"), name="lead_alias_unique"),
        ),
    ]
