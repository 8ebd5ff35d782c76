"""Continuous batching (`RunningBatch`): jobs of any settings join a running batch at any step
and each gives exactly the codes it gives alone (`MusicGen.generate_tokens` with its seed),
beside any neighbours, on the C++ step, module by module and with int8 weights; prompts are fed
between steps without holding up the running rows; cancelled jobs leave; memory stays flat
over 200 jobs."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.engine.cpu_step import CpuKernelStep
from tunesmith.errors import InvalidOptionError
from tunesmith.generation import loop
from tunesmith.generation.rows import BatchJob
from tunesmith.generation.scheduler import CANCELLED, DONE, FAILED, JobHandle, RunningBatch
from tunesmith.options import GenerationOptions

ENGINES = {"cpp": {}, "eager": {"engine": False}, "int8": {"quantize": "int8"}}


@pytest.fixture(scope="module", params=list(ENGINES))
def model(request: pytest.FixtureRequest, tiny_checkpoint: Path) -> MusicGen:
    return MusicGen.from_pretrained(tiny_checkpoint, device="cpu", **ENGINES[request.param])


def prompt_wav(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(1, 1, 640 * frames, generator=g)


def jobs_with_settings(model: MusicGen) -> tuple[list[BatchJob], list[torch.Tensor]]:
    """Jobs of different settings and durations (seeded, greedy, top-p, no guidance, other
    scales, unconditional, two audio prompts) and each one's codes alone."""
    o = GenerationOptions
    wav = prompt_wav(21)
    options = [
        (o(duration=0.3, seed=1), None),
        (o(duration=0.5, seed=2, top_k=50, temperature=0.7, cfg_scale=1.0), wav),
        (o(duration=0.2, top_k=1), None),
        (o(duration=0.4, seed=3, top_p=0.9, cfg_scale=5.0), wav[..., : 640 * 6]),
        (o(duration=0.3, seed=4, top_k=0), None),
    ]
    texts = ["lofi beat", "calm guitar", "", "techno", None]
    jobs, alone = [], []
    for text, (opts, audio) in zip(texts, options, strict=True):
        codes = None if audio is None else model.encode(audio)
        jobs.append(BatchJob(text, opts, codes))
        alone.append(model.generate_tokens(text, opts, audio_prompt=audio, prompt_in_output=False))
    return jobs, alone


def run(batch: RunningBatch, jobs: list[BatchJob], joins: list[int]) -> list[JobHandle]:
    """Submit job i before step joins[i] (steps counted from 0), then run to the end."""
    handles: dict[int, JobHandle] = {}
    step = 0
    while len(handles) < len(jobs) or not batch.idle:
        for i, at in enumerate(joins):
            if at == step:
                handles[i] = batch.submit(jobs[i])
        batch.step()
        step += 1
    return [handles[i] for i in range(len(jobs))]


def test_jobs_give_their_codes_alone_whenever_and_beside_whatever_they_join(
    model: MusicGen, request: pytest.FixtureRequest
) -> None:
    if not isinstance(model.step, CpuKernelStep):  # module by module: many small torch ops
        request.getfixturevalue("one_thread")
    jobs, alone = jobs_with_settings(model)
    arrangements = [
        (3, [0, 0, 2, 5, 9]),  # three places: later jobs wait for one
        (2, [4, 0, 0, 1, 12]),  # other neighbours, other join times
    ]
    for places, joins in arrangements:
        handles = run(RunningBatch(model, max_batch=places), jobs, joins)
        for i, (handle, want) in enumerate(zip(handles, alone, strict=True)):
            assert handle.status == DONE
            assert torch.equal(handle.codes(), want), f"job {i}, {places} places, joins {joins}"


class ShortWindow:
    """A model whose window is `seconds` long: long form within a few dozen frames."""

    def __init__(self, model: MusicGen, seconds: float) -> None:
        self.model, self.step, self.seconds = model, model.step, seconds

    @property
    def max_duration(self) -> float:
        return self.seconds

    def frames_for(self, duration: float) -> int:
        return self.model.frames_for(duration)

    def condition(self, texts: list[str | None]) -> loop.TextCondition:
        return self.model.condition(texts)


def test_long_form_windows_slide_as_alone(tiny_model: MusicGen) -> None:
    """Jobs of several windows (120 frames, strides of 50-75, a prompt too) slide their windows
    at their own steps and give the codes of `loop.iter_frames` (what `MusicGen` runs)."""
    o = GenerationOptions
    prompt = tiny_model.encode(prompt_wav(21, seed=1))
    jobs = [
        BatchJob("lofi", o(duration=4.5, seed=1, stride=1.5)),
        BatchJob("techno", o(duration=3.3, seed=3, top_p=0.9, stride=1.0), prompt[..., :5]),
        BatchJob("ambient", o(duration=2.7, seed=5, cfg_scale=1.0, stride=1.2), prompt),
    ]
    window = 120
    alone = []
    for job in jobs:
        opts = job.options
        blocks = loop.iter_frames(
            tiny_model.step, tiny_model.condition([job.text]), tiny_model.frames_for(opts.duration),
            opts, window=window, stride=tiny_model.frames_for(opts.stride), prompt=job.prompt,
        )  # fmt: skip
        alone.append(torch.cat(list(blocks), dim=2))
    batch = RunningBatch(ShortWindow(tiny_model, 2.4), max_batch=2)
    for handle, want in zip(run(batch, jobs, [0, 7, 8]), alone, strict=True):
        assert torch.equal(handle.codes(), want)


def test_a_prompt_is_fed_between_steps(tiny_model: MusicGen) -> None:
    """A joining job's 100-frame prompt goes in a layer at a time between steps (here the
    least time allowed: one layer a boundary), while the running job makes a frame at every
    step; the prompt's two chunks (64 and 37 frames) through 2 layers take 4 boundaries."""
    o = GenerationOptions
    batch = RunningBatch(tiny_model, max_batch=2, prefill_share=1e-9)
    running = batch.submit(BatchJob("lofi", o(duration=1.0, seed=1)))
    batch.step()
    prompt = tiny_model.encode(prompt_wav(100))
    joining = batch.submit(BatchJob("jazz", o(duration=0.2, seed=2), prompt))
    for boundary in range(4):
        assert joining.steps[0] == 0
        batch.step()
        assert running.steps[0] == boundary + 2
    # The last layer gave its first draw, and it took that boundary's step too.
    assert joining.steps[0] == 2
    batch.run()
    alone = tiny_model.generate_tokens(
        "jazz", o(duration=0.2, seed=2), audio_prompt=prompt_wav(100), prompt_in_output=False
    )
    assert torch.equal(joining.codes(), alone)


def test_streaming_progress_and_cancel(tiny_model: MusicGen) -> None:
    o = GenerationOptions
    batch = RunningBatch(tiny_model, max_batch=2)
    kept = batch.submit(BatchJob("lofi", o(duration=0.4, seed=1)))
    cancelled = batch.submit(BatchJob("noise", o(duration=2.0, seed=2)))
    queued = batch.submit(BatchJob("waits", o(duration=0.2, seed=3)))
    streamed: list[torch.Tensor] = []
    for _ in range(5):
        batch.step()
        streamed += kept.take()
    assert kept.steps == (5, 23) and queued.status == "queued"
    assert batch.cancel(cancelled) and not batch.cancel(cancelled)
    batch.step()  # it leaves; the queued job takes its place
    assert cancelled.status == CANCELLED and cancelled.rows is None
    assert queued.status == "running" and batch.counts() == (0, 2)
    batch.run()
    streamed += kept.take()
    assert kept.take() == []
    assert torch.equal(torch.cat(streamed, dim=2), kept.codes())
    assert torch.equal(kept.codes(), tiny_model.generate_tokens("lofi", o(duration=0.4, seed=1)))
    assert torch.equal(queued.codes(), tiny_model.generate_tokens("waits", o(duration=0.2, seed=3)))
    assert not batch.cancel(kept)
    waiting = batch.submit(BatchJob("never", o(duration=0.2)))
    assert batch.cancel(waiting) and waiting.status == CANCELLED and batch.idle
    # Everything at once (a drain's deadline): running and queued jobs end, places freed.
    live = [batch.submit(BatchJob("a", o(duration=1.0))) for _ in range(3)]
    batch.step()
    assert batch.jobs() == live and batch.counts() == (1, 2)
    assert batch.end_all(FAILED, "stopped") == live
    assert all(h.status == FAILED and h.error == "stopped" for h in live) and batch.idle
    assert sorted(batch.pool.free) == [0, 1]


def test_memory_stays_flat_over_200_jobs(tiny_model: MusicGen, one_thread: None) -> None:
    """200 jobs through 4 places: resident memory after the first 20 and after all 200 within
    a few MB (a KV cache per job would be 1.2 MB each here), and no job's state left alive."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("reads resident memory from /proc")
    page = 4096

    def resident() -> int:
        gc.collect()
        return int(statm.read_text().split()[1]) * page

    batch = RunningBatch(tiny_model, max_batch=4)
    keys = batch.pool.cache.layers[0].self_k.data_ptr()
    states: list[weakref.ref] = []
    texts = ["lofi", "a much longer text about jazz and drums", None, "techno"]
    warm = 0
    for n in range(200):
        opts = GenerationOptions(duration=0.02 * (1 + n % 5), seed=n, cfg_scale=1.0 + n % 3)
        handle = batch.submit(BatchJob(texts[n % 4], opts))
        assert handle.rows is not None
        states.append(weakref.ref(handle.rows))
        if n % 4 == 3:
            batch.run()
        if n == 19:
            warm = resident()
    batch.run()
    grown = resident() - warm
    assert grown < 8 * 2**20, f"resident memory grew {grown / 2**20:.1f} MB over 180 jobs"
    assert all(state() is None for state in states)
    assert sorted(batch.pool.free) == [0, 1, 2, 3]
    assert batch.pool.cache.layers[0].self_k.data_ptr() == keys  # the one pool throughout


def test_bad_jobs_are_refused_at_submit(tiny_model: MusicGen) -> None:
    short = RunningBatch(ShortWindow(tiny_model, 2.4), max_batch=1)
    with pytest.raises(InvalidOptionError, match="stride 3s"):
        short.submit(BatchJob("x", GenerationOptions(stride=3.0)))
    batch = RunningBatch(tiny_model, max_batch=1)
    with pytest.raises(InvalidOptionError, match=r"codes \[1, 4, P\]"):
        batch.submit(BatchJob("x", prompt=torch.zeros(1, 3, 5, dtype=torch.long)))
    with pytest.raises(InvalidOptionError, match="shorter than the 1500-frame window"):
        batch.submit(BatchJob("x", prompt=torch.zeros(1, 4, 1500, dtype=torch.long)))
    with pytest.raises(InvalidOptionError, match="string or None"):
        batch.submit(BatchJob(3))  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="at least 1"):
        RunningBatch(tiny_model, max_batch=0)
    assert batch.idle


def test_stereo_jobs_give_their_codes_alone(tmp_path: Path) -> None:
    """Two interleaved 4-codebook streams (8 codebooks, delays 0 0 1 1 2 2 3 3)."""
    from tunesmith.testing.checkpoints import build_family_model, save_checkpoint

    folder = save_checkpoint(build_family_model("stereo", seed=1), tmp_path / "stereo")
    stereo = MusicGen.from_pretrained(folder, device="cpu")
    o = GenerationOptions
    jobs = [
        BatchJob("left and right", o(duration=0.3, seed=1)),
        BatchJob(
            "wide",
            o(duration=0.2, seed=2, cfg_scale=1.0),
            stereo.encode(prompt_wav(9).repeat(1, 2, 1)),
        ),
    ]
    alone = [stereo.generate_tokens(jobs[0].text, jobs[0].options)]
    alone.append(
        stereo.generate_tokens(jobs[1].text, jobs[1].options,
                               audio_prompt=prompt_wav(9).repeat(1, 2, 1), prompt_in_output=False)
    )  # fmt: skip
    for handle, want in zip(
        run(RunningBatch(stereo, max_batch=2), jobs, [0, 3]), alone, strict=True
    ):
        assert want.shape[1] == 8 and torch.equal(handle.codes(), want)
