"""`manage.py templates sync` against a local server answering as the Graph API's listing does."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from whatsapp.models import MessageTemplate

pytestmark = pytest.mark.django_db
WABA = "102290129340398"
TOKEN = "EAAG-sync-token-never-printed"


def page(*names: str, after: str = "") -> dict:
    data = [
        {"id": f"9{i}", "name": n, "language": "en_US", "status": "APPROVED", "category": "UTILITY"}
        for i, n in enumerate(names)
    ]
    paging = {"cursors": {"before": "b", "after": after}, **({"next": "https://graph.facebook.com/x"} if after else {})}
    return {"data": data, "paging": paging}


def test_sync_reads_every_page_and_marks_a_template_meta_no_longer_lists(settings, httpserver, business, capsys):
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    business.waba_id = WABA
    business.save()
    MessageTemplate.objects.create(waba_id=WABA, name="old_one", language="en_US", status="APPROVED")
    path = f"/v21.0/{WABA}/message_templates"
    httpserver.expect_request(
        path,
        query_string={
            "fields": "id,name,language,status,category,quality_score,rejected_reason,components",
            "limit": "100",
            "after": "c1",
        },
    ).respond_with_json(page("call_scheduled"))
    httpserver.expect_request(path).respond_with_json(page("order_confirmed", after="c1"))
    call_command("templates", "sync", "--business", business.business_id)
    stored = dict(MessageTemplate.objects.values_list("name", "status"))
    assert stored == {"order_confirmed": "APPROVED", "call_scheduled": "APPROVED", "old_one": "DELETED"}
    assert TOKEN not in capsys.readouterr().out


def test_sync_without_a_waba_id_says_so(business):
    with pytest.raises(CommandError, match="no WhatsApp Business Account id"):
        call_command("templates", "sync", "--business", business.business_id)
