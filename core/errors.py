"""The errors an action, a client or a pipeline stage raise on purpose, and the one
place that decides whether a failure is worth another attempt.

Clients (core.clients) and breakers (core.breakers) raise and read these, so they
live below the apps: an HTTP client says "try again later" or "this can never
work" without knowing which action called it.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError


class ActionError(Exception):
    """Base for failures an executor or a client reports on purpose."""


class RetryableActionError(ActionError):
    """Worth trying again later: a timeout, a 5xx, a 429, a refused connection."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentActionError(ActionError):
    """Trying again cannot help: a 4xx, a validation failure, missing data."""


class Transient(Exception):
    """Mixed into errors that mean "nothing was done, try again later" without being an
    ActionError (a breaker that refused the call: core.breakers.CircuitOpen)."""


# Postgres unreachable or the connection dropped: the next attempt gets a new connection.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def is_transient(exc: BaseException) -> bool:
    """A failure of the path, not of the work: the database or a breaker said not now."""
    return isinstance(exc, (*DATABASE_UNAVAILABLE, Transient))


def is_retryable(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> bool:
    """The retry/permanent decision: retryable when the error says so, when it is
    transient, or when it is one of `also` (an executor's own retryable errors).
    Everything else is permanent: a bug does not get better by trying again."""
    return isinstance(exc, (RetryableActionError, *also)) or is_transient(exc)


def is_outage(exc: BaseException) -> bool:
    """A dependency is away (the database or the broker unreachable): retry the whole batch
    later. Anything else (an IntegrityError, a DataError, a bug) is the batch's own fault.
    Ingest, the relay and requeue all ask here, so the answer is the same everywhere."""
    from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]  # new in kombu 5.7; its stubs predate it
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    if isinstance(exc, BatchPublishError) and exc.__cause__ is not None:
        # The hand-off's one Redis call for the batch failed (some of its messages may have
        # gone out: sending them again is harmless); what it failed on tells.
        return is_outage(exc.__cause__)
    return isinstance(exc, (*DATABASE_UNAVAILABLE, BrokerError, RedisConnectionError, RedisTimeout, OSError))
