# The inbox's two groups (issue 22 part 6), made once and safe to run on a populated database:
# existing groups of these names keep what they have and get what is missing; nothing is removed.
#
# - agents: see conversations, take them over, hand back and reply (inbox.answer_conversation),
#   and view the admin pages the thread links to. No DLQ requeue, no change to a business
#   (its settings and secrets), nothing deleted.
# - operators: what staff running the service do today, every permission of the project's apps.
#
# Permissions are made by post_migrate, after every migration: on a new database they do not
# exist yet when this runs, so it makes them first, as post_migrate would.

from django.contrib.auth.management import create_permissions
from django.db import migrations

AGENT_PERMISSIONS = [
    ("inbox", "view_conversation"),
    ("inbox", "answer_conversation"),
    ("leads", "view_lead"),
    ("leads", "view_reviewflag"),
    ("leads", "view_order"),
    ("leads", "view_supportticket"),
    ("leads", "view_callbackrequest"),
    ("whatsapp", "view_processedmessage"),
    ("whatsapp", "view_outboundmessage"),
    ("whatsapp", "view_deliverystatus"),
    ("whatsapp", "view_inboundmessage"),
    ("dlq", "view_deadletter"),
]
OPERATOR_APPS = ["leads", "whatsapp", "dlq", "inbox"]


def make_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        # create_permissions skips an app without a models module, which a migration's
        # historical app configs never have: lend one, and give back what was there.
        had = getattr(app_config, "models_module", None)
        app_config.models_module = had or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = had
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    agents, _ = Group.objects.get_or_create(name="agents")
    for app_label, codename in AGENT_PERMISSIONS:
        agents.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["agents", "operators"]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("leads", "0014_lead_updated_index"),
        ("whatsapp", "0020_outbound_agent_reply"),
        ("dlq", "0006_overview_index"),
    ]

    operations = [migrations.RunPython(make_groups, remove_groups)]
