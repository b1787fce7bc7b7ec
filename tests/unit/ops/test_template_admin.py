"""The templates' admin (whatsapp/admin_templates.py): a reply template shows what Meta last said
of its name per language, and a reply template naming a field no reply has is refused with the
known fields listed, not saved to fail at send time."""

from __future__ import annotations

import pytest

from tests.support import meta
from whatsapp.models import MessageTemplate, ReplyTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def shop(business):
    business.waba_id = meta.WABA_ID
    business.save(update_fields=["waba_id"])
    return business


def test_a_reply_template_shows_its_languages_at_meta(client, root, shop):
    client.force_login(root)
    reply = ReplyTemplate.objects.create(
        business=shop, kind="order_confirmed", template_name="order_confirmed", body_parameters=["customer_name"]
    )
    MessageTemplate.objects.create(
        waba_id=meta.WABA_ID, name="order_confirmed", language="en_US", status="APPROVED", category="UTILITY"
    )
    MessageTemplate.objects.create(
        waba_id=meta.WABA_ID, name="order_confirmed", language="es", status="PAUSED", category="UTILITY"
    )
    page = client.get(f"/admin/whatsapp/replytemplate/{reply.pk}/change/").content.decode()
    assert "en_US: APPROVED utility" in page and "es: PAUSED utility" in page
    listing = client.get("/admin/whatsapp/replytemplate/").content.decode()
    assert "en_US: APPROVED utility" in listing


def test_a_reply_template_with_an_unknown_field_is_refused(client, root, shop):
    client.force_login(root)
    form = {
        "business": shop.pk,
        "kind": "order_confirmed",
        "template_name": "order_confirmed",
        "parameter_format": "POSITIONAL",
        "body_parameters": '["customer_name", "shoe_size"]',
        "is_active": "on",
    }
    refused = client.post("/admin/whatsapp/replytemplate/add/", form)
    assert refused.status_code == 200 and not ReplyTemplate.objects.exists()
    assert "unknown field(s) shoe_size" in refused.content.decode()
    saved = client.post("/admin/whatsapp/replytemplate/add/", {**form, "body_parameters": '["customer_name", "total"]'})
    assert saved.status_code == 302
    assert ReplyTemplate.objects.get().body_parameters == ["customer_name", "total"]
