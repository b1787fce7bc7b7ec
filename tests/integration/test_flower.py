"""What Flower shows is what happened: Flower itself, run as the stack runs it, reading a
real worker's task events (-E) through the broker, asked over its HTTP API.

A copy of a chain that dedupe stops (a message's chain sent twice, as a redelivery or
ingest's re-read after a crash does) ends as SUCCESS saying so, and intent as SUCCESS
naming what replaced it, rather than STARTED for ever; each dead-lettered message has
exactly one FAILURE, its failing action's, whether it was refused at once or ran out of
retries (its retries show as RETRY, on the same task); and Flower lists all three queues,
consumed by a worker started without -Q because every queue is declared.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

import pytest
import requests
from werkzeug import Request, Response

from config.celery import app
from dlq.models import DeadLetter
from tests.conftest import Pipeline
from tests.support.events import event
from tests.support.processes import ManagedProcess, wait_until
from whatsapp.models import ProcessedMessage
from whatsapp.pipeline import chains

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

QUEUES = {"pipeline", "webhooks", "whatsapp"}
FINAL = {"SUCCESS", "FAILURE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Flower:
    """A Flower process and its HTTP API."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process, self.url = process, url

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def tasks(self) -> dict[str, dict[str, Any]]:
        return self.get("/api/tasks", limit=1000)

    def tasks_of(self, *processing_ids: str) -> dict[str, dict[str, Any]]:
        return {uuid: task for uuid, task in self.tasks().items() if uuid.split(":")[0] in processing_ids}


@pytest.fixture
def flower(child_env, processes) -> Flower:
    port = free_port()
    # Flower's API answers without a login only when told to (the stack's Flower listens on 127.0.0.1).
    env = {**child_env, "FLOWER_UNAUTHENTICATED_API": "true"}
    argv = [sys.executable, "-m", "celery", "-A", "config", "flower", "--address=127.0.0.1", f"--port={port}"]
    proc = ManagedProcess("flower", argv, env)
    processes.append(proc)
    flower = Flower(proc, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        assert proc.alive(), proc.output()[-4000:]
        try:
            flower.get("/api/tasks", limit=1)
        except requests.RequestException:
            return False
        return True

    wait_until(answers, timeout=60, message="Flower to answer")
    return flower


@pytest.fixture
def stack(bootstrap, topic, start_ingest, start_worker, business, flower) -> Pipeline:
    """Ingest and a worker with task events on, started without -Q, once Flower receives its events."""
    worker = start_worker(queues=None, extra_args=("-E",))
    # Events are published, not queued: wait until Flower sees one of the worker's tasks,
    # so that it misses none of the test's. The sweep finds nothing to do in a fresh database.
    deadline = time.monotonic() + 60
    for attempt in range(1000):
        warm_up = app.signature("whatsapp.sweep").apply_async(task_id=f"warm-up-{attempt}")
        try:
            wait_until(
                lambda w=warm_up: flower.tasks().get(w.id, {}).get("state") == "SUCCESS",
                timeout=3,
                message="Flower to see the warm-up task",
            )
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"Flower saw no task event:\n{flower.process.output()[-4000:]}") from None
    return Pipeline(bootstrap, topic, start_ingest(topic), [worker])


def test_flower_shows_stopped_copies_as_success_and_one_failure_per_dead_letter(stack, flower, business, httpserver):
    # The sales webhook refuses one message for good (422) and is down for another (503) until
    # its retries run out: both are dead-lettered after compensation.
    def sales(request: Request) -> Response:
        body = json.loads(request.data)
        status = {"flower-refused": 422, "flower-exhausted": 503}.get(body.get("processing_id"), 200)
        return Response(json.dumps({"ok": status == 200}), status=status, content_type="application/json")

    httpserver.expect_request("/sales", method="POST").respond_with_handler(sales)
    business.sales_webhook_url = httpserver.url_for("/sales")
    business.save()

    ok, refused, exhausted = "flower-ok", "flower-refused", "flower-exhausted"
    stack.send(
        [
            event(ok, intent="ORDER_REQUEST", confidence=0.84),  # one action: FLAG_FOR_REVIEW
            event(refused, intent="PRICING_INQUIRY", confidence=0.7),  # NOTIFY_SALES
            event(exhausted, intent="PRICING_INQUIRY", confidence=0.7),
        ]
    )
    stack.wait_settled(3, timeout=120)
    statuses = dict(ProcessedMessage.objects.values_list("processing_id", "status"))
    assert statuses == {ok: "PROCESSED", refused: "FAILED", exhausted: "FAILED"}
    dead = dict(DeadLetter.objects.values_list("processing_id", "reason"))
    assert dead == {refused: "non_retryable", exhausted: "retries_exhausted"}

    # The processed message's chain sent again: dedupe stops this copy.
    dedupe_id = chains.task_id(ok, 1, "dedupe")
    chains.pipeline_signature(ok, 1).apply_async()
    wait_until(
        lambda: sum(stack.workers[0].output().count(f"[{dedupe_id}] {end}") for end in ("succeeded", "ignored")) == 2,
        timeout=30,
        message="the second copy's dedupe to end",
    )

    def settled_in_flower() -> bool:
        tasks = flower.tasks_of(ok, refused, exhausted)
        return (
            all(task["state"] in FINAL for task in tasks.values())
            and tasks.get(dedupe_id, {}).get("result") == "{'stopped': 'duplicate'}"
            and {chains.task_id(pid, 1, "compensate") for pid in (refused, exhausted)} <= set(tasks)
        )

    try:
        wait_until(settled_in_flower, timeout=30, message="Flower to show every task ended")
    except AssertionError:
        raise AssertionError(json.dumps(flower.tasks_of(ok, refused, exhausted), indent=1)[-6000:]) from None
    tasks = flower.tasks_of(ok, refused, exhausted)
    state = {uuid: task["state"] for uuid, task in tasks.items()}

    # The stopped copy and intent end as SUCCESS, with a result that says what happened.
    assert state[dedupe_id] == "SUCCESS"
    assert tasks[chains.task_id(ok, 1, "intent")]["state"] == "SUCCESS"
    assert tasks[chains.task_id(ok, 1, "intent")]["result"] == "'replaced by 1 action: FLAG_FOR_REVIEW'"
    # The processed message's tasks, one per step: no separate reply, finish or read receipt.
    assert {uuid for uuid in state if uuid.startswith(f"{ok}:")} == {
        chains.task_id(ok, 1, step) for step in ("dedupe", "intent", "action1-FLAG_FOR_REVIEW", chains.TAIL_STEP)
    }
    assert tasks[chains.task_id(ok, 1, chains.TAIL_STEP)]["name"] == chains.REPLY_AND_FINISH
    assert state[chains.task_id(ok, 1, chains.TAIL_STEP)] == "SUCCESS"
    # Nothing of these messages is left STARTED (or RECEIVED): every task reached an end.
    assert not {uuid: s for uuid, s in state.items() if s not in FINAL}

    # Exactly one FAILURE per dead letter, the failing action's, with the stored error.
    failures = {uuid: task for uuid, task in tasks.items() if task["state"] == "FAILURE"}
    assert set(failures) == {
        chains.task_id(refused, 1, "action1-NOTIFY_SALES"),
        chains.task_id(exhausted, 1, "action1-NOTIFY_SALES"),
    }
    assert len(failures) == DeadLetter.objects.count()
    for pid, status in ((refused, "422"), (exhausted, "503")):
        exception = failures[chains.task_id(pid, 1, "action1-NOTIFY_SALES")]["exception"]
        assert exception.startswith("StageFailed(") and status in exception, exception
    # The one that ran out of retries was retried on the same task (RETRY meanwhile), failing once.
    assert failures[chains.task_id(exhausted, 1, "action1-NOTIFY_SALES")]["retries"] >= 3
    assert failures[chains.task_id(refused, 1, "action1-NOTIFY_SALES")]["retries"] == 0
    # Compensation ran and succeeded; the tail (reply, finish) after a failed action never ran.
    for pid in (refused, exhausted):
        assert state[chains.task_id(pid, 1, "compensate")] == "SUCCESS"
        assert not {chains.task_id(pid, 1, step) for step in (chains.TAIL_STEP, "reply", "finish")} & set(state)

    # Flower's failure count over all tasks it saw matches the dead letters.
    assert len(flower.get("/api/tasks", state="FAILURE")) == DeadLetter.objects.count() == 2


def test_every_queue_is_declared_so_flower_and_the_workers_list_it(start_worker, flower):
    """A worker started without -Q consumes every declared queue, and Flower lists them all."""
    worker = start_worker(queues=None, extra_args=("-E",))
    active = app.control.inspect(timeout=5).active_queues() or {}
    consumed = {queue["name"] for queues in active.values() for queue in queues}
    assert consumed == QUEUES, (active, worker.output()[-2000:])

    wait_until(
        lambda: {q["name"] for q in flower.get("/api/queues/length")["active_queues"]} == QUEUES,
        timeout=30,
        message="Flower to list the three queues",
    )
