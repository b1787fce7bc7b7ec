"""The agent reply's Celery task, on the "whatsapp" queue with the bot's Cloud API sends.

It retries the way the bot's reply step does (whatsapp.saga.reply): a pacer's wait or an
open breaker costs no attempt (nothing was claimed), a retryable failure waits RETRY_DELAYS,
and a failure for good, or the last retry's, is dead-lettered at stage reply
(whatsapp.send.agent.dead_letter). The task id names the row (agent-reply:<id>), and the
row's state machine, not the broker, says what is done: a redelivered copy sends nothing twice.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from config.redaction import configured_secrets
from core.breakers import CircuitOpen
from core.errors import is_retryable
from whatsapp.models import OutboundMessage
from whatsapp.saga.run import RETRY_DELAYS, describe_failure, reason_for, retry_delay
from whatsapp.send import agent
from whatsapp.send.pacer import PaceWait
from whatsapp.tasks import DB_RETRY_UNBOUNDED, LIMITS

log = logging.getLogger(__name__)


@shared_task(name="inbox.send_agent_reply", **LIMITS, bind=True, max_retries=None, **DB_RETRY_UNBOUNDED)
def send_agent_reply(self: Task[Any, Any], outbound_id: int) -> str:
    """Send the agent's reply `outbound_id`; its status when done, or retried, or dead-lettered."""
    try:
        return agent.send(outbound_id).status
    except (CircuitOpen, PaceWait) as refused:
        raise self.retry(countdown=refused.countdown()) from None
    except (OperationalError, InterfaceError):
        raise  # Postgres away: DB_RETRY's autoretry waits for it, no attempt of the send is spent
    except OutboundMessage.DoesNotExist:
        log.info("agent reply %s is gone; nothing to send", outbound_id)
        return "gone"
    except Exception as exc:
        attempts = OutboundMessage.objects.filter(pk=outbound_id).values_list("attempts", flat=True).first() or 1
        retryable = is_retryable(exc)
        error, tb = describe_failure(exc, configured_secrets())
        if retryable and attempts <= len(RETRY_DELAYS):
            delay = retry_delay(attempts, exc, random.uniform(0.9, 1.1))
            log.warning(
                "agent reply %s failed (attempt %d), retrying in %.1fs: %s", outbound_id, attempts, delay, error
            )
            raise self.retry(countdown=delay) from None
        reason = reason_for(exc, retryable=retryable)
        log.error("agent reply %s failed for good (%s): %s", outbound_id, reason, error)
        agent.dead_letter(outbound_id, reason=reason, error=error, traceback=tb)
        return "dead-lettered"
