"""The compiled decoder step against its eager twin: same greedy tokens, close logits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.engine.compiled_step import CompiledForward, TorchCompileStep, warm_up
from tunesmith.engine.step import EagerStep

# Each case compiles the tiny decoder once (~20-40 s on 2 cores).
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    """Each test starts without earlier tests' graphs: dynamo keeps at most 8 variants of one
    function per process, and MusicGenLM.forward is the same function in every test."""
    torch._dynamo.reset()


def twins(model: MusicGen) -> tuple[MusicGen, MusicGen]:
    """Two copies whose one-frame steps run module by module (eager) and compiled, on the
    cache a compiled step keeps where it runs (`engine.prepare`: where there are no C++
    kernels, so the weights' dtype). The C++ step is held to the module path's logits in
    test_cpu_step instead: its int8 cache rounds keys to 1/127 of their largest, so the
    compiled graph's ~1e-4 other rounding moves a byte now and then, and sampled tokens part
    ways within ~15 frames."""
    made = []
    for kind in (EagerStep, TorchCompileStep):
        copied = copy.deepcopy(model.model)
        made.append(MusicGen(copied, model.tokenizer, name=model.name, step=kind(copied.decoder)))
    return made[0], made[1]


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_compiled_greedy_tokens_equal_eager(tiny_checkpoint: Path, quantize: str | None) -> None:
    eager, compiled = twins(
        MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize=quantize)
    )
    assert isinstance(compiled.step, TorchCompileStep)
    warm_up(compiled.step)
    prompts = ["lofi beat with warm piano"]
    want = eager.generate_tokens(prompts, duration=0.6, top_k=1)
    got = compiled.generate_tokens(prompts, duration=0.6, top_k=1)
    assert torch.equal(got, want)
    # Padded prompts of two lengths, sampled: another graph (text mask, 2 text rows), same draws.
    prompts = ["lofi beat", "epic orchestral music with strings and brass"]
    want = eager.generate_tokens(prompts, duration=0.4, seed=3)
    got = compiled.generate_tokens(prompts, duration=0.4, seed=3)
    assert torch.equal(got, want)
    # The warmed-up kind again (its guards skipped, now among two graphs), then a one-token
    # text (unconditional: a size-1 dimension, another graph).
    for prompt in ["a slow ballad on a piano", ""]:
        want = eager.generate_tokens([prompt], duration=0.4, seed=5)
        got = compiled.generate_tokens([prompt], duration=0.4, seed=5)
        assert torch.equal(got, want)


def test_compiled_steps_match_eager_logits(tiny_checkpoint: Path) -> None:
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    lm = model.step
    twin = TorchCompileStep(copy.deepcopy(model.model.decoder))  # steps compiled, not in C++
    text = model.condition(["jazz"])
    tokens = torch.randint(0, 2048, (2, 4, 12))
    with torch.inference_mode():
        a, b = (
            lm.new_cache(2, 12, text.states, text.mask),
            twin.new_cache(2, 12, text.states, text.mask),
        )
        for t in range(12):
            want, got = lm(tokens[..., t : t + 1], a), twin(tokens[..., t : t + 1], b)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert a.length == b.length == 12


@torch.inference_mode()
def test_a_step_its_skipped_guards_would_miss_falls_back_to_guards(tiny_checkpoint: Path) -> None:
    """The warmed-up kind of call with something step_kind does not compare (keys and values
    that are views at an offset into a larger buffer): it recompiles with guards instead of
    failing, and gives the eager logits."""
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    lm = model.step
    twin = warm_up(TorchCompileStep(copy.deepcopy(model.model.decoder)))
    step = twin.compiled
    assert isinstance(step, CompiledForward) and step.trusted is not None
    text = model.condition(["jazz"])
    tokens = torch.randint(0, 2048, (2, 4, 4))
    want_cache, got_cache = (m.new_cache(2, 4, text.states, text.mask) for m in (lm, twin))
    for layer in got_cache.layers:
        for name in ("self_k", "self_v"):
            old = getattr(layer, name)
            wider = torch.zeros(old.numel() + 7, dtype=old.dtype)
            setattr(layer, name, wider[7:].view(old.shape))
    for t in range(4):
        want, got = lm(tokens[..., t : t + 1], want_cache), twin(tokens[..., t : t + 1], got_cache)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert step.trusted is None


@torch.inference_mode()
def test_steps_run_eagerly_once_dynamo_compiles_no_more_variants(tiny_checkpoint: Path) -> None:
    """Past dynamo's recompile limit a fullgraph compile fails outright: the step falls back
    to the eager one (same logits), with a warning, instead of failing the generation."""
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu")
    lm = model.step
    twin = warm_up(TorchCompileStep(copy.deepcopy(model.model.decoder)))  # one graph: the
    # guided kind, one text row
    text = model.condition(["jazz", "a slow ballad"])  # another kind: two text rows, padded
    tokens = torch.randint(0, 2048, (4, 4, 4))
    want_cache, got_cache = (m.new_cache(4, 4, text.states, text.mask) for m in (lm, twin))
    with torch._dynamo.config.patch(recompile_limit=1), pytest.warns(UserWarning, match="eager"):
        for t in range(4):
            want = lm(tokens[..., t : t + 1], want_cache)
            got = twin(tokens[..., t : t + 1], got_cache)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_running_batch_of_compiled_steps_gives_each_job_its_codes(tiny_checkpoint: Path) -> None:
    """Jobs at their own positions (`Step.rows`) through the compiled step: each job's rows in
    their place of the pool, one compiled call a job, the codes it gives alone."""
    from tunesmith.generation.rows import BatchJob
    from tunesmith.generation.scheduler import RunningBatch
    from tunesmith.options import GenerationOptions

    _, compiled = twins(MusicGen.from_pretrained(tiny_checkpoint, device="cpu"))
    assert isinstance(compiled.step, TorchCompileStep)
    jobs = [
        BatchJob("lofi beat", GenerationOptions(duration=0.4, seed=1)),
        BatchJob("jazz", GenerationOptions(duration=0.3, seed=2, cfg_scale=1.0)),
        BatchJob("", GenerationOptions(duration=0.2, top_k=1)),
    ]
    alone = [compiled.generate_tokens(j.text, j.options) for j in jobs]
    batch = RunningBatch(compiled, max_batch=2)
    handles = [batch.submit(jobs[0])]
    for _ in range(3):
        batch.step()
    handles += [batch.submit(j) for j in jobs[1:]]
    batch.run()
    for handle, want in zip(handles, alone, strict=True):
        assert torch.equal(handle.codes(), want)
