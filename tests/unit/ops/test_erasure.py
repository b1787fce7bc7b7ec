"""Erasing a customer on rows built as the webhook and pipeline build them: the command's
output, the trigger's one exception, the in-flight rule, the admin action and purge_raw."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from dlq.models import DeadLetter
from leads.models import Lead, LeadActivity, LeadAlias, new_lead_id
from whatsapp.models import InboundMessage, OutboundMessage, ProcessedMessage, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)

ANA, LUCIA = "15550000011", "15550000012"


def customer(business, number: str, name: str, text: str, status: str = "PROCESSED") -> Lead:
    ref = number[::-1]  # message ids say nothing of the number, as Meta's do
    lead = Lead.objects.create(business=business, lead_id=new_lead_id(), wa_id=number, customer_name=name)
    LeadAlias.objects.create(business=business, alias=f"wa.{number}", lead=lead)
    body = json.dumps(
        {
            "entry": [
                {
                    "changes": [
                        {
                            "value": {
                                "contacts": [{"wa_id": number, "profile": {"name": name}}],
                                "messages": [{"from": number, "id": f"wamid.{ref}", "text": {"body": text}}],
                            }
                        }
                    ]
                }
            ]
        }
    ).encode()
    delivery = WebhookDelivery.objects.create(body=body, body_sha256=ref)
    InboundMessage.objects.create(
        wamid=f"wamid.{ref}",
        delivery=delivery,
        business=business,
        phone_number_id="1",
        wa_id=number,
        profile_name=name,
        type="text",
        text=text,
        processing_id=f"p-{ref}",
        lead_id=lead.lead_id,
        state="PUBLISHED",
    )
    payload = {"customer": {"wa_id": number, "name": name}, "message": {"text": text}, "lead_id": lead.lead_id}
    ProcessedMessage.objects.create(
        processing_id=f"p-{ref}",
        business_id=business.business_id,
        lead_id=f"wa.{number}",
        intent="ORDER_REQUEST",
        payload=payload,
        status=status,
        lead_record=lead,
    )
    OutboundMessage.objects.create(
        processing_id=f"p-{ref}",
        saga_run=1,
        idempotency_key=f"k-{ref}",
        business=business,
        lead=lead,
        to=number,
        body=f"Thanks {name}!",
        status="SENT",
    )
    DeadLetter.objects.create(
        processing_id=f"p-{ref}",
        lead_id=lead.lead_id,
        stage="reply",
        reason="x",
        payload=payload,
        error_message=f"could not reach {number}",
    )
    LeadActivity.objects.create(lead=lead, kind="identity_conflict", detail={"number_is_on_lead": f"wa.{number}"})
    return lead


def dump() -> str:
    with connection.cursor() as cursor:
        texts = []
        for table in (
            "leads_lead",
            "leads_leadalias",
            "leads_leadactivity",
            "whatsapp_inboundmessage",
            "whatsapp_processedmessage",
            "whatsapp_outboundmessage",
            "dlq_deadletter",
        ):
            cursor.execute(f"SELECT t::text FROM {table} t")
            texts += [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT convert_from(body, 'UTF8') FROM whatsapp_webhookdelivery")
        texts += [row[0] for row in cursor.fetchall()]
    return "\n".join(texts)


def test_the_command_erases_one_customer_prints_per_table_and_leaves_the_other(business):
    ana = customer(business, ANA, "Ana Souza", "2 sourdough please")
    customer(business, LUCIA, "Lucía", "cuánto cuestan")
    out = io.StringIO()

    call_command("erase_customer", "--business", business.business_id, "--wa-id", ANA, "--by", "dpo", stdout=out)

    printed = out.getvalue()
    assert "leads_lead: 1" in printed and "whatsapp_inboundmessage: 1" in printed and "dlq_deadletter: 1" in printed
    text = dump()
    for gone in (ANA, "Ana Souza", "2 sourdough please"):
        assert gone not in text
    for kept in (LUCIA, "Lucía", "cuánto cuestan"):
        assert kept in text
    erased = LeadActivity.objects.get(lead=ana, kind="customer_erased")
    assert erased.detail["by"] == "dpo"
    assert DeadLetter.objects.get(lead_id=ana.lead_id).status == "DISCARDED"


def test_the_activity_log_still_refuses_updates_and_deletes_after_an_erasure(business):
    ana = customer(business, ANA, "Ana Souza", "hello there")
    call_command("erase_customer", "--business", business.business_id, "--customer", ANA, stdout=io.StringIO())
    activity = LeadActivity.objects.filter(lead=ana).first()
    for sql in (
        "UPDATE leads_leadactivity SET detail = '{}' WHERE id = %s",
        "DELETE FROM leads_leadactivity WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [activity.pk])
    # A licence for another lead's erasure does not open this lead's log.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('leads.erasure', '999999', true)")
        cursor.execute("UPDATE leads_leadactivity SET detail = '{}' WHERE id = %s", [activity.pk])


def test_a_customer_with_a_message_in_flight_is_refused_naming_it(business):
    customer(business, ANA, "Ana Souza", "hello there", status="PROCESSING")
    with pytest.raises(CommandError, match=f"in flight: p-{ANA[::-1]}"):
        call_command("erase_customer", "--business", business.business_id, "--customer", ANA, stdout=io.StringIO())
    assert Lead.objects.get(wa_id=ANA).customer_name == "Ana Souza"


def test_the_admin_action_needs_its_permission_and_asks_to_confirm(business, client):
    ana = customer(business, ANA, "Ana Souza", "hello there")
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_lead"))
    client.force_login(staff)
    url = "/admin/leads/lead/"
    data = {"action": "erase_customers", "_selected_action": [ana.pk]}
    client.post(url, data)
    assert Lead.objects.get(pk=ana.pk).wa_id == ANA, "no permission: nothing erased"

    staff.user_permissions.add(Permission.objects.get(codename="erase_customer"))
    staff = User.objects.get(pk=staff.pk)
    client.force_login(staff)
    page = client.post(url, data)
    assert b"Yes, erase" in page.content and Lead.objects.get(pk=ana.pk).wa_id == ANA
    done = client.post(url, {**data, "confirm": "yes"})
    assert b"Customer erased" in done.content and b"leads_lead" in done.content
    assert Lead.objects.get(pk=ana.pk).wa_id == ""


def test_purge_raw_deletes_only_bodies_past_the_retention(business):
    customer(business, ANA, "Ana Souza", "hello there")
    old = WebhookDelivery.objects.create(body=b"{}", body_sha256="old")
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=31))
    out = io.StringIO()
    call_command("purge_raw", stdout=out)
    assert "deleted 1 raw webhook deliveries" in out.getvalue()
    assert not WebhookDelivery.objects.filter(pk=old.pk).exists()
    assert WebhookDelivery.objects.count() == 1
    assert InboundMessage.objects.filter(wa_id=ANA).exists()


def test_the_opt_out_outlives_the_erasure(business):
    ana = customer(business, ANA, "Ana Souza", "STOP")
    ana.opt_out(source="keyword", processing_id=f"p-{ANA[::-1]}")
    call_command("erase_customer", "--business", business.business_id, "--customer", ANA, stdout=io.StringIO())
    erased = Lead.objects.get(pk=ana.pk)
    assert erased.wa_id == "" and erased.opted_out_at is not None and erased.opt_out_source == "keyword"
    assert LeadActivity.objects.get(lead=erased, kind="opted_out").detail == {"source": "keyword", "by": ""}
