"""The decoder against transformers' MusicgenForCausalLM: logits, cache, masking."""

from __future__ import annotations

import pytest
import torch

from tunesmith.checkpoints.hub_keys import hf_to_tunesmith, strip_prefix
from tunesmith.config import LMConfig
from tunesmith.models.lm import MusicGenLM, sinusoidal_positions
from tunesmith.testing.checkpoints import build_hf_model


@pytest.fixture(scope="module")
def pair() -> tuple[object, MusicGenLM]:
    hf = build_hf_model("tiny", seed=3)
    ours = MusicGenLM(LMConfig.from_hf(hf.config.decoder.to_dict()))
    state = strip_prefix(hf_to_tunesmith(hf.state_dict()), "decoder.")
    ours.load_state_dict(state, strict=True)
    return hf.decoder, ours.eval()


def hf_logits(decoder, tokens, text, mask):
    b, k, t = tokens.shape
    out = decoder(
        input_ids=tokens.reshape(b * k, t), encoder_hidden_states=text, encoder_attention_mask=mask
    )
    return out.logits.reshape(b, k, t, -1)


def test_positions_match_reference_table(pair) -> None:
    decoder, _ = pair
    table = decoder.model.decoder.embed_positions.weights
    ours = sinusoidal_positions(torch.arange(table.shape[0]), table.shape[1])
    torch.testing.assert_close(ours, table, rtol=0, atol=1e-6)


@torch.no_grad()
def test_full_forward_logits_match(pair) -> None:
    decoder, ours = pair
    torch.manual_seed(0)
    tokens = torch.randint(0, 2049, (2, 4, 9))
    text = torch.randn(2, 5, 48)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    text = text * mask[..., None]
    want = hf_logits(decoder, tokens, text, mask)
    cache = ours.new_cache(2, 16, text, mask)
    got = ours(tokens, cache)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-4


@torch.no_grad()
def test_cached_steps_equal_full_forward(pair) -> None:
    _, ours = pair
    torch.manual_seed(1)
    tokens = torch.randint(0, 2049, (2, 4, 8))
    text = torch.randn(2, 3, 48)
    mask = torch.ones(2, 3, dtype=torch.long)
    full = ours(tokens, ours.new_cache(2, 8, text, mask))
    cache = ours.new_cache(2, 8, text, mask)
    parts = [ours(tokens[:, :, :3], cache)]  # prefill 3, then one frame at a time
    parts += [ours(tokens[:, :, i : i + 1], cache) for i in range(3, 8)]
    assert cache.length == 8
    assert (
        torch.cat(parts, dim=2) - full
    ).abs().max() < 1e-4  # logits are O(10): 1e-4 is ~1e-5 relative


@torch.no_grad()
def test_prefill_after_cached_frames_uses_causal_offsets(pair) -> None:
    _, ours = pair
    tokens = torch.randint(0, 2049, (1, 4, 7))
    text, mask = torch.randn(1, 2, 48), torch.ones(1, 2, dtype=torch.long)
    full = ours(tokens, ours.new_cache(1, 7, text, mask))
    cache = ours.new_cache(1, 7, text, mask)
    got = torch.cat([ours(tokens[:, :, :2], cache), ours(tokens[:, :, 2:], cache)], dim=2)
    assert (got - full).abs().max() < 1e-4  # logits are O(10): 1e-4 is ~1e-5 relative


@torch.no_grad()
def test_unconditional_rows_match_reference_zero_text(pair) -> None:
    """Rows past `cross_rows` equal the reference given a zero text state and zero mask."""
    decoder, ours = pair
    tokens = torch.randint(0, 2049, (2, 4, 4))
    text = torch.randn(1, 3, 48)
    mask = torch.ones(1, 3, dtype=torch.long)
    hf_text = torch.cat([text, torch.zeros_like(text)])
    hf_mask = torch.cat([mask, torch.zeros_like(mask)])
    want = hf_logits(decoder, tokens, hf_text, hf_mask)
    got = ours(tokens, ours.new_cache(2, 4, text, mask))
    assert (got - want).abs().max() < 1e-4


def test_cache_overflow_is_an_error(pair) -> None:
    _, ours = pair
    cache = ours.new_cache(1, 2, torch.zeros(1, 1, 48), torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="KV cache"):
        ours(torch.zeros(1, 4, 3, dtype=torch.long), cache)


@torch.no_grad()
def test_fused_qkv_gives_the_same_logits(pair) -> None:
    import copy

    _, ours = pair
    fused = copy.deepcopy(ours).fuse()
    tokens = torch.randint(0, 2049, (2, 4, 6))
    text, mask = torch.randn(2, 3, 48), torch.ones(2, 3, dtype=torch.long)
    want = ours(tokens, ours.new_cache(2, 6, text, mask))
    got = fused(tokens, fused.new_cache(2, 6, text, mask))
    assert (got - want).abs().max() < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("fused", [False, True])
def test_static_step_equals_the_dynamic_step(pair, fused: bool) -> None:
    """The fixed-shape step the CUDA graphs replay (position as a tensor, attention over the
    whole buffer with later frames masked) gives the eager step's logits and KV cache, here
    with padded text and an unconditional third row."""
    import copy

    _, ours = pair
    lm = copy.deepcopy(ours).fuse() if fused else ours
    torch.manual_seed(2)
    tokens = torch.randint(0, 2049, (3, 4, 7))
    text, mask = torch.randn(2, 5, 48), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    eager, static = lm.new_cache(3, 7, text, mask), lm.new_cache(3, 7, text, mask)
    lm(tokens[:, :, :2], eager)
    lm(tokens[:, :, :2], static)
    lm.prepare_static(static)
    for i in range(2, 7):
        want = lm(tokens[:, :, i : i + 1], eager)
        got = lm.static_step(tokens[:, :, i : i + 1], torch.tensor([static.length]), static)
        static.length += 1
        assert (got - want).abs().max() < 1e-4
    for a, b in zip(eager.layers, static.layers, strict=True):
        assert torch.allclose(a.self_k, b.self_k, atol=1e-5)
        assert torch.allclose(a.self_v, b.self_v, atol=1e-5)


@torch.no_grad()
def test_compiled_static_step_equals_the_static_step(pair) -> None:
    """What compile=True captures on CUDA, compiled here for the CPU: inductor's static_step
    gives the step's logits, for two batch sizes and window lengths (dynamic shapes)."""
    import copy

    _, ours = pair
    lm = copy.deepcopy(ours).compile_static_step()
    assert lm.compiled_static_step is not None
    torch.manual_seed(3)
    for rows, frames in [(2, 9), (4, 14)]:
        text, mask = torch.randn(rows // 2, 5, 48), torch.ones(rows // 2, 5, dtype=torch.long)
        mask[-1, 3:] = 0
        tokens = torch.randint(0, 2049, (rows, 4, 4))
        want, got = lm.new_cache(rows, frames, text, mask), lm.new_cache(rows, frames, text, mask)
        for cache in (want, got):
            lm.prepare_static(cache)
        for i in range(4):
            position = torch.tensor([i])
            a = lm.static_step(tokens[:, :, i : i + 1], position, want)
            b = lm.compiled_static_step(tokens[:, :, i : i + 1], position, got)
            assert (a - b).abs().max() < 1e-4


@pytest.mark.cuda
def test_cuda_graph_generation_gives_the_eager_tokens(tiny_checkpoint) -> None:
    """On a GPU: greedy tokens with the decoder step as written replayed as CUDA graphs equal
    eager ones, over two windows (a graph per KV cache)."""
    from tunesmith import MusicGen

    eager = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    graphed = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    graphed.model.decoder.cuda_graphs = True
    kwargs = dict(duration=40.0, stride=20.0, top_k=1)
    prompts = ["lofi beat", "an epic orchestral piece with brass"]
    want = eager.generate_tokens(prompts, **kwargs)
    got = graphed.generate_tokens(prompts, **kwargs)
    assert torch.equal(got, want)


@pytest.mark.cuda
@torch.inference_mode()
def test_compiled_cuda_graph_steps_give_the_eager_logits(tiny_checkpoint) -> None:
    """On a GPU, compile=True: inductor's step replayed as CUDA graphs gives the eager
    decoder's logits, teacher-forced over a window with padded text; and it generates."""
    from tunesmith import MusicGen

    eager = MusicGen.from_pretrained(tiny_checkpoint, device="cuda", dtype=torch.float32)
    compiled = MusicGen.from_pretrained(
        tiny_checkpoint, device="cuda", dtype=torch.float32, compile=True
    )
    lm = compiled.model.decoder
    assert lm.cuda_graphs and lm.compiled_static_step is not None
    text = eager.condition(["lofi beat", "an epic orchestral piece with brass"])
    torch.manual_seed(0)
    tokens = torch.randint(0, 2048, (4, lm.cfg.num_codebooks, 12), device="cuda")
    logits = []
    for model in (eager, compiled):
        decoder = model.model.decoder
        cache = decoder.new_cache(4, 12, text.states, text.mask)
        steps = [decoder(tokens[:, :, i : i + 1], cache).clone() for i in range(12)]
        logits.append(torch.cat(steps, dim=2))
    assert (logits[0] - logits[1]).abs().max() < 1e-3
    codes = compiled.generate_tokens(["lofi beat"], duration=1.0, seed=0)
    assert codes.shape == (1, lm.cfg.num_codebooks, 50)
