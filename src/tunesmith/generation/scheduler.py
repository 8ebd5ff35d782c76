"""Continuous batching: one decoder batch whose rows are independent jobs.

On a CPU a decoder step is bound by reading the weights, so a step for 8 jobs costs little
more than a step for one. `RunningBatch` keeps one batch running: at each step boundary the
jobs that ended or were cancelled leave, queued jobs join (their text encoded alone; their
audio prompt or a long-form window's context fed a few layers at a time, for about a step's
time at each boundary: `LayeredPrefill`), and one step runs every job's rows at their own
positions (`Step.rows`). Each job keeps its own settings, guidance scale, generator,
prompt and windows (`rows.JobRows`), and draws exactly the codes it would draw alone
(`MusicGen.generate_tokens` with the same seed, on the same machine and thread count): each
row's arithmetic is that of a step of its own, whatever runs beside it.

    batch = RunningBatch(model, max_batch=8)
    handle = batch.submit(BatchJob("lofi beat", GenerationOptions(duration=10, seed=1)))
    while not handle.finished:
        batch.step()
        for block in handle.take():  # codes [1, K, n], in order
            ...

The KV cache is a pool of `max_batch` places (`engine.running_batch.KVPool`): memory does not
grow with the number of jobs served. `submit` and `cancel` may be called from any thread;
one thread drives `step`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Protocol

import torch

from ..engine.running_batch import LayeredPrefill, RowBatch, RowGroup
from ..engine.step import Step
from ..errors import InvalidOptionError
from .delay import delays
from .loop import TextCondition
from .rows import BatchJob, JobRows

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"


class BatchModel(Protocol):
    """What a running batch needs of a loaded model (`MusicGen` has it)."""

    step: Step

    @property
    def max_duration(self) -> float: ...

    def frames_for(self, duration: float) -> int: ...

    def condition(self, texts: list[str | None]) -> TextCondition: ...


class JobHandle:
    """A job submitted to a running batch: its status, progress, and the codes it has made."""

    def __init__(self, number: int, job: BatchJob, rows: JobRows) -> None:
        self.id = number
        self.job = job
        self.status = QUEUED
        self.error: str | None = None
        self.rows: JobRows | None = rows  # its decode state, while it is queued or running
        self.steps = (0, rows.steps_total)  # decoder steps done, in all
        self.blocks: list[torch.Tensor] = []  # every code block [1, K, n] made, in order
        self._taken = 0

    @property
    def finished(self) -> bool:
        return self.status in (DONE, CANCELLED, FAILED)

    def take(self) -> list[torch.Tensor]:
        """The code blocks [1, K, n] made since the last call, in order (streaming)."""
        new = self.blocks[self._taken :]
        self._taken = len(self.blocks)
        return new

    def codes(self) -> torch.Tensor:
        """Every frame made so far, codes [1, K, T] (the audio prompt's not included)."""
        if not self.blocks:
            raise RuntimeError(f"job {self.id} has made no frames yet")
        return torch.cat(self.blocks, dim=2)


class RunningBatch:
    """Jobs of any settings sharing one decoder batch (see the module docstring).

    max_batch: jobs running at once (a guided job takes two decoder rows). While rows are
    running, at most `joins_per_step` jobs join (their text encoded) at a step boundary, and
    prompts are fed for about `prefill_share` of the last step's time (at least one layer);
    with none running, every waiting job joins and feeds a chunk.
    """

    def __init__(
        self,
        model: BatchModel,
        max_batch: int = 4,
        joins_per_step: int = 1,
        prefill_share: float = 1.0,
    ) -> None:
        if max_batch < 1 or joins_per_step < 1 or not prefill_share > 0:
            raise InvalidOptionError(
                "max_batch and joins_per_step must be at least 1, prefill_share above 0"
            )
        self.model, self.step_runner = model, model.step
        lm = self.step_runner.lm
        if not all(hasattr(layer, "encoder_attn") for layer in lm.layers):
            raise InvalidOptionError(
                "a running batch needs a text-conditioned decoder (melody checkpoints run alone)"
            )
        self.cfg = lm.cfg
        self.window = model.frames_for(model.max_duration)
        self.joins_per_step, self.prefill_share = joins_per_step, prefill_share
        self.step_seconds: float | None = None  # the last step's time
        max_delay = max(delays(self.cfg.num_codebooks, self.cfg.audio_channels))
        self.device = str(next(lm.parameters()).device)
        with torch.inference_mode():
            self.pool = self.step_runner.new_pool(max_batch, 1 + self.window + max_delay)
        self._lock = threading.Lock()
        self._queue: deque[JobHandle] = deque()
        self._running: list[JobHandle] = []  # in the order they joined
        self._cancelled: set[int] = set()
        self._numbers = itertools.count()

    @property
    def max_batch(self) -> int:
        return self.pool.places

    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs now."""
        with self._lock:
            return len(self._queue), len(self._running)

    @property
    def idle(self) -> bool:
        return self.counts() == (0, 0)

    def submit(self, job: BatchJob) -> JobHandle:
        """Queue a job; it joins at a step boundary, once a place is free. Its settings and
        prompt are checked now (InvalidOptionError)."""
        o = job.options
        if job.text is not None and not isinstance(job.text, str):
            raise InvalidOptionError(f"a job's text must be a string or None, got {job.text!r}")
        if o.stride > self.model.max_duration:
            raise InvalidOptionError(
                f"stride {o.stride:g}s is longer than the {self.model.max_duration:g}s window"
            )
        prompt = self._prompt(job.prompt)
        if prompt is not job.prompt:
            job = BatchJob(job.text, o, prompt)
        rows = JobRows(
            job, self.cfg, self.window, min(self.window, self.model.frames_for(o.stride)),
            self.model.frames_for(o.duration), self.device,
        )  # fmt: skip
        with self._lock:
            handle = JobHandle(next(self._numbers), job, rows)
            self._queue.append(handle)
        return handle

    def cancel(self, handle: JobHandle) -> bool:
        """Cancel a queued or running job (it leaves at the next step boundary); False if it
        has ended already."""
        with self._lock:
            if handle.finished or handle.id in self._cancelled:
                return False
            if handle in self._queue:
                self._queue.remove(handle)
                self._end(handle, CANCELLED)
            else:
                self._cancelled.add(handle.id)
            return True

    def jobs(self) -> list[JobHandle]:
        """The jobs not ended yet: running ones (in the order they joined), then queued ones."""
        with self._lock:
            return [*self._running, *self._queue]

    def end_all(self, status: str = CANCELLED, error: str | None = None) -> list[JobHandle]:
        """End every job not ended yet (queued and running) with `status`, their places freed:
        a server draining past its deadline, or a step that failed. From the thread that
        drives `step`, between steps. -> those jobs."""
        with self._lock:
            ended = [*self._running, *self._queue]
            for handle in list(self._running):
                self._stop(handle, status)
            for handle in self._queue:
                self._end(handle, status)
            self._queue.clear()
            self._cancelled.clear()
            for handle in ended:
                handle.error = error
        return ended

    def run(self) -> None:
        """Step until every job has ended."""
        while not self.idle:
            self.step()

    @torch.inference_mode()
    def step(self) -> list[JobHandle]:
        """One step boundary and one step: cancelled jobs leave, queued jobs join, prompt chunks
        are fed, and every running job's rows take one step. -> the jobs that made codes or
        ended."""
        changed = self._leave()
        decoding = [h for h in self._running if not self._rows(h).current.prefilling]
        changed += self._join(busy=bool(decoding))
        self._prefill(busy=bool(decoding))
        decoding = [h for h in self._running if not self._rows(h).current.prefilling]
        if decoding:
            self._decode(decoding)
        changed += self._publish()
        return list(dict.fromkeys(changed))

    # --- the boundary -----------------------------------------------------------------------

    def _leave(self) -> list[JobHandle]:
        with self._lock:
            leaving = [h for h in self._running if h.id in self._cancelled]
            for handle in leaving:
                self._cancelled.discard(handle.id)
                self._stop(handle, CANCELLED)
        return leaving

    def _join(self, busy: bool) -> list[JobHandle]:
        joined: list[JobHandle] = []
        while not (busy and len(joined) >= self.joins_per_step):
            with self._lock:
                if not self._queue or not self.pool.free:
                    break
                handle = self._queue.popleft()
                place = self.pool.take()
                handle.status = RUNNING
                self._running.append(handle)
            joined.append(handle)
            rows = self._rows(handle)
            rows.place = place
            try:
                self._start(rows)
            except Exception as error:  # this job's fault (its text), not the batch's
                handle.error = f"{type(error).__name__}: {error}"
                with self._lock:
                    self._stop(handle, FAILED)
        return joined

    def _start(self, rows: JobRows) -> None:
        """Encode the job's text alone, as a call of its own does, into its place's text."""
        text = self.model.condition([rows.job.text])
        lm = self.step_runner.lm
        p = next(lm.parameters())
        cross, _ = lm.text_keys(text.states, text.mask, self.pool.layout.text_dtype(p.dtype))
        assert rows.place is not None
        self.pool.set_text(rows.place, cross)
        rows.start_window()

    def _prefill(self, busy: bool) -> None:
        """Feed prompts, oldest job first: while rows are running, layers for about
        `prefill_share` of the last step's time; else a chunk for every waiting job. A job's
        first draw comes with its prompt's last chunk."""
        budget = self.prefill_share * (self.step_seconds or 0.0) if busy else None
        start = time.perf_counter()
        for handle in [h for h in self._running if self._rows(h).current.prefilling]:
            rows, window = self._rows(handle), self._rows(handle).current
            while window.prefilling:
                if rows.prefill is None:
                    group = RowGroup(self._place(rows), rows.rows, window.fed)
                    lm = self.step_runner.lm
                    rows.prefill = LayeredPrefill(lm, self.pool, group, window.next_frames())
                left = None if budget is None else budget - (time.perf_counter() - start)
                logits = rows.prefill.run(None if left is None else max(0.0, left))
                if logits is not None:
                    window.fed += rows.prefill.frames
                    rows.prefill = None
                    if not window.prefilling:
                        rows.draw(logits)
                if budget is None:
                    break  # a chunk each
                if time.perf_counter() - start >= budget:
                    return

    def _decode(self, decoding: list[JobHandle]) -> None:
        """One step of every decoding job's rows, and each job's draw."""
        jobs = [self._rows(h) for h in decoding]
        groups = tuple(RowGroup(self._place(r), r.rows, r.current.fed) for r in jobs)
        batch = RowBatch(groups)
        frames = [r.current.next_frames() for r in jobs]
        firsts = [f[:1] for f in frames]
        seconds = [f[1:] for f in frames if f.shape[0] == 2]
        start = time.perf_counter()
        logits = self.step_runner.rows(torch.cat(firsts + seconds), self.pool, batch)
        self.step_seconds = time.perf_counter() - start
        for rows, index in zip(jobs, batch.rows_of, strict=True):
            rows.current.fed += 1
            # index_select: indexing with a list took ~20 ms here (torch 2.13).
            rows.draw(logits.index_select(0, torch.tensor(index)))

    def _publish(self) -> list[JobHandle]:
        """Hand each job's new blocks to its handle; the jobs that ended leave."""
        changed = []
        with self._lock:
            for handle in list(self._running):
                rows = self._rows(handle)
                if rows.out:
                    handle.blocks.extend(rows.out)
                    rows.out.clear()
                    handle.steps = (rows.steps_done, rows.steps_total)
                    changed.append(handle)
                if rows.finished:
                    self._stop(handle, DONE)
        return changed

    # --- bookkeeping ------------------------------------------------------------------------

    def _stop(self, handle: JobHandle, status: str) -> None:
        """A running job leaves: its place goes back to the pool (lock held)."""
        rows = self._rows(handle)
        if rows.place is not None:
            self.pool.give(rows.place)
        self._running.remove(handle)
        self._end(handle, status)

    @staticmethod
    def _end(handle: JobHandle, status: str) -> None:
        handle.status = status
        handle.rows = None  # its decode state goes with it

    @staticmethod
    def _rows(handle: JobHandle) -> JobRows:
        if handle.rows is None:
            raise RuntimeError(f"job {handle.id} has ended")
        return handle.rows

    @staticmethod
    def _place(rows: JobRows) -> int:
        if rows.place is None:
            raise RuntimeError("the job has no place in the pool")
        return rows.place

    def _prompt(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """An audio prompt's codes as [1, K, P] long, refused unless they leave room in the
        window."""
        if prompt is None:
            return None
        codes = prompt[None] if prompt.dim() == 2 else prompt
        k = self.cfg.num_codebooks
        if codes.dim() != 3 or codes.shape[:2] != (1, k) or codes.is_floating_point():
            raise InvalidOptionError(
                f"a job's prompt must be codes [1, {k}, P], got {tuple(prompt.shape)}"
            )
        if not 0 < codes.shape[-1] < self.window:
            raise InvalidOptionError(
                f"a prompt of {codes.shape[-1]} frames must be shorter than the "
                f"{self.window}-frame window"
            )
        return codes.to(device=self.device, dtype=torch.long)
