"""Replays cost no storage and run nothing: the same signed bytes are stored once, and a
message sent longer ago than Meta retries is kept as TOO_OLD until an operator runs it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from prometheus_client import REGISTRY

from leads.models import Lead
from tests.support import meta
from whatsapp.models import InboundMessage, WebhookDelivery

pytestmark = pytest.mark.django_db
URL = "/webhooks/whatsapp/"
State = InboundMessage.State


def post(client, body: bytes) -> int:
    return client.post(
        URL, data=body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=meta.sign(body)
    ).status_code


def received(kind: str) -> float:
    return REGISTRY.get_sample_value("whatsapp_webhook_received_total", {"kind": kind}) or 0.0


@pytest.fixture
def shop(business, webhook_secrets):
    business.phone_number_id = meta.PHONE_NUMBER_ID
    business.save()
    return business


def test_the_same_signed_delivery_posted_five_times_is_stored_once(client, shop, django_capture_on_commit_callbacks):
    body = meta.encode(meta.message_delivery(meta.text_message("2 sourdough please"), meta.text_message("and a rye")))
    replays = received("replay")
    with django_capture_on_commit_callbacks(execute=True):
        answers = [post(client, body) for _ in range(5)]
    assert answers == [200] * 5, "a replay is answered 200: Meta must not retry it"
    (delivery,) = WebhookDelivery.objects.all()
    assert bytes(delivery.body) == body and len(delivery.body_sha256) == 64
    assert InboundMessage.objects.count() == 2
    assert received("replay") - replays == 4


def test_a_message_older_than_metas_retry_horizon_is_kept_not_run_until_an_operator_runs_it(
    client, shop, django_capture_on_commit_callbacks
):
    week_and_a_day = str(int(time.time() - timedelta(days=8).total_seconds()))
    old = meta.text_message("is this still on?", ts=week_and_a_day)
    from_2001 = meta.text_message("hello from 2001", ts="978307200")
    fresh = meta.text_message("and today?")
    too_old = received("too_old")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, meta.encode(meta.message_delivery(old, from_2001, fresh))) == 200
    states = dict(InboundMessage.objects.values_list("wamid", "state"))
    assert states == {old["id"]: State.TOO_OLD, from_2001["id"]: State.TOO_OLD, fresh["id"]: State.PENDING}
    assert received("too_old") - too_old == 2
    assert not InboundMessage.objects.filter(state=State.TOO_OLD).exclude(lead_id="").exists(), "no lead touched"
    lead = Lead.objects.get()
    assert lead.last_inbound_at is not None and lead.last_inbound_at.year > 2001

    operator = User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(operator)
    chosen = InboundMessage.objects.filter(wamid__in=[old["id"], fresh["id"]])
    answer = client.post(
        reverse("admin:whatsapp_inboundmessage_changelist"),
        {"action": "run_too_old_messages", "_selected_action": [m.pk for m in chosen]},
        follow=True,
    )
    shown = [str(m) for m in answer.context["messages"]]
    assert shown == [
        (
            "Ran 1 message(s) older than Meta's retry horizon; 1 selected were not TOO_OLD (or another run had "
            "them) and were left as they were."
        )
    ]
    ran = InboundMessage.objects.get(wamid=old["id"])
    assert ran.state == State.PENDING and ran.lead_id == lead.lead_id, "the same customer's lead"
    assert InboundMessage.objects.get(wamid=from_2001["id"]).state == State.TOO_OLD, "only the chosen ones"


def test_running_old_messages_needs_the_change_permission(client, shop):
    old = meta.text_message("old", ts=str(int(time.time() - timedelta(days=9).total_seconds())))
    assert post(client, meta.encode(meta.message_delivery(old))) == 200
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_inboundmessage"))
    client.force_login(viewer)
    answer = client.post(
        reverse("admin:whatsapp_inboundmessage_changelist"),
        {"action": "run_too_old_messages", "_selected_action": [InboundMessage.objects.get().pk]},
        follow=True,
    )
    assert InboundMessage.objects.get().state == State.TOO_OLD
    assert answer.status_code == 200
