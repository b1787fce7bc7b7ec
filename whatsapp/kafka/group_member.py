"""What a long-running consumer-group process shares: ingest (whatsapp.ingest.loop) and the
reference classifier (classifier.runner).

Both stop on SIGTERM or SIGINT only after the batch in hand, keep track of the partitions the
group gave them (a batch is never committed for one taken away), and end by themselves for
scripts and tests: after --max-messages, or after --idle-exit seconds with nothing to read. The
log prefix and logger stay each process's own.
"""

from __future__ import annotations

import logging
import signal
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

# A group that never assigns anything ends after this long, even with a short --idle-exit:
# joining a group takes seconds.
JOIN_TIMEOUT_SECONDS = 60.0


class GroupMember:
    """Mixed into a consumer process; call _join() from its __init__."""

    name: str
    log: logging.Logger
    max_messages: int | None
    idle_exit: float | None

    def _join(self, *, max_messages: int | None, idle_exit: float | None) -> None:
        self.max_messages = max_messages
        self.idle_exit = idle_exit
        self.stopping = False
        self.assigned: set[tuple[str, int]] = set()
        self._last_activity = time.monotonic()

    def _consumed(self) -> int:
        """Records taken so far, for --max-messages."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------
    def stop(self, *_: object) -> None:
        if not self.stopping:
            self.log.info("%s: stop requested; finishing the batch in hand", self.name)
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _reached_max(self) -> bool:
        return self.max_messages is not None and self._consumed() >= self.max_messages

    def _idle_expired(self) -> bool:
        if self.idle_exit is None:
            return False
        idle = time.monotonic() - self._last_activity
        if self.assigned and idle >= self.idle_exit:
            self.log.info("%s: nothing to read for %.0fs; exiting", self.name, self.idle_exit)
            return True
        # The idle clock runs once partitions are assigned, but a group that never assigns
        # anything ends too.
        join_limit = max(self.idle_exit, JOIN_TIMEOUT_SECONDS)
        if not self.assigned and idle >= join_limit:
            self.log.warning("%s: no partitions assigned after %.0fs; exiting", self.name, join_limit)
            return True
        return False

    # -- the consumer's callbacks ---------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        self._last_activity = time.monotonic()
        where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
        self.log.info("%s: assigned %s", self.name, where)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
        self.log.info("%s: revoked %s", self.name, ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _on_error(self, error: KafkaError) -> None:
        self.log.log(logging.ERROR if error.fatal() else logging.WARNING, "%s: kafka: %s", self.name, error)
