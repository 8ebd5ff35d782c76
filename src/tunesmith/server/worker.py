"""The one worker thread: a bounded queue of jobs, run in batches of compatible settings.

Jobs with equal duration, top_k, top_p, temperature and cfg_scale and no seed share one
`model.stream([...prompts])` call (up to `max_batch` rows), which costs little more than one
job alone on a GPU. A seeded job runs alone so its seed means the same as in the CLI.

Cancelling a running job sets a flag that the progress callback reads after every decoder
step; when every job of the batch is cancelled (or the server stops) it raises `_Stop`,
which unwinds the generation within one step.

The thread never dies of a job: every failure is recorded on the job, and where even that
fails (a full disk refuses the database write too) the outcome is held in memory, shown by
the API, and written as soon as the disk takes it. A full disk is waited out, not failed: no
job is taken while the data folder's disk is below its floor (`disk`), and a job whose file
did not fit goes back to the head of the queue until the room it needs is free. Stopping
drains: no new batch starts, the running one has `drain_seconds` to finish, and what is
still running then goes back to the queue, which a restart takes up again.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from . import audiofiles, runs
from .disk import DiskGuard, is_full
from .outcomes import HeldOutcomes, retain
from .output import needed_bytes, write_result
from .refusals import NotAcceptingError, QueueFullError, StorageError
from .schemas import GenerationRequest
from .store import JobStore
from .streams import StreamHub

if TYPE_CHECKING:
    from ..musicgen import MusicGen

log = logging.getLogger("tunesmith.server")
CANCELLED_MESSAGE = "cancelled by request"


class _Stop(Exception):
    """Raised from the progress callback to abandon the batch in progress."""


@dataclass(frozen=True)
class _Job:
    id: str
    params: GenerationRequest
    owner: str | None = None  # the API key's name that made it


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
        drain_seconds: float = 30.0,
        keep_seconds: float | None = None,
        max_audio_bytes: int | None = None,
        disk: DiskGuard | None = None,
        model_name: str | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.model, self.store, self.hub = model, store, hub
        self.disk = disk if disk is not None else DiskGuard(store.data_dir)
        self.model_name = model_name or model.name  # as the files' tags name it
        self.redact = redact  # error text without the server's paths
        self.max_queue, self.max_batch, self.chunk_seconds = max_queue, max_batch, chunk_seconds
        self.drain_seconds = drain_seconds
        # Retention: finished jobs older than keep_seconds go, then the oldest while the audio
        # passes max_audio_bytes (checked after each batch and every minute while idle).
        self.keep_seconds, self.max_audio_bytes = keep_seconds, max_audio_bytes
        self.step_hook: Callable[[list[str]], None] | None = None  # tests: runs on every step
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: dict[str, _Job] = {}
        self._cancelled: set[str] = set()
        self._progress: dict[str, tuple[int, int]] = {}
        self._began: dict[str, float] = {}  # when each running job's batch started
        self._paused = self._stopping = self._draining = False
        self._drain_deadline: float | None = None  # set when the drain begins
        self._steps_per_second: float | None = None  # measured on the batches run so far
        self._held = HeldOutcomes()  # outcomes the store could not take yet (a full disk)
        self.steps_done = 0
        self.generation_seconds = 0.0
        self._thread: threading.Thread | None = None

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Take up the jobs the store holds queued (a restart's), then start the thread."""
        with self._cond:
            for job_id, params, owner in self.store.queued():
                self.hub.open(job_id)
                self._queue.append(_Job(job_id, params, owner))
        self._thread = threading.Thread(target=self._loop, name="tunesmith-worker", daemon=True)
        self._thread.start()

    def begin_drain(self) -> None:
        """Take no new jobs or batches from now on; the running batch has `drain_seconds`
        (counted from the first call) to finish."""
        with self._cond:
            if self._drain_deadline is None:
                self._drain_deadline = time.monotonic() + self.drain_seconds
            self._draining = True
            self._cond.notify_all()

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait for the running batch to end, until the drain's deadline (or `timeout` s if
        that is sooner); True if it has ended."""
        self.begin_drain()
        with self._cond:
            assert self._drain_deadline is not None
            deadline = self._drain_deadline
            if timeout is not None:
                deadline = min(deadline, time.monotonic() + timeout)
            while self._running and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return not self._running

    def stop(self, timeout: float | None = None) -> None:
        """Drain: take no new jobs or batches, give the running batch until the drain's
        deadline (`drain_seconds` after it began, or `timeout` s) to finish, then stop it at
        its next step and put its jobs back in the queue. Queued jobs stay queued in the store
        for the next start."""
        self.wait_drained(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10.0)
        with self._cond:
            for job in self._queue:
                self.hub.close(job.id)
            self._queue.clear()
            self._held.flush()

    @property
    def alive(self) -> bool:
        """The worker thread is running and taking jobs."""
        return self._thread is not None and self._thread.is_alive() and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def pause(self) -> None:
        """Take no new batches (the one running finishes); jobs still queue up."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    # --- requests ---------------------------------------------------------------------------

    def submit(
        self,
        params: GenerationRequest,
        idempotency: tuple[str | None, str] | None = None,
        owner: str | None = None,
    ) -> str:
        """Queue a job and return its id; QueueFullError if `max_queue` jobs are waiting."""
        with self._cond:
            if not self.alive:
                raise NotAcceptingError("the server is stopping" if self._draining else
                                        "the server's worker is not running")  # fmt: skip
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(self._retry_after())
            job = _Job(uuid.uuid4().hex, params, owner)
            try:
                self.store.insert(job.id, params, time.time(), idempotency, owner)
            except sqlite3.IntegrityError:  # the same Idempotency-Key, a moment earlier
                raise
            except (sqlite3.Error, OSError) as err:
                log.error("recording a new job failed: %s", err)
                raise StorageError(f"the job could not be recorded: {err}") from None
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
            self._record(job_id, "cancelled", CANCELLED_MESSAGE, progress)
            self.hub.close(job_id)
            return True

    def busy(self, job_id: str) -> bool:
        """Whether the job is still queued or running (a cancelled one until its batch ends):
        its row must stay."""
        with self._cond:
            return job_id in self._running or any(j.id == job_id for j in self._queue)

    def outcome(self, job_id: str) -> tuple[str, str | None] | None:
        """(status, error) of a job that ended but whose record the store has not taken yet."""
        with self._cond:
            return self._held.get(job_id)

    def progress(self, job_id: str) -> tuple[int, int] | None:
        with self._cond:
            return self._progress.get(job_id)

    def running_for(self, job_id: str) -> float | None:
        """Seconds since the running job's batch started (None: not running)."""
        with self._cond:
            began = self._began.get(job_id)
        return None if began is None else time.monotonic() - began

    def live_status(self, job_id: str) -> str | None:
        """ "queued" or "running" while the worker holds the job (the store may lag behind
        on a full disk), else None."""
        with self._cond:
            if job_id in self._running and job_id not in self._cancelled:
                return "running"
            return "queued" if any(j.id == job_id for j in self._queue) else None

    def uses_upload(self, upload_id: str) -> bool:
        """Whether a queued or running job continues or follows this upload."""
        with self._cond:
            jobs = [*self._queue, *self._running.values()]
        return any(upload_id in (j.params.audio_prompt, j.params.melody) for j in jobs)

    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs right now."""
        with self._cond:
            return len(self._queue), len(self._running)

    @property
    def steps_per_second(self) -> float | None:
        with self._cond:
            return self._steps_per_second

    def _retry_after(self) -> int:
        """Seconds until a place in the queue frees: the decoder steps ahead (the running
        batch's rest and one batch's worth of the queue) at the measured step rate; 1 s
        before anything has been measured."""
        if not self._steps_per_second:
            return 1
        left = [total - done for done, total in self._progress.values()]
        running = max(left, default=0)
        head = list(self._queue)[: self.max_batch]
        # Each frame a step, plus the delay pattern's few: the steps are frames to a percent.
        next_batch = max((self.model.frames_for(j.params.duration) for j in head), default=0)
        return max(1, min(3600, math.ceil((running + next_batch) / self._steps_per_second)))

    # --- the thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                if not self._one_batch():
                    return
            except Exception:  # never let the thread die: log, and take the next batch
                log.exception("worker error between batches")
                time.sleep(0.5)

    def _one_batch(self) -> bool:
        """Wait for, run and settle one batch; False when the worker should stop."""
        with self._cond:
            while not (self._stopping or self._draining) and (
                self._paused or not self._queue or not self.disk.settle()
            ):
                self._held.flush()
                self._retain()
                self.store.reserve.restore()
                self._cond.wait(self._idle_wait())
            if self._stopping or self._draining:
                return False
            batch = self._take_batch()
            now = time.monotonic()
            for job in batch:
                self._running[job.id] = job
                self._progress[job.id] = (0, 0)
                self._began[job.id] = now
                self._held.drop(job.id)  # a re-queueing the disk had refused
            try:
                self.store.mark_running([j.id for j in batch], time.time(), 0)
            except (sqlite3.Error, OSError) as err:
                log.error("recording a batch's start failed: %s", err)
        started = time.perf_counter()
        back: list[str] = []  # jobs that found the disk full: queued again
        try:
            back = self._generate(batch)
        except Exception:  # a bug of ours: keep serving, record it on the jobs
            log.exception("worker failed on batch %s", [j.id for j in batch])
            self._finish_failed(batch, "internal error while finishing the job")
        finally:
            with self._cond:
                self.generation_seconds += time.perf_counter() - started
                for job in batch:
                    if job.id not in back:
                        self._running.pop(job.id, None)
                    self._progress.pop(job.id, None)
                    self._began.pop(job.id, None)
                    self._cancelled.discard(job.id)
                self._cond.notify_all()  # a draining stop() waits for this
            for job in batch:
                self.hub.close(job.id)
                if job.id in back:
                    self.hub.open(job.id)  # its next run streams afresh
            with self._cond:
                self._retain()
        return True

    def _idle_wait(self) -> float | None:
        """How long the idle thread sleeps before it looks again (None: until woken)."""
        if self._queue and not self._paused:
            return 0.5  # jobs wait for disk space: look at the disk often
        if self._held:
            return 5.0
        if self.keep_seconds is not None or self.max_audio_bytes is not None:
            return 60.0
        return None

    def _retain(self) -> None:
        """Delete the finished jobs and unused uploads retention no longer keeps."""
        in_use = {
            u for j in [*self._queue, *self._running.values()]
            for u in (j.params.audio_prompt, j.params.melody) if u is not None
        }  # fmt: skip
        retain(self.store, self.keep_seconds, self.max_audio_bytes, in_use)

    def _record(
        self, job_id: str, status: str, error: str | None, progress: tuple[int, int] | None
    ) -> None:
        """End a job in the store; where the store cannot take it, hold it and retry."""

        def write() -> None:
            self.store.mark_finished(job_id, status, error, progress)

        self._held.write_or_hold(job_id, status, error, write)

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

    def _generate(self, batch: list[_Job]) -> list[str]:
        """Run the batch and settle each job; the ids that went back to the queue for room."""
        ids = [j.id for j in batch]
        p = batch[0].params
        steps = (0, 0)
        began = time.perf_counter()

        def on_step(done: int, total: int) -> None:
            nonlocal steps
            steps = (done, total)
            with self._cond:
                self.steps_done += 1
                for i in ids:
                    self._progress[i] = steps
                if done >= 8:  # past the first steps' warm-up: the rate this batch runs at
                    rate = done / (time.perf_counter() - began)
                    old = self._steps_per_second
                    self._steps_per_second = rate if old is None else 0.5 * old + 0.5 * rate
            if self.step_hook is not None:
                self.step_hook(ids)
            with self._cond:
                stop = self._stopping or all(i in self._cancelled for i in ids)
            if stop:
                raise _Stop

        def on_chunk(chunk: torch.Tensor) -> None:
            for row, job in enumerate(batch):
                self.hub.publish(job.id, chunk[row])

        log.info("generating %d job(s), %.2fs each: %s", len(batch), p.duration, ids)
        inputs: dict[str, Any] = {}
        if p.audio_prompt is not None:  # such jobs run alone (batch_key)
            inputs["audio_prompt"] = self.store.upload_dir / p.audio_prompt
        if p.melody is not None:
            inputs["melody"] = self.store.upload_dir / p.melody
        try:
            wav = runs.generate(
                self.model, [j.params.prompt for j in batch], p.options(),
                chunk_seconds=self.chunk_seconds, on_step=on_step, on_chunk=on_chunk,
                inputs=inputs,
            )  # fmt: skip
        except _Stop:
            if self._stopping:  # the server stopped: back to the queue for the next start
                with self._cond:
                    live = [j.id for j in batch if j.id not in self._cancelled]
                try:
                    self.store.requeue(live)
                except (sqlite3.Error, OSError) as err:
                    log.error("re-queueing %s failed: %s", live, err)
                return []
            self._finish_failed(batch, CANCELLED_MESSAGE, "interrupted", steps)
            return []
        except Exception as err:
            log.exception("generation failed for %s", ids)
            message = self.redact(f"generation failed: {type(err).__name__}: {err}")
            self._finish_failed(batch, message, steps=steps)
            return []
        return [job.id for row, job in enumerate(batch) if not self._save(job, wav[row], steps[0])]

    def _save(self, job: _Job, wav: torch.Tensor, steps: int) -> bool:
        """Write one job's audio [C, N] and mark it done (unless it was cancelled meanwhile);
        False if the disk had no room for it and the job went back to the queue."""
        name = f"{job.id}.{job.params.format}"
        path = self.store.audio_dir / name
        try:
            write_result(path, wav, self.model.sample_rate, job.params, self.model_name)
        except Exception as err:
            need = needed_bytes(wav)
            if is_full(err) or self.disk.short_of(need):
                return self._back_for_room(job, need, err)
            log.exception("writing %s failed", path)
            self._finish_failed([job], self.redact(f"writing the audio failed: {err}"))
            return True
        seconds, picture = wav.shape[-1] / self.model.sample_rate, audiofiles.peaks(wav)
        with self._cond:
            if job.id in self._cancelled:
                path.unlink(missing_ok=True)
                return True

            def write() -> None:
                self.store.mark_done(job.id, name, seconds, picture, steps)

            self._held.write_or_hold(job.id, "done", None, write)
            self._running.pop(job.id, None)  # from here on, DELETE deletes rather than cancels
        return True

    def _back_for_room(self, job: _Job, need: int, err: BaseException) -> bool:
        """The disk could not take the job's file: put it back at the head of the queue, and
        take no job until `need` bytes are free."""
        with self._cond:
            if job.id in self._cancelled:
                return True
            log.warning("job %s found the disk full (%s); queued again until %d bytes are "
                        "free", job.id, err, need)  # fmt: skip
            self.disk.wait_for(need)
            self._running.pop(job.id, None)
            self._queue.appendleft(job)
        try:
            self.store.requeue([job.id])
        except (sqlite3.Error, OSError) as store_err:  # the row says running; the worker knows
            log.error("re-queueing %s in the store failed: %s", job.id, store_err)
        return False

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
                    self._record(job.id, status, message, steps)
                    self._running.pop(job.id, None)
