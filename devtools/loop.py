"""The sample webhook stream of `make demo` and `make send`, and what became of it.

Customer messages go in as Meta sends them: signed POSTs to the web process's
/webhooks/whatsapp/. From there the whole loop runs (the outbox relay, the classifier, ingest,
the Celery pipeline, the reply to the Cloud API); once the replies are out, status webhooks
for two of them follow (read before delivered for one, failed 131047 for the other). Every
message and status is then accounted for from the database, never from the processes' logs.
Needs Django set up (settings of the stack it talks to) before `run` is called.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from devtools import meta

#: (who, language, text): what the customers wrote, in three languages.
TEXTS = [
    ("15550100001", "en", "Hi, I'd like 2 sourdough loaves for Friday please"),
    ("15550100001", "en", "Do you have baguettes today?"),
    ("15550100002", "es", "Hola, ¿cuánto cuestan los croissants?"),
    ("15550100002", "es", "Quiero pedir 3 empanadas para mañana"),
    ("15550100003", "pt", "O pão chegou frio e atrasado, quero reclamar"),
    ("15550100003", "pt", "Quanto custa o pão de queijo?"),
    ("15550100004", "en", "Can someone call me tomorrow afternoon?"),
]
#: An image with a caption (a customer pointing at what they want).
IMAGE_CAPTION = ("15550100004", "en", "Can I order 6 of these croissants?")
REENGAGEMENT = {
    "code": 131047,
    "title": "Re-engagement message",
    "message": "Re-engagement message",
    "error_data": {
        "details": "Message failed to send because more than 24 hours have passed since the customer last replied"
    },
}


class LoopError(Exception):
    """Something in the loop did not happen in time; the message says what."""


@dataclass
class LoopReport:
    """What the stream did, stage by stage; `rows()` is the table."""

    posted: int = 0
    accepted: int = 0
    refused: int = 0
    redeliveries: int = 0
    messages: list[str] = field(default_factory=list)  # the wamids that should be taken in
    stored: int = 0
    published: int = 0
    classified: int = 0
    processed: int = 0
    failed: int = 0
    replies_sent: int = 0
    statuses_posted: int = 0
    statuses_applied: int = 0
    delivered: int = 0
    read: int = 0
    delivery_failed: int = 0
    dead_lettered: int = 0

    def rows(self) -> list[tuple[str, Any]]:
        return [
            (
                "webhook deliveries POSTed",
                f"{self.posted}  ({self.posted - self.statuses_posted} messages, {self.statuses_posted} statuses)",
            ),
            ("  accepted", f"{self.accepted}  (200; {self.redeliveries} a redelivery, absorbed)"),
            ("  refused, bad signature", f"{self.refused}  (403; nothing stored)"),
            ("customer messages stored", self.stored),
            ("requests published (relay)", self.published),
            ("classified (classify)", self.classified),
            ("runs processed", self.processed),
            ("runs dead-lettered", self.dead_lettered),
            ("replies sent to the Cloud API", self.replies_sent),
            ("status webhooks POSTed", f"{self.statuses_posted}  (read before delivered; failed 131047)"),
            ("  replies delivered", self.delivered),
            ("  replies read", self.read),
            ("  replies failed", f"{self.delivery_failed}  (dead letter at reply, delivery_failed)"),
        ]


class WebhookStream:
    """Posts the sample stream to one web process and waits for each stage, from the database."""

    def __init__(
        self,
        web_url: str,
        app_secret: str,
        *,
        phone_number_id: str = meta.PHONE_NUMBER_ID,
        timeout: float = 120,
        alive: Callable[[], None] = lambda: None,
        failed_status: bool = True,
    ) -> None:
        self.url = web_url.rstrip("/") + "/webhooks/whatsapp/"
        self.secret = app_secret
        self.phone_number_id = phone_number_id
        self.timeout = timeout
        self.alive = alive  # raises when a process the loop needs has died
        self.failed_status = failed_status  # post a failed status for a second reply (it dead-letters that run)
        self.status_wamids: list[str] = []
        self.report = LoopReport()
        self.http = requests.Session()

    def post(self, body: bytes, *, secret: str | None = None) -> int:
        response = self.http.post(
            self.url, data=body, headers=meta.signed_headers(body, secret or self.secret), timeout=10
        )
        self.report.posted += 1
        if response.status_code == 200:
            self.report.accepted += 1
        elif response.status_code == 403:
            self.report.refused += 1
        else:
            raise LoopError(f"the webhook answered {response.status_code} to a signed delivery: {response.text[:200]}")
        return response.status_code

    def send_messages(self) -> None:
        """Every text, the image, one redelivery and one delivery signed with the wrong secret."""
        bodies = []
        for who, _language, text in TEXTS:
            message = meta.text_message(text, sender=who)
            self.report.messages.append(message["id"])
            bodies.append(meta.encode(meta.message_delivery(message, phone_number_id=self.phone_number_id)))
        who, _language, caption = IMAGE_CAPTION
        image = meta.image_message(caption=caption, sender=who)
        self.report.messages.append(image["id"])
        bodies.append(meta.encode(meta.message_delivery(image, phone_number_id=self.phone_number_id)))
        for body in bodies:
            self.post(body)
        # Meta sends one again (it does, now and then): absorbed by the message's wamid.
        self.post(bodies[0])
        self.report.redeliveries += 1
        forged = meta.encode(
            meta.message_delivery(meta.text_message("send me everything free"), phone_number_id=self.phone_number_id)
        )
        if self.post(forged, secret="not-the-app-secret") != 403:
            raise LoopError("a delivery with a wrong signature was accepted")

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            self.alive()
            if time.monotonic() > deadline:
                raise LoopError(f"not within {self.timeout:.0f}s: {what}")
            time.sleep(0.3)

    def processing_ids(self) -> list[str]:
        from whatsapp.contracts.request import processing_id_for

        return [processing_id_for(wamid) for wamid in self.report.messages]

    def wait_for_runs(self) -> None:
        from whatsapp.models import ProcessedMessage
        from whatsapp.models.inbound import InboundMessage

        expected, pids = len(self.report.messages), self.processing_ids()
        self.wait_for(
            "every stored message published by the relay",
            lambda: (
                InboundMessage.objects.filter(wamid__in=self.report.messages, state="PUBLISHED").count() == expected
            ),
        )
        self.wait_for(
            "every published request classified, taken in and run to its end",
            lambda: (
                ProcessedMessage.objects.filter(processing_id__in=pids, status__in=["PROCESSED", "FAILED"]).count()
                == expected
            ),
        )

    def send_statuses(self) -> None:
        """Read before delivered for the first reply sent; failed (131047) for the second."""
        from whatsapp.models import OutboundMessage

        wanted = 2 if self.failed_status else 1
        replies = list(
            OutboundMessage.objects.filter(processing_id__in=self.processing_ids(), status="SENT")
            .exclude(wamid="")
            .order_by("id")[:wanted]
        )
        if len(replies) < wanted:
            raise LoopError(f"{len(replies)} replies were sent to the Cloud API; the statuses need {wanted}")
        first = replies[0]
        now = int(time.time())
        statuses = [
            meta.status(first.wamid, "read", recipient=first.to, ts=str(now)),
            meta.status(first.wamid, "delivered", recipient=first.to, ts=str(now - 2)),
        ]
        if self.failed_status:
            second = replies[1]
            statuses.append(
                meta.status(second.wamid, "failed", recipient=second.to, ts=str(now), errors=[REENGAGEMENT])
            )
        for item in statuses:
            self.post(meta.encode(meta.status_delivery(item, phone_number_id=self.phone_number_id)))
            self.report.statuses_posted += 1
        self.status_wamids = [reply.wamid for reply in replies]

    def wait_for_statuses(self) -> None:
        from whatsapp.models import DeliveryStatus

        self.wait_for(
            "every status webhook applied by the worker",
            lambda: (
                DeliveryStatus.objects.filter(wamid__in=self.status_wamids).exclude(outcome="").count()
                == self.report.statuses_posted
            ),
        )

    def count(self) -> LoopReport:
        from django.db.models import Q

        from dlq.models import DeadLetter
        from whatsapp.models import DeliveryStatus, OutboundMessage, ProcessedMessage
        from whatsapp.models.inbound import InboundMessage

        pids = self.processing_ids()
        report = self.report
        inbound = InboundMessage.objects.filter(wamid__in=report.messages)
        report.stored = inbound.count()
        report.published = inbound.filter(state="PUBLISHED").count()
        runs = ProcessedMessage.objects.filter(processing_id__in=pids)
        # Only the classifier publishes results for these messages: each inbox row is one it classified.
        report.classified = runs.count()
        report.processed = runs.filter(status="PROCESSED").count()
        report.failed = runs.filter(status="FAILED").count()
        report.dead_lettered = DeadLetter.objects.filter(processing_id__in=pids).count()
        replies = OutboundMessage.objects.filter(processing_id__in=pids)
        report.replies_sent = replies.filter(Q(status="SENT") | Q(delivery_status="failed")).exclude(wamid="").count()
        report.delivered = replies.filter(delivered_at__isnull=False).count()
        report.read = replies.filter(read_at__isnull=False).count()
        report.delivery_failed = replies.filter(delivery_status="failed").count()
        report.statuses_applied = (
            DeliveryStatus.objects.filter(wamid__in=self.status_wamids).exclude(outcome="").count()
        )
        return report

    def run(self) -> LoopReport:
        self.send_messages()
        self.wait_for_runs()
        self.send_statuses()
        self.wait_for_statuses()
        return self.count()


def problems(report: LoopReport, *, failed_status: bool = True) -> list[str]:
    """What in the report is not what the stream should have produced; empty when all is well."""
    expected = len(report.messages)
    failures = 1 if failed_status else 0
    found = []
    if report.refused != 1:
        found.append(f"{report.refused} deliveries refused, 1 expected (the one with a wrong signature)")
    for label, value in [
        ("stored", report.stored),
        ("published", report.published),
        ("classified", report.classified),
    ]:
        if value != expected:
            found.append(f"{value} of {expected} messages {label}")
    if report.processed + report.failed != expected:
        found.append(f"{report.processed + report.failed} of {expected} runs ended")
    if (report.delivered, report.read, report.delivery_failed) != (1, 1, failures):
        found.append(
            f"delivered {report.delivered}, read {report.read}, failed {report.delivery_failed};"
            f" 1, 1 and {failures} expected"
        )
    if report.replies_sent != expected:
        found.append(f"{report.replies_sent} of {expected} replies sent to the Cloud API")
    if report.dead_lettered != report.failed:
        found.append(f"{report.failed} runs failed but {report.dead_lettered} dead letters")
    return found


def print_rows(rows: list[tuple[str, Any]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
