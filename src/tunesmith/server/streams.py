"""Audio chunks from the worker thread to HTTP listeners on the event loop.

A job's channel opens when it is queued and closes when it ends. A listener that joins late
first gets every chunk made so far, so each listener hears the piece from its start.
`subscribe` returns None once the channel is closed: the caller then serves the finished file.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

import torch

END = None  # what a listener's queue receives after the last chunk


@dataclass
class _Channel:
    chunks: list[torch.Tensor] = field(default_factory=list)  # each [C, n]
    listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[torch.Tensor | None]]] = field(
        default_factory=list
    )


class StreamHub:
    """Per-job fan-out of audio chunks [C, n], safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}

    def open(self, job_id: str) -> None:
        with self._lock:
            self._channels.setdefault(job_id, _Channel())

    def publish(self, job_id: str, chunk: torch.Tensor) -> None:
        with self._lock:
            channel = self._channels.get(job_id)
            if channel is None:
                return
            channel.chunks.append(chunk)
            listeners = list(channel.listeners)
        for loop, queue in listeners:
            _send(loop, queue, chunk)

    def close(self, job_id: str) -> None:
        """End the job's stream: listeners get END, later subscribers get None."""
        with self._lock:
            channel = self._channels.pop(job_id, None)
        if channel is not None:
            for loop, queue in channel.listeners:
                _send(loop, queue, END)

    def subscribe(self, job_id: str) -> asyncio.Queue[torch.Tensor | None] | None:
        """A queue of the job's chunks (from the first) then END; None if the job is not live.

        Call from a coroutine: the queue belongs to the running event loop.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[torch.Tensor | None] = asyncio.Queue()
        with self._lock:
            channel = self._channels.get(job_id)
            if channel is None:
                return None
            for chunk in channel.chunks:
                queue.put_nowait(chunk)
            channel.listeners.append((loop, queue))
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[torch.Tensor | None]) -> None:
        with self._lock:
            channel = self._channels.get(job_id)
            if channel is not None:
                channel.listeners = [(lp, q) for lp, q in channel.listeners if q is not queue]


def _send(
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[torch.Tensor | None],
    item: torch.Tensor | None,
) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to hear it
        loop.call_soon_threadsafe(queue.put_nowait, item)
