"""The one worker thread: a bounded queue of jobs, run in batches of compatible settings.

Jobs with equal duration, top_k, top_p, temperature and cfg_scale and no seed share one
`model.stream([...prompts])` call (up to `max_batch` rows), which costs little more than one
job alone on a GPU. A seeded job runs alone so its seed means the same as in the CLI.

Cancelling a running job sets a flag that the progress callback reads after every decoder
step; when every job of the batch is cancelled (or the server stops) it raises `_Stop`,
which unwinds the generation within one step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import audiofiles
from .schemas import GenerationRequest
from .store import INTERRUPTED_MESSAGE, JobStore
from .streams import StreamHub

if TYPE_CHECKING:
    from ..musicgen import MusicGen

log = logging.getLogger("tunesmith.server")
CANCELLED_MESSAGE = "cancelled by request"


class QueueFullError(Exception):
    """The queue holds `max_queue` jobs already; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after}s")
        self.retry_after = retry_after


class _Stop(Exception):
    """Raised from the progress callback to abandon the batch in progress."""


@dataclass(frozen=True)
class _Job:
    id: str
    params: GenerationRequest


class Worker:
    """Owns the queue and the thread that drains it; every method is safe from any thread."""

    def __init__(
        self,
        model: MusicGen,
        store: JobStore,
        hub: StreamHub,
        max_queue: int = 16,
        max_batch: int = 4,
        chunk_seconds: float = 1.0,
    ) -> None:
        self.model, self.store, self.hub = model, store, hub
        self.max_queue, self.max_batch, self.chunk_seconds = max_queue, max_batch, chunk_seconds
        self.step_hook: Callable[[list[str]], None] | None = None  # tests: runs on every step
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: dict[str, _Job] = {}
        self._cancelled: set[str] = set()
        self._progress: dict[str, tuple[int, int]] = {}
        self._paused = self._stopping = False
        self._batch_seconds = 10.0  # running estimate, for Retry-After
        self._thread: threading.Thread | None = None

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tunesmith-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the running batch at its next step; queued and running jobs become interrupted."""
        with self._cond:
            self._stopping = True
            for job in self._queue:
                self.store.mark_finished(job.id, "interrupted", INTERRUPTED_MESSAGE)
                self.hub.close(job.id)
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def pause(self) -> None:
        """Take no new batches (the one running finishes); jobs still queue up."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # --- requests ---------------------------------------------------------------------------

    def submit(self, params: GenerationRequest) -> str:
        """Queue a job and return its id; QueueFullError if `max_queue` jobs are waiting."""
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(self._retry_after())
            job = _Job(uuid.uuid4().hex, params)
            self.store.insert(job.id, params, time.time())
            self.hub.open(job.id)
            self._queue.append(job)
            self._cond.notify_all()
        return job.id

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job (True), or say it is neither (False)."""
        with self._cond:
            queued = next((j for j in self._queue if j.id == job_id), None)
            if queued is not None:
                self._queue.remove(queued)
            elif job_id not in self._running or job_id in self._cancelled:
                return False
            self._cancelled.add(job_id)
            progress = self._progress.get(job_id)
            self.store.mark_finished(job_id, "cancelled", CANCELLED_MESSAGE, progress)
            self.hub.close(job_id)
            return True

    def progress(self, job_id: str) -> tuple[int, int] | None:
        with self._cond:
            return self._progress.get(job_id)

    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs right now."""
        with self._cond:
            return len(self._queue), len(self._running)

    def _retry_after(self) -> int:
        batches_ahead = math.ceil(len(self._queue) / self.max_batch) + 1
        return max(1, min(3600, math.ceil(batches_ahead * self._batch_seconds)))

    # --- the thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not self._queue):
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._take_batch()
                for job in batch:
                    self._running[job.id] = job
                    self._progress[job.id] = (0, 0)
                self.store.mark_running([j.id for j in batch], time.time(), 0)
            started = time.perf_counter()
            try:
                self._generate(batch)
            except Exception:  # a bug of ours: keep serving, record it on the jobs
                log.exception("worker failed on batch %s", [j.id for j in batch])
                self._finish_failed(batch, "internal error while finishing the job")
            finally:
                elapsed = time.perf_counter() - started
                with self._cond:
                    self._batch_seconds = 0.7 * self._batch_seconds + 0.3 * elapsed
                    for job in batch:
                        self._running.pop(job.id, None)
                        self._progress.pop(job.id, None)
                        self._cancelled.discard(job.id)
                for job in batch:
                    self.hub.close(job.id)

    def _take_batch(self) -> list[_Job]:
        """The oldest job, plus later jobs that can share its forward batch."""
        head = self._queue.popleft()
        batch, key = [head], head.params.batch_key()
        if key is not None:
            for job in list(self._queue):
                if len(batch) >= self.max_batch:
                    break
                if job.params.batch_key() == key:
                    self._queue.remove(job)
                    batch.append(job)
        return batch

    def _generate(self, batch: list[_Job]) -> None:
        ids = [j.id for j in batch]
        p = batch[0].params
        parts: list[list[torch.Tensor]] = [[] for _ in batch]
        steps = (0, 0)

        def on_step(done: int, total: int) -> None:
            nonlocal steps
            steps = (done, total)
            with self._cond:
                for i in ids:
                    self._progress[i] = steps
            if self.step_hook is not None:
                self.step_hook(ids)
            with self._cond:
                stop = self._stopping or all(i in self._cancelled for i in ids)
            if stop:
                raise _Stop

        log.info("generating %d job(s), %.2fs each: %s", len(batch), p.duration, ids)
        try:
            for chunk in self.model.stream(
                [j.params.prompt for j in batch], p.options(),
                chunk_seconds=self.chunk_seconds, progress=on_step,
            ):  # fmt: skip
                for row, job in enumerate(batch):
                    parts[row].append(chunk[row])
                    self.hub.publish(job.id, chunk[row])
        except _Stop:
            message = INTERRUPTED_MESSAGE if self._stopping else CANCELLED_MESSAGE
            self._finish_failed(batch, message, "interrupted", steps)
            return
        except Exception as err:
            log.exception("generation failed for %s", ids)
            self._finish_failed(
                batch, f"generation failed: {type(err).__name__}: {err}", steps=steps
            )
            return
        for row, job in enumerate(batch):
            self._save(job, torch.cat(parts[row], dim=-1), steps[0])

    def _save(self, job: _Job, wav: torch.Tensor, steps: int) -> None:
        """Write one job's audio [C, N] and mark it done (unless it was cancelled meanwhile)."""
        name = f"{job.id}.{job.params.format}"
        path = self.store.audio_dir / name
        try:
            audiofiles.write(str(path), wav, self.model.sample_rate)
        except Exception as err:
            log.exception("writing %s failed", path)
            self._finish_failed([job], f"writing the audio failed: {err}")
            return
        seconds, picture = wav.shape[-1] / self.model.sample_rate, audiofiles.peaks(wav)
        with self._cond:
            if job.id in self._cancelled:
                path.unlink(missing_ok=True)
                return
            self.store.mark_done(job.id, name, seconds, picture, steps)
            self._running.pop(job.id, None)  # from here on, DELETE deletes rather than cancels

    def _finish_failed(
        self,
        batch: list[_Job],
        message: str,
        status: str = "failed",
        steps: tuple[int, int] | None = None,
    ) -> None:
        """End the batch's jobs that are not cancelled already with `status` and `message`."""
        with self._cond:
            for job in batch:
                if job.id not in self._cancelled and job.id in self._running:
                    self.store.mark_finished(job.id, status, message, steps)
                    self._running.pop(job.id, None)
