"""Why the worker does not take a new job (the routes answer each with its own status)."""

from __future__ import annotations


class QueueFullError(Exception):
    """The queue holds `max_queue` jobs already; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after}s")
        self.retry_after = retry_after


class NotAcceptingError(Exception):
    """The server is stopping (or its worker is not running): no new jobs."""


class StorageError(Exception):
    """The job could not be recorded (the data folder's disk is full or failing)."""
