"""Lead activities are append-only in the database itself."""

import pytest
from django.db import DatabaseError, connection, transaction

from leads.models import ImmutableRecord, Lead, LeadActivity

pytestmark = pytest.mark.django_db


@pytest.fixture
def activity(business):
    lead = Lead.objects.create(lead_id="lead-1", business=business, wa_id="15550123456")
    return LeadActivity.objects.create(lead=lead, kind="state_changed", from_state="NEW", to_state="CONTACTED")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE leads_leadactivity SET kind = 'rewritten' WHERE id = %s",
        "DELETE FROM leads_leadactivity WHERE id = %s",
    ],
)
def test_raw_sql_cannot_change_history(activity, sql):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [activity.pk])
    activity.refresh_from_db()
    assert activity.kind == "state_changed"


def test_orm_bulk_update_and_delete_are_refused_by_the_database(activity):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LeadActivity.objects.filter(pk=activity.pk).update(kind="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        LeadActivity.objects.filter(pk=activity.pk).delete()
    assert LeadActivity.objects.filter(pk=activity.pk, kind="state_changed").exists()


def test_model_refuses_save_and_delete(activity):
    activity.kind = "rewritten"
    with pytest.raises(ImmutableRecord):
        activity.save()
    with pytest.raises(ImmutableRecord):
        activity.delete()
    assert LeadActivity.objects.filter(pk=activity.pk, kind="state_changed").exists()


def test_appending_still_works(activity):
    LeadActivity.objects.create(lead=activity.lead, kind="note")
    assert activity.lead.activities.count() == 2
