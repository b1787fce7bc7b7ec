"""Each stage of the saga (whatsapp/saga/) called directly, on the real test Postgres, with
no Celery worker: what a stage leaves in the database is what an operator would look at
(the inbox row, the saga steps, the order and the stock, the sales notification, the
dead letter, the outbound reply). The stages together, through real workers:
tests/integration/test_pipeline.py."""

from __future__ import annotations

import pytest
from werkzeug import Response

from dlq.models import DeadLetter
from leads.models import LeadActivity, Order, Product, SalesNotification
from tests.support.events import encode, event
from whatsapp import saga
from whatsapp.ingest.intake import take_in
from whatsapp.kafka import Record
from whatsapp.models import OutboundMessage, ProcessedMessage, SagaStep

pytestmark = pytest.mark.django_db(transaction=True)

HOOK = "/sales-hook"
PHONE_NUMBER_ID = "106540352242922"
TOKEN = "EAAG-saga-test-token"
Step = SagaStep.Status


@pytest.fixture
def shop(business, httpserver, settings):
    """The business with a sales webhook and a WhatsApp number, both served by the local HTTP server."""
    business.sales_webhook_url = httpserver.url_for(HOOK)
    business.phone_number_id = PHONE_NUMBER_ID
    business.save()
    settings.WHATSAPP_GRAPH_BASE_URL = httpserver.url_for("").rstrip("/")
    settings.WHATSAPP_GRAPH_VERSION = "v21.0"
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    return business


def webhook_answers(httpserver, *statuses: int) -> None:
    """The sales webhook answers each POST with the next status, the last one for ever after."""
    answers = list(statuses)

    def handle(request):
        return Response(
            "{}", status=answers.pop(0) if len(answers) > 1 else answers[0], content_type="application/json"
        )

    httpserver.expect_request(HOOK, method="POST").respond_with_handler(handle)


def graph_answers(httpserver, status: int, body: dict) -> None:
    httpserver.expect_request(f"/v21.0/{PHONE_NUMBER_ID}/messages", method="POST").respond_with_json(
        body, status=status
    )


def received(pid: str, offset: int = 0, **overrides) -> ProcessedMessage:
    """An order message as ingest leaves it: one RECEIVED inbox row (2 sourdough loaves)."""
    take_in([Record("t", 0, offset, encode(event(pid, **overrides)))])
    return ProcessedMessage.objects.get(processing_id=pid)


def planned(pid: str) -> list[SagaStep]:
    received(pid)
    assert saga.claim(pid, 1)
    return saga.plan_run(pid, 1)


def row(pid: str) -> ProcessedMessage:
    return ProcessedMessage.objects.get(processing_id=pid)


def steps(pid: str) -> dict[str, SagaStep]:
    return {s.action: s for s in SagaStep.objects.filter(message__processing_id=pid).order_by("order")}


def stock() -> int:
    return Product.objects.get(sku="SD-01").stock


def fail_run(pid: str, stage: str = "NOTIFY_SALES") -> None:
    assert saga.fail(
        pid,
        1,
        stage=stage,
        reason=DeadLetter.Reason.NON_RETRYABLE,
        error="PermanentActionError: sales webhook answered 422",
        tb="Traceback ...",
    )


# --- plan: dedupe's claim, then the plan ---------------------------------------


def test_a_received_row_is_claimed_once(business):
    received("claim-1")
    assert saga.claim("claim-1", 1)
    assert row("claim-1").status == ProcessedMessage.Status.PROCESSING
    assert not saga.claim("claim-1", 1), "a redelivered dedupe task finds it claimed"
    assert not saga.claim("claim-1", 2), "no other run can claim it"
    assert not saga.claim("no-such-message", 1)


def test_the_plan_is_the_handlers_and_is_written_once(business):
    first = planned("plan-1")
    assert [(s.order, s.action, s.status) for s in first] == [
        (1, "CREATE_ORDER", Step.PENDING),
        (2, "NOTIFY_SALES", Step.PENDING),
    ]
    assert first[0].params == {"lines": [{"sku": "SD-01", "quantity": 2}]}
    message = row("plan-1")
    assert (message.handler, message.planned_run) == ("order", 1)
    assert "Acme Bakery" in message.reply_text
    lead = message.lead_record
    assert lead.lead_id.startswith("ld.") and lead.aliases.get().alias == "lead-123", (
        "an opaque id; the event's is its alias"
    )
    received_activity = LeadActivity.objects.get(processing_id="plan-1", kind="message_received")
    assert received_activity.detail["actions"] == ["CREATE_ORDER", "NOTIFY_SALES"]

    again = saga.plan_run("plan-1", 1)  # a redelivered intent task
    assert [s.pk for s in again] == [s.pk for s in first]
    assert SagaStep.objects.filter(message=message).count() == 2
    assert LeadActivity.objects.filter(processing_id="plan-1", kind="message_received").count() == 1


def test_a_tenant_that_is_not_the_businesss_is_permanent_and_plans_nothing(business):
    received("tenant-1")
    # As if the business's tenant changed between intake's check and the plan.
    ProcessedMessage.objects.filter(processing_id="tenant-1").update(
        payload=event("tenant-1", tenant_id="tenant-other")
    )
    assert saga.claim("tenant-1", 1)
    with pytest.raises(saga.PermanentStageError, match="tenant_id does not match"):
        saga.plan_run("tenant-1", 1)
    assert not SagaStep.objects.filter(message__processing_id="tenant-1").exists()
    assert row("tenant-1").planned_run is None


def test_an_unclaimed_row_is_not_planned(business):
    received("unclaimed-1")
    with pytest.raises(saga.SagaStopped):
        saga.plan_run("unclaimed-1", 1)
    with pytest.raises(saga.MessagePurged):
        saga.plan_run("never-taken-in", 1)
    assert not SagaStep.objects.exists()
    assert row("unclaimed-1").status == ProcessedMessage.Status.RECEIVED


# --- steps: one planned action --------------------------------------------------


def test_a_step_acts_once_however_often_its_task_is_delivered(shop):
    planned("step-1")
    before = stock()
    assert saga.run_step("step-1", 1, 1) == saga.StepOutcome(done=True)
    assert saga.run_step("step-1", 1, 1) == saga.StepOutcome(done=True)
    order = Order.objects.get(processing_id="step-1")
    assert order.status == Order.Status.CREATED
    assert stock() == before - 2
    step = steps("step-1")["CREATE_ORDER"]
    assert (step.status, step.attempts) == (Step.SUCCEEDED, 1)
    assert step.result["order_id"] == order.pk


def test_a_retryable_failure_is_retried_on_schedule_then_fails_for_good(shop, httpserver):
    webhook_answers(httpserver, 500)
    planned("retry-1")
    assert saga.run_step("retry-1", 1, 1).done
    delays = [saga.run_step("retry-1", 1, 2, jitter=1.0).retry_in for _ in saga.RETRY_DELAYS]
    assert delays == list(saga.RETRY_DELAYS)
    assert steps("retry-1")["NOTIFY_SALES"].status == Step.PENDING
    assert "500" in steps("retry-1")["NOTIFY_SALES"].error

    outcome = saga.run_step("retry-1", 1, 2)
    assert (outcome.done, outcome.failed, outcome.retry_in) == (False, True, None)
    assert outcome.error.endswith("answered HTTP 500"), "the task ends as FAILURE with this error"
    step = steps("retry-1")["NOTIFY_SALES"]
    assert (step.status, step.attempts) == (Step.FAILED, len(saga.RETRY_DELAYS) + 1)
    message = row("retry-1")
    assert (message.failed_stage, message.failure_reason) == ("NOTIFY_SALES", DeadLetter.Reason.RETRIES_EXHAUSTED)
    assert message.status == ProcessedMessage.Status.PROCESSING, "compensation and the dead letter come next"


def test_a_permanent_failure_fails_the_run_at_once(shop, httpserver):
    webhook_answers(httpserver, 422)
    planned("perm-1")
    saga.run_step("perm-1", 1, 1)
    outcome = saga.run_step("perm-1", 1, 2)
    assert (outcome.done, outcome.failed, outcome.retry_in) == (False, True, None)
    assert outcome.error.endswith("answered HTTP 422"), "the task ends as FAILURE with this error"
    assert steps("perm-1")["NOTIFY_SALES"].attempts == 1
    assert (row("perm-1").failed_stage, row("perm-1").failure_reason) == (
        "NOTIFY_SALES",
        DeadLetter.Reason.NON_RETRYABLE,
    )


def test_a_step_of_a_run_that_has_ended_does_nothing(shop):
    planned("ended-1")
    fail_run("ended-1", stage="CREATE_ORDER")
    saga.write_dead_letter("ended-1", 1)
    with pytest.raises(saga.SagaStopped):
        saga.run_step("ended-1", 1, 1)
    assert not Order.objects.filter(processing_id="ended-1").exists()


# --- compensation: the succeeded actions undone, in reverse --------------------


def test_compensation_undoes_the_succeeded_actions_in_reverse_once(shop, httpserver):
    webhook_answers(httpserver, 200)
    planned("undo-1")
    before = stock()
    assert saga.run_step("undo-1", 1, 1).done and saga.run_step("undo-1", 1, 2).done
    fail_run("undo-1")

    assert saga.compensate_steps("undo-1", 1) is True
    done = steps("undo-1")
    assert {a: s.status for a, s in done.items()} == {
        "CREATE_ORDER": Step.COMPENSATED,
        "NOTIFY_SALES": Step.COMPENSATED,
    }
    assert done["NOTIFY_SALES"].updated_at <= done["CREATE_ORDER"].updated_at, "the last action is undone first"
    assert Order.objects.get(processing_id="undo-1").status == Order.Status.CANCELLED
    assert stock() == before
    assert SalesNotification.objects.get(processing_id="undo-1").status == SalesNotification.Status.RETRACTED
    posts = [r for r, _ in httpserver.log if r.path == HOOK]
    assert len(posts) == 2 and posts[1].get_json()["type"] == "retraction"

    assert saga.compensate_steps("undo-1", 1) is True  # a redelivered compensate task
    assert stock() == before
    assert [s.compensation_attempts for s in steps("undo-1").values()] == [1, 1]
    assert len([r for r, _ in httpserver.log if r.path == HOOK]) == 2


def test_a_retryable_compensation_failure_stops_before_the_earlier_actions(shop, httpserver):
    webhook_answers(httpserver, 200, 503)  # the notification goes out; its retraction fails
    planned("undo-2")
    before = stock()
    saga.run_step("undo-2", 1, 1)
    saga.run_step("undo-2", 1, 2)
    fail_run("undo-2")

    assert saga.compensate_steps("undo-2", 1) is False, "to be tried again"
    notify, order = steps("undo-2")["NOTIFY_SALES"], steps("undo-2")["CREATE_ORDER"]
    assert (notify.status, notify.compensation_attempts) == (Step.SUCCEEDED, 1)
    assert "503" in notify.compensation_error
    assert order.status == Step.SUCCEEDED, "not undone before the action after it"
    assert stock() == before - 2


# --- dead letter: the failed run's DLQ entry ----------------------------------


def test_the_dead_letter_holds_the_failed_run_and_is_written_once(shop, httpserver, settings):
    webhook_answers(httpserver, 422)
    planned("dead-1")
    saga.run_step("dead-1", 1, 1)
    saga.run_step("dead-1", 1, 2)
    # As an older version stored it: the access token in the error, unredacted.
    ProcessedMessage.objects.filter(processing_id="dead-1").update(last_error=f"boom {TOKEN}")
    saga.compensate_steps("dead-1", 1)

    entry = saga.write_dead_letter("dead-1", 1)
    assert entry is not None
    assert (entry.stage, entry.reason, entry.status) == (
        "NOTIFY_SALES",
        DeadLetter.Reason.NON_RETRYABLE,
        DeadLetter.Status.OPEN,
    )
    assert (entry.processing_id, entry.saga_run, entry.business_id, entry.lead_id) == (
        "dead-1",
        1,
        shop.business_id,
        "lead-123",
    )
    assert entry.payload["processing_id"] == "dead-1" and entry.kafka_topic == "t"
    assert [(s["action"], s["status"]) for s in entry.saga_state["steps"]] == [
        ("CREATE_ORDER", Step.COMPENSATED),
        ("NOTIFY_SALES", Step.FAILED),
    ]
    assert TOKEN not in entry.error_message
    assert "reply" not in entry.saga_state, "only an opted-out customer's entry says why no reply goes"
    assert row("dead-1").status == ProcessedMessage.Status.FAILED

    assert saga.write_dead_letter("dead-1", 1).pk == entry.pk
    assert DeadLetter.objects.filter(processing_id="dead-1").count() == 1
    assert saga.write_dead_letter("dead-1", 2) is None, "not a run this row is in"


def test_an_opted_out_customers_dead_letter_says_no_reply_goes(shop, httpserver, client, django_user_model):
    webhook_answers(httpserver, 422)
    planned("dead-out")
    row("dead-out").lead_record.opt_out(source="keyword")
    saga.run_step("dead-out", 1, 1)
    saga.run_step("dead-out", 1, 2)
    saga.compensate_steps("dead-out", 1)
    entry = saga.write_dead_letter("dead-out", 1)
    assert entry.saga_state["reply"] == {"status": "not sent", "why": saga.dead_letter.OPTED_OUT_WHY}

    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    page = client.get(f"/admin/dlq/deadletter/{entry.pk}/change/").content.decode()
    assert "reply: <strong>not sent</strong> (the customer opted out of automatic messages" in page


# --- reply: the last step, never undone ---------------------------------------


def test_the_reply_is_sent_once_in_the_customers_thread(shop, httpserver):
    graph_answers(httpserver, 200, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.reply-1"}]})
    planned("reply-1")
    assert saga.send_reply("reply-1", 1) == saga.StepOutcome(done=True)
    assert saga.send_reply("reply-1", 1) == saga.StepOutcome(done=True)
    sent = OutboundMessage.objects.get(processing_id="reply-1")
    assert sent.status == OutboundMessage.Status.SENT and sent.wamid == "wamid.reply-1"
    [request] = [r for r, _ in httpserver.log if r.path.endswith("/messages")]
    body = request.get_json()
    assert body["text"]["body"] == row("reply-1").reply_text
    assert body["context"]["message_id"] == event("reply-1")["message_id"]


def test_a_reply_that_fails_for_good_is_dead_lettered_and_the_actions_stand(shop, httpserver):
    webhook_answers(httpserver, 200)
    graph_answers(
        httpserver,
        400,
        {"error": {"message": "(#131026) Message undeliverable", "type": "OAuthException", "code": 131026}},
    )
    planned("reply-2")
    saga.run_step("reply-2", 1, 1)
    saga.run_step("reply-2", 1, 2)
    outcome = saga.send_reply("reply-2", 1)
    entry = DeadLetter.objects.get(processing_id="reply-2")
    # Failed, with the stored error: the reply task ends as FAILURE with it (Flower counts it).
    assert outcome == saga.StepOutcome(done=False, failed=True, error=entry.error_message)
    assert outcome.error.startswith("CloudApiPermanent: ") and "131026" in outcome.error
    assert (entry.stage, entry.reason) == (DeadLetter.Stage.REPLY, DeadLetter.Reason.NON_RETRYABLE)
    assert row("reply-2").status == ProcessedMessage.Status.FAILED
    assert Order.objects.get(processing_id="reply-2").status == Order.Status.CREATED
    assert {s.status for s in steps("reply-2").values()} == {Step.SUCCEEDED}


# --- finish: the message processed ---------------------------------------------


def test_finish_marks_the_message_processed_once(shop, httpserver):
    webhook_answers(httpserver, 200)
    planned("finish-1")
    saga.run_step("finish-1", 1, 1)
    saga.run_step("finish-1", 1, 2)
    assert saga.finish_run("finish-1", 1) is True
    message = row("finish-1")
    assert message.status == ProcessedMessage.Status.PROCESSED and message.finished_at is not None
    with pytest.raises(saga.SagaStopped):
        saga.finish_run("finish-1", 1)  # a redelivered finish task: the run is over
    assert row("finish-1").finished_at == message.finished_at


def test_finish_waits_for_every_step_and_leaves_a_failed_run_failed(shop):
    planned("finish-2")
    saga.run_step("finish-2", 1, 1)
    with pytest.raises(saga.SagaStopped, match="unfinished steps"):
        saga.finish_run("finish-2", 1)
    assert row("finish-2").status == ProcessedMessage.Status.PROCESSING

    fail_run("finish-2")
    assert saga.finish_run("finish-2", 1) is False
    assert row("finish-2").status == ProcessedMessage.Status.PROCESSING, "compensation decides, not finish"
