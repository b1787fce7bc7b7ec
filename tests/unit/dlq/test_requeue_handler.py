"""The DLQ requeues through the handler settings.DLQ_REQUEUE_HANDLER names, and says
clearly when that setting names none."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from dlq.apps import requeue_handler_check
from dlq.requeue import requeue_handler
from whatsapp.recovery.requeue import requeue_dead_letter


def test_the_configured_handler_is_whatsapps():
    assert requeue_handler() is requeue_dead_letter


@pytest.mark.parametrize(
    "path, fragment",
    [
        (None, "DLQ_REQUEUE_HANDLER is not set"),
        ("", "DLQ_REQUEUE_HANDLER is not set"),
        ("whatsapp.recovery.requeue.no_such_handler", "'whatsapp.recovery.requeue.no_such_handler' cannot be imported"),
        ("no_such_module.handler", "'no_such_module.handler' cannot be imported"),
        ("whatsapp.recovery.requeue.PROCESSING_ID_CONFLICT", "is not a function"),
    ],
)
def test_a_missing_or_wrong_handler_is_a_configuration_error(path, fragment):
    with override_settings(DLQ_REQUEUE_HANDLER=path), pytest.raises(ImproperlyConfigured, match=fragment):
        requeue_handler()


def test_manage_py_check_reports_a_wrong_handler():
    assert requeue_handler_check(None) == []
    with override_settings(DLQ_REQUEUE_HANDLER="whatsapp.recovery.requeue.nothing"):
        errors = requeue_handler_check(None)
    assert [e.id for e in errors] == ["dlq.E001"] and "cannot be imported" in errors[0].msg
