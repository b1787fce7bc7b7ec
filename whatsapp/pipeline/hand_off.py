"""Handing inbox rows to Celery. The one place ingest, requeue and the
sweeper start a message's processing, so they all start it the same way.

A batch of messages is sent through one producer in one Redis round trip
(kombu's Producer.batch, which pipelines the LPUSHes): ingest hands off
hundreds of messages a batch, and a round trip each was most of its time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from config.celery import app
from core.tracing import MessageTrace
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline.chains import pipeline_steps
from whatsapp.pipeline.lanes import lanes

if TYPE_CHECKING:
    from celery.canvas import Signature
    from kombu import Producer, Queue
    from kombu.transport.base import StdChannel


def hand_off(
    runs: Iterable[tuple[str, int]],
    traces: Mapping[str, MessageTrace] | None = None,
    known: Mapping[str, tuple[str, str]] | None = None,
) -> int:
    """Enqueue the pipeline for each (processing_id, saga_run), each on its
    business's lane (whatsapp.pipeline.lanes), all in one Redis round trip; raises if
    the broker is unreachable (then none or some of them may have been sent:
    sending one again is harmless, its dedupe task finds the row claimed).

    Each chain's first task carries its message's trace, so every task joins it: the
    record's live trace from ingest (`traces`, finished here once sent), else the trace id
    stored on the inbox row (requeue, the sweeper, a record read again). `known` gives
    (business_id, stored trace id) of rows the caller has just read or written, which are
    then not looked up again."""
    runs = list(runs)
    if not runs:
        return 0
    traces = traces or {}
    rows = dict(known or {})
    missing = [pid for pid, _ in runs if pid not in rows]
    if missing:
        rows.update(
            (pid, (business_id, trace_id))
            for pid, business_id, trace_id in ProcessedMessage.objects.filter(processing_id__in=missing).values_list(
                "processing_id", "business_id", "trace_id"
            )
        )
    lane_of = lanes([rows.get(pid, ("", ""))[0] for pid, _ in runs])
    sent: list[MessageTrace] = []
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            publisher = Publisher(producer)
            for (processing_id, saga_run), lane in zip(runs, lane_of, strict=True):
                trace = traces.get(processing_id) or MessageTrace.stored(
                    rows.get(processing_id, ("", ""))[1], name="whatsapp.hand_off", processing_id=processing_id
                )
                sent.append(trace)
                steps = pipeline_steps(processing_id, saga_run, lane=lane)
                # A signature made from a task name always has one; the stubs allow None.
                with trace.sending(cast(str, steps[0].task)) as headers:
                    publisher.send(steps, headers=headers)
    except BaseException:
        for trace in sent:
            trace.finish("unavailable")
        raise
    for trace in sent:
        trace.finish()
    return len(runs)


class Publisher:
    """Sends chains through one producer (inside its batch): each chain's first task, carrying
    the rest of the chain, as chain.apply_async sends it.

    Not chain.apply_async itself: it drops the producer it is given and acquires one per
    chain, so no batch can hold its publish; and app.send_task resolves routes, task options
    and settings anew for every message (Celery reads each setting through Django's), which
    cost ingest about 0.4 ms a message (Celery 5.7, measured), more than storing the record.
    The pipeline's first task has its id, priority and queue (the default) on its signature
    and its arguments are ids, so there is nothing to resolve: Celery's own
    create_task_message and send_task_message build and publish the message, as send_task
    does once it has routed it. No retry per message: inside a batch a publish only buffers,
    and kombu writes the batch in one call it never retries (an error there reaches the caller)."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._queues: dict[str | None, Queue] = {}

    def send(self, steps: Sequence[Signature], *, headers: dict[str, Any] | None = None) -> None:
        """Send the chain of these tasks, in order."""
        first, *rest = steps
        rest.reverse()  # the rest of a chain travels reversed, its next task last
        options = first.options
        queue = self._queue(options.get("queue"))
        message = app.amqp.create_task_message(
            options["task_id"],
            first.task,
            first.args,
            first.kwargs,
            chain=rest or None,
            ignore_result=first.type.ignore_result,
            reply_to=app.thread_oid,
            argsrepr=repr(first.args),
            kwargsrepr=repr(first.kwargs),
        )
        app.amqp.send_task_message(
            self.producer,
            first.task,
            message,
            queue=queue,
            declare=[queue],
            priority=options.get("priority"),
            headers=headers,
            retry=False,
        )

    def _queue(self, name: str | None) -> Queue:
        """The queue, bound to the producer's channel once: kombu's declaration cache then
        answers for every later message (given an unbound queue, it binds a copy each time)."""
        if name not in self._queues:
            # The producer is acquired with its channel; kombu's stubs allow none.
            channel = cast("StdChannel", self.producer.channel)
            self._queues[name] = app.amqp.queues[name or app.amqp.default_queue.name].bind(channel)
        return self._queues[name]
