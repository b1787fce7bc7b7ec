"""Settings that name a module by the path it had before the stage layout still load, for one
release, and `manage.py check` names the new path (core.dotted, whatsapp.W001)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from core import dotted
from core.metrics import serving
from dlq.requeue import requeue_handler
from whatsapp.apps import moved_paths_check
from whatsapp.ops.collectors import ScrapeTimeCollector
from whatsapp.recovery.requeue import requeue_dead_letter


def test_the_settings_as_shipped_name_no_moved_path() -> None:
    assert moved_paths_check(None) == []


def test_an_old_requeue_handler_path_loads_the_handler_and_check_names_the_new_one(settings) -> None:
    settings.DLQ_REQUEUE_HANDLER = "whatsapp.requeue.requeue_dead_letter"
    assert requeue_handler() is requeue_dead_letter
    [warning] = moved_paths_check(None)
    assert warning.id == "whatsapp.W001"
    assert "DLQ_REQUEUE_HANDLER" in warning.msg
    assert "'whatsapp.recovery.requeue.requeue_dead_letter'" in warning.hint


def test_an_old_collector_path_is_served(settings) -> None:
    settings.METRICS_COLLECTORS = ["whatsapp.collectors.ScrapeTimeCollector"]
    serving.scrape_time_collectors.cache_clear()
    try:
        [collector] = serving.scrape_time_collectors()
        assert isinstance(collector, ScrapeTimeCollector)
    finally:
        serving.scrape_time_collectors.cache_clear()
    [warning] = moved_paths_check(None)
    assert "'whatsapp.ops.collectors.ScrapeTimeCollector'" in warning.msg


def test_a_new_path_under_a_moved_prefix_is_left_as_it_is() -> None:
    # whatsapp.ingest was a module and is now a package: its new modules are not "moved".
    assert dotted.import_path("whatsapp.ingest.intake.take_in").__module__ == "whatsapp.ingest.intake"
    assert list(dotted.moved_paths(["whatsapp.ingest.intake.take_in", "whatsapp.pipeline.chains.task_id"])) == []


def test_a_path_that_names_nothing_old_or_new_still_fails(settings) -> None:
    with pytest.raises(ImportError):
        dotted.import_path("whatsapp.requeue.no_such_function")


def test_manage_py_check_reports_the_warning(settings) -> None:
    settings.DLQ_REQUEUE_HANDLER = "whatsapp.requeue.requeue_dead_letter"
    with pytest.raises(SystemCheckError, match=r"whatsapp\.W001"):
        call_command("check", fail_level="WARNING")
