"""The outbox relay: stored inbound messages out as request events on KAFKA_REQUEST_TOPIC.

A round claims the oldest unpublished rows (SELECT ... FOR UPDATE SKIP LOCKED, so relays
can run side by side), builds each row's v1 request and validates it, produces them with an
idempotent producer (acks=all), waits for every delivery report, and marks published only
the rows the broker acknowledged, all in the transaction that holds the rows' locks.

What a crash costs:
- before the broker acknowledged: the rows are still unpublished and go out on the next
  round (or the next relay). Nothing is lost.
- after the acknowledgement, before the mark commits: the same rows are published again.
  The request carries the same processing_id (derived from the wamid), so the consumer
  (the AI service, or the reference classifier) and, after it, ingest dedupe it: at least
  once on the topic, once in effect.

A broker that does not acknowledge (down, or slower than RELAY_DELIVERY_TIMEOUT_MS) leaves
its rows unpublished with the error noted; the relay backs off and tries again. A row whose
request is not valid (say, a customer number that is not a number) is a bad record, not an
outage: it is marked REJECTED with the reason and never retried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Producer
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from core.errors import is_outage
from core.metrics import counters
from whatsapp.contracts.request import to_request_payload, validate_request
from whatsapp.contracts.result import SCHEMA_VERSION, ContractError
from whatsapp.kafka import producer_config
from whatsapp.models.inbound import OUTBOX_CHANNEL, InboundMessage

log = logging.getLogger("whatsapp.outbox")


def request_payload(row: InboundMessage) -> dict[str, Any]:
    """The v1 request event of a stored message, validated. Raises ContractError."""
    if row.business is None:
        raise ContractError("invalid_payload", ["business: the message was not routed to a business"])
    media = None
    if row.media_id:
        media = {
            key: value
            for key, value in {
                "id": row.media_id,
                "mime_type": row.media_mime_type,
                "caption": row.media_caption,
                "filename": row.media_filename,
            }.items()
            if value
        }
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "processing_id": row.processing_id,
        "business_id": row.business.business_id,
        "tenant_id": row.business.tenant_id,
        "lead_id": row.lead_id,
        "customer": {
            key: value
            for key, value in {
                "wa_id": row.wa_id,
                "user_id": row.user_id,
                "parent_user_id": row.parent_user_id,
                "username": row.username,
                "name": row.profile_name,
            }.items()
            if value
        },
        "message": {
            "id": row.wamid,
            "type": row.type,
            "text": row.text,
            **({"media": media} if media else {}),
            # Meta's own timestamp: the lead's last_inbound_at (the 24-hour window) comes from it.
            "received_at": row.received_at.isoformat() if row.received_at else None,
        },
    }
    return to_request_payload(validate_request(data))


@dataclass
class RelayStats:
    rounds: int = 0
    published: int = 0
    failed: int = 0
    rejected: int = 0
    outages: int = 0

    def summary(self) -> str:
        return (
            f"{self.published} published in {self.rounds} rounds, {self.failed} not acknowledged (retried), "
            f"{self.rejected} rejected"
        )


@dataclass
class RoundResult:
    claimed: int = 0
    published: int = 0
    failed: int = 0
    rejected: int = 0
    error: str = ""


class Relay:
    def __init__(
        self,
        *,
        topic: str | None = None,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        producer_factory: Callable[[dict], Producer] = Producer,
    ) -> None:
        self.topic = topic or settings.KAFKA_REQUEST_TOPIC
        self.batch_size = batch_size or settings.RELAY_BATCH_SIZE
        self.poll_interval = poll_interval or settings.RELAY_POLL_INTERVAL_SECONDS
        self.producer_factory = producer_factory
        self.producer = self._new_producer()
        self.stats = RelayStats()
        self.stopping = False
        self._listener: psycopg.Connection[Any] | None = None
        self._fatal = False

    # -- lifecycle -----------------------------------------------------------
    def stop(self, *_: object) -> None:
        if not self.stopping:
            log.info("relay: stop requested; finishing the round in hand")
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> RelayStats:
        log.info("relay: publishing the outbox on %s, %d rows a round", self.topic, self.batch_size)
        delay = 0.5
        try:
            while not self.stopping:
                try:
                    result = self.relay_once()
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    self.stats.outages += 1
                    log.warning(
                        "relay: database unavailable (%s: %s); retrying in %.1fs",
                        type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "",
                        delay,
                    )
                    connection.close()
                    self._close_listener()
                    self._sleep(delay)
                    delay = self._backoff(delay)
                    continue
                if result.failed:
                    log.warning(
                        "relay: %d of %d requests not acknowledged by the broker (%s); kept, retrying in %.1fs",
                        result.failed,
                        result.claimed,
                        result.error,
                        delay,
                    )
                    self._sleep(delay)
                    delay = self._backoff(delay)
                    continue
                delay = 0.5
                if result.claimed < self.batch_size:
                    self._wait_for_work()
        finally:
            self._close_listener()
            self.producer.flush(5)
            close_old_connections()
        log.info("relay: %s", self.stats.summary())
        return self.stats

    # -- one round -----------------------------------------------------------
    def relay_once(self) -> RoundResult:
        """Claim a batch, publish it, mark what the broker acknowledged. Raises on a database outage."""
        result = RoundResult()
        with transaction.atomic():
            rows = InboundMessage.objects.claim_batch(self.batch_size)
            result.claimed = len(rows)
            if not rows:
                return result
            ready: list[tuple[InboundMessage, bytes]] = []
            for row in rows:
                try:
                    payload = request_payload(row)
                except ContractError as exc:
                    reason = f"{exc.reason}: {'; '.join(exc.errors)}"
                    log.error("relay: message %s is not a valid request, rejected: %s", row.pk, reason)
                    row.reject(reason)
                    result.rejected += 1
                    continue
                ready.append((row, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")))
            if settings.RELAY_DEBUG_PUBLISH_DELAY_SECONDS:
                time.sleep(settings.RELAY_DEBUG_PUBLISH_DELAY_SECONDS)
            acked, errors = self._publish(ready)
            if acked and settings.RELAY_DEBUG_MARK_DELAY_SECONDS:
                log.info("relay: %d acknowledged; marking them published", len(acked))
                time.sleep(settings.RELAY_DEBUG_MARK_DELAY_SECONDS)
            failed = [row.pk for row, _ in ready if row.pk not in acked]
            error = "; ".join(sorted(set(errors.values())))[:500] or "no delivery report"
            result.published = InboundMessage.objects.mark_published(sorted(acked), timezone.now())
            result.failed = InboundMessage.objects.mark_failed(failed, error) if failed else 0
            result.error = error if failed else ""
            counters.outbox_published(result.published)
            counters.outbox_errors("broker", result.failed)
            counters.outbox_errors("rejected", result.rejected)
        self.stats.rounds += 1
        self.stats.published += result.published
        self.stats.failed += result.failed
        self.stats.rejected += result.rejected
        if result.published:
            log.info("relay: published %d request(s) on %s", result.published, self.topic)
        return result

    def _publish(self, ready: list[tuple[InboundMessage, bytes]]) -> tuple[set[int], dict[int, str]]:
        """Produce every request and wait for every delivery report: the ids the broker
        acknowledged, and the error of each that it did not."""
        acked: set[int] = set()
        errors: dict[int, str] = {}

        def report_for(pk: int) -> Callable[[KafkaError | None, Any], None]:
            def report(error: KafkaError | None, _message: Any) -> None:
                if error is None:
                    acked.add(pk)
                else:
                    errors[pk] = error.str() if hasattr(error, "str") else str(error)
                    if error.fatal():
                        self._fatal = True

            return report

        for row, value in ready:
            while True:
                try:
                    self.producer.produce(
                        self.topic, key=row.lead_id.encode("utf-8"), value=value, on_delivery=report_for(row.pk)
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
                except Exception as exc:  # the producer refused it outright (a fatal state, a size)
                    errors[row.pk] = f"{type(exc).__name__}: {exc}"
                    break
        # Every produced message gets its report within the delivery timeout; the margin
        # covers the last in-flight request.
        self.producer.flush(settings.RELAY_DELIVERY_TIMEOUT_MS / 1000 + 5)
        if self._fatal:
            log.error("relay: the producer hit a fatal error; starting a new one")
            self.producer = self._new_producer()
            self._fatal = False
        return acked, errors

    # -- waiting -------------------------------------------------------------
    def _wait_for_work(self) -> None:
        """Until the webhook NOTIFYs (on commit) or the poll interval passes."""
        try:
            listener = self._listen()
            deadline = time.monotonic() + self.poll_interval
            # In slices, so a SIGTERM is acted on within half a second whatever the poll interval.
            while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
                if list(listener.notifies(timeout=min(0.5, remaining), stop_after=1)):
                    # Drain what else arrived: one round serves them all.
                    list(listener.notifies(timeout=0))
                    return
        except psycopg.Error as exc:
            log.warning("relay: cannot listen for new messages (%s); polling", type(exc).__name__)
            self._close_listener()
            self._sleep(self.poll_interval)

    def _listen(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            self._listener = psycopg.connect(**params, autocommit=True)
            self._listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
            log.info("relay: listening on channel %s for new messages", OUTBOX_CHANNEL)
        return self._listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self.producer.poll(min(0.2, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _backoff(delay: float) -> float:
        return min(delay * 2, settings.RELAY_MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)

    def _new_producer(self) -> Producer:
        return self.producer_factory(
            producer_config(
                **{
                    "message.timeout.ms": settings.RELAY_DELIVERY_TIMEOUT_MS,
                    "error_cb": _on_error,
                }
            )
        )


def _on_error(error: KafkaError) -> None:
    level = logging.ERROR if error.fatal() else logging.WARNING
    log.log(level, "relay: kafka: %s", error)
