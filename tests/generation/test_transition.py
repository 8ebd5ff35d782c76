"""Transitions: the previous text's guided logits blend into the new one's over a span of
steps, both texts rows of one batch; weight 0 is the previous text's logits, 1 the new's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.engine.step import EagerStep, Step, guide
from tunesmith.generation.condition import TextCondition
from tunesmith.generation.delay import apply_delay, delays, undo_delay, valid_mask
from tunesmith.generation.loop import iter_window
from tunesmith.generation.sampling import sample
from tunesmith.generation.transition import Transition, blend_logits, stack_texts
from tunesmith.options import GenerationOptions

PREVIOUS, NEW = "soft piano intro, slow", "drums enter"


def prompt_codes(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (1, 4, frames), generator=g)


@pytest.fixture(scope="module")
def int8_model(tiny_checkpoint: Path) -> MusicGen:
    return MusicGen.from_pretrained(tiny_checkpoint, device="cpu", quantize="int8")


def steps_of(model: MusicGen, int8_model: MusicGen) -> dict[str, Step]:
    """The model's own step (one C++ call on an x86-64 CPU), its eager twin, and the int8
    model's step (an int8 KV cache, with scales, on a CPU)."""
    return {"loaded": model.step, "eager": EagerStep(model.model.decoder), "int8": int8_model.step}


@torch.inference_mode()
def first_logits(step: Step, text: TextCondition, rows: int, prompt: torch.Tensor) -> torch.Tensor:
    """The logits [rows, K, V] of the first position after `prompt`, on a fresh cache of
    `rows` rows whose leading ones see `text`."""
    lm = step.lm.cfg
    seq = apply_delay(prompt, lm.special_token, lm.audio_channels)
    p = prompt.shape[-1]
    cache = step.new_cache(rows, seq.shape[-1], text.states, text.mask)
    return step(seq[:, :, : p + 1].repeat(rows, 1, 1), cache)[:, :, -1]


@pytest.mark.parametrize("kind", ["loaded", "eager", "int8"])
@pytest.mark.parametrize(("previous_scale", "scale"), [(3.0, 3.0), (1.0, 4.0), (2.5, 1.0)])
def test_weight_0_gives_the_previous_texts_logits_and_1_the_new_ones(
    tiny_model: MusicGen, int8_model: MusicGen, kind: str, previous_scale: float, scale: float
) -> None:
    model = int8_model if kind == "int8" else tiny_model
    step = steps_of(tiny_model, int8_model)[kind]
    previous, new = model.condition([PREVIOUS]), model.condition([NEW])
    prompt = prompt_codes(12)
    guided = previous_scale != 1.0 or scale != 1.0
    both = first_logits(step, stack_texts(previous, new), 3 if guided else 2, prompt)

    def alone(text: TextCondition, s: float) -> torch.Tensor:
        logits = first_logits(step, text, 2 if s != 1.0 else 1, prompt)
        return guide(logits, s) if s != 1.0 else logits

    # To float rounding (another batch size, a padded text: ~2e-5 here), as the parity tests
    # hold logits (tests/test_musicgen.py), on logits of magnitude ~10.
    want_previous, want_new = alone(previous, previous_scale), alone(new, scale)
    assert want_new.abs().max() > 5.0
    for weight, want in ((0.0, want_previous), (1.0, want_new)):
        got = blend_logits(both, 1, previous_scale, scale, weight)
        assert (got - want).abs().max() < 1e-4
    # Half way is the mean of the two, and the two differ (the test can tell them apart).
    half = blend_logits(both, 1, previous_scale, scale, 0.5)
    assert (half - (want_previous + want_new) / 2).abs().max() < 1e-4
    assert (want_previous - want_new).abs().max() > 1.0


def test_weights_move_linearly_per_step_across_windows() -> None:
    text = TextCondition(torch.zeros(1, 2, 8), torch.ones(1, 2))
    span = Transition(text, 3.0, frames=4)
    assert [span.weight(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    later = span.later(2)
    assert later is not None and [later.weight(s) for s in range(3)] == [0.5, 0.75, 1.0]
    assert span.later(4) is None
    with pytest.raises(ValueError):
        Transition(text, 3.0, frames=0)


@torch.inference_mode()
def reference_window(
    step: Step,
    previous: tuple[TextCondition, float],
    new: tuple[TextCondition, float],
    frames: int,
    prompt: torch.Tensor,
    span: int,
    options: GenerationOptions,
) -> torch.Tensor:
    """Codes [1, K, frames - P] of one window, written the plain way: each text on a cache
    of its own, stepped side by side, their guided logits blended per step, then sampled
    (`options`, its seed's stream)."""
    generator = torch.Generator().manual_seed(options.seed or 0)
    lm = step.lm.cfg
    k, p = lm.num_codebooks, prompt.shape[-1]
    codes = torch.zeros(1, k, frames, dtype=torch.long)
    codes[..., :p] = prompt
    seq = apply_delay(codes, lm.special_token, lm.audio_channels)
    length = seq.shape[-1]
    shift = torch.tensor(delays(k))[:, None]
    writable = valid_mask(k, length) & (torch.arange(length)[None] >= 1 + shift + p)
    runs = []
    for text, scale in (previous, new):
        rows = 2 if scale != 1.0 else 1
        runs.append((step.new_cache(rows, length, text.states, text.mask), scale, rows))
    for position in range(p + 1, length):
        feed = seq[:, :, : p + 1] if position == p + 1 else seq[:, :, position - 1 : position]
        logits = []
        for cache, scale, rows in runs:
            out = step(feed.repeat(rows, 1, 1).contiguous(), cache)[:, :, -1]
            logits.append(guide(out, scale) if rows == 2 else out)
        weight = min(1.0, (position - p - 1) / span)
        blended = (1 - weight) * logits[0] + weight * logits[1]
        tokens = sample(
            blended, top_k=options.top_k, top_p=options.top_p,
            temperature=options.temperature, generator=generator,
        )  # fmt: skip
        seq[0, :, position] = torch.where(writable[:, position], tokens[0], seq[0, :, position])
    return undo_delay(seq)[..., p:]


@pytest.mark.parametrize("kind", ["loaded", "eager", "int8"])
@pytest.mark.parametrize(
    ("previous_scale", "scale", "span", "top_k"),
    [(3.0, 3.0, 6, 1), (1.0, 3.0, 1, 1), (2.0, 1.0, 8, 1), (3.0, 1.0, 30, 1), (3.0, 3.0, 5, 50)],
)
def test_a_window_with_a_transition_is_the_blend_of_two_runs(
    tiny_model: MusicGen,
    int8_model: MusicGen,
    kind: str,
    previous_scale: float,
    scale: float,
    span: int,
    top_k: int,
) -> None:
    """The loop's one batch (three rows, then the new text's alone once the span is over)
    gives the tokens of two separate runs blended step by step: greedy, and sampled (where
    the loaded step draws the tokens itself once the span is over)."""
    model = int8_model if kind == "int8" else tiny_model
    step = steps_of(tiny_model, int8_model)[kind]
    previous, new = model.condition([PREVIOUS]), model.condition([NEW])
    prompt, frames = prompt_codes(10, seed=1), 30
    options = GenerationOptions(top_k=top_k, cfg_scale=scale, seed=7)
    transition = Transition(previous, previous_scale, frames=span)

    def window(transition: Transition | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(7)
        blocks = iter_window(
            step, new, frames, options, generator, prompt=prompt, transition=transition
        )
        return torch.cat(list(blocks), dim=2)

    got = window(transition)
    want = reference_window(
        step, (previous, previous_scale), (new, scale), frames, prompt, span, options
    )
    assert torch.equal(got, want)
    # Not the new text's window alone: the blend changed what was made.
    assert not torch.equal(window(None), got)


def window_codes(
    model: MusicGen, step: Step, span: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy codes of a window with a transition, and of the same window without one."""
    previous, new = model.condition([PREVIOUS]), model.condition([NEW])
    options = GenerationOptions(top_k=1, cfg_scale=3.0)
    made = []
    for transition in (Transition(previous, 2.0, frames=span), None):
        blocks = iter_window(
            step, new, 40, options, torch.Generator(device), prompt_codes(9).to(device),
            transition=transition,
        )  # fmt: skip
        made.append(torch.cat(list(blocks), dim=2))
    return made[0], made[1]


@pytest.mark.slow
def test_compiled_step_gives_the_eager_transition(tiny_checkpoint: Path) -> None:
    """torch.compile's step (where our CPU kernels cannot be built) through a transition:
    three rows, then two, each a shape of its own; the eager step's greedy tokens."""
    from tunesmith.engine.compiled_step import TorchCompileStep

    torch._dynamo.reset()
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", engine=False)
    compiled = TorchCompileStep(model.model.decoder)
    want = window_codes(model, EagerStep(model.model.decoder), span=12)
    got = window_codes(model, compiled, span=12)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.cuda
def test_cuda_graph_step_gives_the_eager_transition(tiny_checkpoint: Path) -> None:
    """On a GPU: a CUDA graph per cache (the blend's three rows, then the kept two) gives
    the eager step's greedy tokens through a transition."""
    from tunesmith.engine.cuda_graphs import CudaGraphStep

    model = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    want = window_codes(model, EagerStep(model.model.decoder), span=12, device="cuda")
    got = window_codes(model, CudaGraphStep(model.model.decoder), span=12, device="cuda")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_span_longer_than_a_window_goes_on_in_the_next(
    tiny_model: MusicGen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows of 20 frames sliding by 8 after a 15-frame prompt: the first adds 5 frames,
    each later one 8; a 14-frame span runs on in the second and third windows from where the
    one before left it (weights 5/14.., 13/14), and no later window carries it."""
    from tunesmith.generation import loop

    seen: list[Transition | None] = []
    real = loop.iter_window

    def spy(step, text, frames, options, generator, prompt=None, transition=None):
        seen.append(transition)
        return real(step, text, frames, options, generator, prompt, transition)

    monkeypatch.setattr(loop, "iter_window", spy)
    previous, new = tiny_model.condition([PREVIOUS]), tiny_model.condition([NEW])
    span = Transition(previous, 3.0, frames=14)
    options = GenerationOptions(top_k=1)
    blocks = loop.iter_frames(
        tiny_model.step, new, 30, options, window=20, stride=8, prompt=prompt_codes(15),
        transition=span,
    )  # fmt: skip
    assert torch.cat(list(blocks), dim=2).shape == (1, 4, 30)
    assert [None if t is None else t.start for t in seen] == [0, 5, 13, None, None]
    assert all(t is None or t.previous is previous for t in seen)
