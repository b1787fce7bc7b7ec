"""Celery tasks of the pipeline."""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from whatsapp.models import ProcessedMessage

log = logging.getLogger(__name__)


@shared_task(name="whatsapp.process_message", acks_late=True)
def process_message(processing_id: str) -> str:
    """Claim the inbox row and finish it. Idempotent: a redelivered copy finds
    the row no longer RECEIVED and does nothing."""
    with transaction.atomic():
        claimed = ProcessedMessage.objects.filter(
            processing_id=processing_id, status=ProcessedMessage.Status.RECEIVED
        ).update(status=ProcessedMessage.Status.PROCESSING, started_at=timezone.now(), attempts=1)
    if not claimed:
        return "skipped"
    ProcessedMessage.objects.filter(processing_id=processing_id).update(
        status=ProcessedMessage.Status.PROCESSED, finished_at=timezone.now()
    )
    return "processed"
