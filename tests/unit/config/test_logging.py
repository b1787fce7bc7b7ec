"""Log lines as config/logging.py writes them: JSON with the message's ids, or text."""

from __future__ import annotations

import io
import json
import logging

import pytest
import sentry_sdk

from config.logging import ContextFilter, JsonFormatter, TextFormatter, bound, service_name


@pytest.fixture(autouse=True)
def no_current_span():
    """Each test starts outside any span, whatever ran before it in this process."""
    with sentry_sdk.new_scope() as scope:
        scope.span = None
        yield


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter(service="worker"))
    logger = logging.Logger("test.logging", level=logging.INFO)
    logger.addHandler(handler)
    return logger, stream


def test_json_line_carries_the_message_and_trace_ids_and_nothing_else():
    logger, stream = capture(JsonFormatter())
    with (
        sentry_sdk.start_transaction(op="test", name="test") as transaction,
        bound(processing_id="proc-1", lead_id="lead-1", intent="ORDER_REQUEST"),
    ):
        logger.info(
            "action %s succeeded",
            "CREATE_ORDER",
            extra={"duration_ms": 12.5, "payload": {"text": "secret customer words"}},
        )
    line = json.loads(stream.getvalue())
    assert line == {
        "timestamp": line["timestamp"],
        "level": "INFO",
        "service": "worker",
        "logger": "test.logging",
        "message": "action CREATE_ORDER succeeded",
        "trace_id": transaction.trace_id,
        "span_id": transaction.span_id,
        "processing_id": "proc-1",
        "lead_id": "lead-1",
        "intent": "ORDER_REQUEST",
        "duration_ms": 12.5,
    }
    assert line["timestamp"].endswith("Z")


def test_outside_a_message_only_what_is_known_is_written():
    logger, stream = capture(JsonFormatter())
    logger.warning("ingest: assigned t[0]")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert set(first) == {"timestamp", "level", "service", "logger", "message"}
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]


def test_celery_runtime_becomes_the_duration():
    logger, stream = capture(JsonFormatter())
    logger.info("Task x succeeded in %ss", 0.25, extra={"data": {"runtime": 0.25, "args": "('proc-1', 1)"}})
    line = json.loads(stream.getvalue())
    assert line["duration_ms"] == 250.0 and "args" not in line and "data" not in line


def test_text_format_for_local_reading():
    logger, stream = capture(TextFormatter("%(message)s"))
    with bound(processing_id="proc-1"):
        logger.info("hello")
    text = stream.getvalue()
    assert " INFO worker test.logging [proc-1] hello" in text and not text.startswith("{")


def test_service_is_told_by_the_command_line():
    assert service_name(["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "config", "worker"]) == "worker"
    assert service_name(["/venv/bin/celery", "-A", "config", "beat"]) == "beat"
    assert service_name(["manage.py", "ingest_kafka", "--topic", "t"]) == "ingest"
    assert service_name(["manage.py", "runserver"]) == "web"
    assert service_name(["/venv/bin/gunicorn", "config.wsgi"]) == "web"
    assert service_name(["manage.py", "sweep"]) == "sweep"
