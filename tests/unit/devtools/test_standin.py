"""The stand-in Cloud API (devtools.standin) answers as Meta does: text and template messages
with a wamid, read receipts with success, and, when told to, a template with Meta's Graph
error body, which the real client (core.clients.cloud_api) reads as a template_error."""

from __future__ import annotations

import pytest
import requests

from core.clients import cloud_api
from devtools.standin import StandInCloudApi

PHONE_NUMBER_ID = "106540352242922"


@pytest.fixture
def stand_in(settings):
    api = StandInCloudApi().start()
    settings.WHATSAPP_GRAPH_BASE_URL = api.url
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = "EAAG-stand-in-test"
    yield api
    api.stop()


def send_order_template(name: str = "order_confirmed") -> cloud_api.SendResult:
    return cloud_api.send_template(
        phone_number_id=PHONE_NUMBER_ID,
        to="15550100001",
        name=name,
        language="en_US",
        components=[
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "ORD-000007"}],
            }
        ],
        biz_opaque_callback_data="proc-7",
    )


def test_a_template_gets_a_wamid_and_is_kept_with_its_name_language_and_parameters(stand_in):
    result = send_order_template()
    (sent,) = stand_in.templates()
    assert result.wamid == sent.wamid and sent.wamid.startswith("wamid.standin.")
    assert (sent.to, sent.name, sent.language, sent.parameters, sent.processing_id) == (
        "15550100001",
        "order_confirmed",
        "en_US",
        ["Ana", "ORD-000007"],
        "proc-7",
    )
    assert stand_in.sent() == [] and stand_in.refused() == []


def test_a_refused_template_answers_with_the_graph_error_body_and_is_a_template_error(stand_in):
    stand_in.refuse_template("order_confirmed", 132001)
    answer = requests.post(
        f"{stand_in.url}/v21.0/{PHONE_NUMBER_ID}/messages",
        json={
            "type": "template",
            "to": "15550100001",
            "template": {"name": "order_confirmed", "language": {"code": "es"}},
        },
        timeout=5,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "code", "error_data", "fbtrace_id"}
    assert error["code"] == 132001 and "does not exist in the translation" in error["message"]
    assert "order_confirmed" in error["error_data"]["details"]

    with pytest.raises(cloud_api.CloudApiTemplateError) as refused:
        send_order_template()
    assert refused.value.code == 132001 and refused.value.dead_letter_reason == "template_error"
    assert stand_in.templates() == [] and [r.code for r in stand_in.refused()] == [132001, 132001]

    stand_in.accept_template("order_confirmed")
    assert send_order_template().wamid == stand_in.templates()[0].wamid


def test_text_replies_and_read_receipts_answer_as_before_and_wamids_never_repeat(stand_in):
    text = cloud_api.send_text(phone_number_id=PHONE_NUMBER_ID, to="15550100002", body="Hi")
    template = send_order_template()
    assert [(r.to, r.text, r.wamid) for r in stand_in.sent()] == [("15550100002", "Hi", text.wamid)]
    assert text.wamid != template.wamid
    read = requests.post(
        f"{stand_in.url}/v21.0/{PHONE_NUMBER_ID}/messages",
        json={"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in"},
        timeout=5,
    )
    assert read.json() == {"success": True} and stand_in.read_receipts == 1
