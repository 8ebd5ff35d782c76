"""EnCodec against transformers' implementation: the same random weights, loaded the way
production loads them (rename, drop the codebooks' EMA buffers, fold weight norm), must give
the same waveform from codes and exactly the same codes from a waveform."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tunesmith.checkpoints.hub_keys import fold_weight_norm, hf_to_tunesmith, strip_prefix
from tunesmith.config import EncodecConfig
from tunesmith.models.encodec import TAIL_CHUNK, EncodecModel

transformers = pytest.importorskip("transformers")

HOP = 640
PREFIX = "audio_encoder."


def build_reference(use_conv_shortcut: bool, seed: int = 0) -> Any:
    """transformers' EnCodec at a tiny width with MusicGen's 32 kHz layout, random weights."""
    cfg = transformers.EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048,
        codebook_dim=16,
        target_bandwidths=[2.2],  # -> 4 codebooks at 50 frames/s and 11 bits each
        use_causal_conv=False,
        use_conv_shortcut=use_conv_shortcut,
        pad_mode="reflect",
        norm_type="weight_norm",
        normalize=False,
        num_lstm_layers=2,
        chunk_length_s=None,
        overlap=None,
    )
    torch.manual_seed(seed)
    model = transformers.EncodecModel(cfg).eval()
    with torch.no_grad():
        # Random init leaves the codebooks at zero, which would make every code 0.
        for layer in model.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.inited.fill_(1.0)
    return model


def to_tunesmith(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers EnCodec state dict -> ours, through the same key map as a hub checkpoint
    (where the codec lives under `audio_encoder.`)."""
    return strip_prefix(hf_to_tunesmith({PREFIX + k: v for k, v in state.items()}), PREFIX)


def load_ours(reference: Any) -> EncodecModel:
    model = EncodecModel(EncodecConfig.from_hf(reference.config.to_dict())).eval()
    model.load_state_dict(to_tunesmith(reference.state_dict()), strict=True)
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["identity-skip", "conv-skip"])
def pair(request: pytest.FixtureRequest) -> tuple[Any, EncodecModel]:
    reference = build_reference(request.param)
    return reference, load_ours(reference)


def test_config_from_hf(pair: tuple[Any, EncodecModel]) -> None:
    reference, ours = pair
    assert ours.cfg.num_quantizers == reference.config.num_quantizers == 4
    assert ours.cfg.hop_length == HOP
    assert ours.cfg.frame_rate == 50
    assert ours.cfg.use_conv_shortcut == reference.config.use_conv_shortcut


def test_state_dict_names_are_transformers_names(pair: tuple[Any, EncodecModel]) -> None:
    reference, ours = pair
    want = set()
    for key in reference.state_dict():
        if key.endswith(("inited", "cluster_size", "embed_avg")):
            continue
        key = key.replace(".parametrizations.weight.original0", ".weight")
        want.add(key.replace(".parametrizations.weight.original1", ".weight"))
    assert set(ours.state_dict()) == want
    assert any(".shortcut.conv." in k for k in want) == ours.cfg.use_conv_shortcut
    assert "decoder.layers.3.conv.weight" in want  # transposed convs are `conv` too


@torch.no_grad()
@pytest.mark.parametrize(
    ("num_codebooks", "frames"), [(4, 13), (2, 13), (4, 2 * TAIL_CHUNK + 7)], ids=str
)
def test_decode_matches_reference(
    pair: tuple[Any, EncodecModel], num_codebooks: int, frames: int
) -> None:
    """Short codes (one chunk of the decoder's tail) and codes that take three chunks."""
    reference, ours = pair
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2048, (2, num_codebooks, frames), generator=gen)
    wav = ours.decode(codes)
    assert wav.shape == (2, 1, frames * HOP)
    assert wav.dtype == torch.float32
    want = reference.decode(codes[None], [None]).audio_values
    assert want.shape == wav.shape
    diff = (wav - want).abs().max().item()
    assert diff < 1e-4, diff
    assert want.abs().max() > 1e-3  # the comparison is not between two silent outputs


@torch.no_grad()
@pytest.mark.parametrize("length", [13 * HOP, 7 * HOP + 123, 100])
def test_encode_matches_reference_exactly(pair: tuple[Any, EncodecModel], length: int) -> None:
    """Lengths that are a whole number of frames, one that is not (right padding completes
    the last window) and one shorter than a frame (reflect padding of tiny inputs)."""
    reference, ours = pair
    gen = torch.Generator().manual_seed(2)
    wav = 0.3 * torch.randn(2, 1, length, generator=gen)
    codes = ours.encode(wav)
    frames = -(-length // HOP)
    assert codes.shape == (2, 4, frames)
    assert codes.dtype == torch.long
    want = reference.encode(wav).audio_codes[0]
    assert torch.equal(codes, want)
    assert len(codes.unique()) > 1
    # Residual quantization is greedy: fewer codebooks give a prefix of the same codes.
    assert torch.equal(ours.encode(wav, num_codebooks=2), codes[:, :2])


@torch.no_grad()
def test_latents_match_reference(pair: tuple[Any, EncodecModel]) -> None:
    """The encoder alone, before quantization, to bound the drift that codes cannot show."""
    reference, ours = pair
    wav = 0.3 * torch.randn(1, 1, 9 * HOP + 17, generator=torch.Generator().manual_seed(3))
    diff = (ours.encoder(wav) - reference.encoder(wav)).abs().max().item()
    assert diff < 1e-5, diff


def test_legacy_weight_norm_names_fold_to_the_same_weights() -> None:
    """Hub files name weight norm `weight_g` / `weight_v`; transformers 5 writes
    `parametrizations.weight.original0` / `original1`. Both must give the same weights."""
    state = build_reference(use_conv_shortcut=True).state_dict()
    legacy = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in state.items()
    }
    assert any(k.endswith(".weight_g") for k in legacy)
    new, old = to_tunesmith(state), to_tunesmith(legacy)
    assert new.keys() == old.keys()
    for key in new:
        assert torch.equal(new[key], old[key]), key
    # The folded weight is the one transformers' parametrization computes.
    ref = build_reference(use_conv_shortcut=True)
    conv = ref.encoder.layers[0].conv
    torch.testing.assert_close(new["encoder.layers.0.conv.weight"], conv.weight.detach())
    assert not any("weight_g" in k or "original" in k for k in fold_weight_norm(legacy))


TAIL_CONFIGS = {
    "musicgen": {},
    "causal": {"use_causal_conv": True},
    # Other ratios, kernels and dilations, so that the halo is not right by accident.
    "other-layout": {
        "upsampling_ratios": (4, 3),
        "num_residual_layers": 2,
        "residual_kernel_size": 5,
        "dilation_growth_rate": 3,
        "last_kernel_size": 9,
        "use_conv_shortcut": True,
    },
}


def test_a_batch_decodes_as_its_rows_alone() -> None:
    """On a CPU the tail runs one row at a time: each row's audio lands in its own row (the
    first conv and the LSTM stay batched, so to float rounding)."""
    torch.manual_seed(5)
    cfg = EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16)
    decoder = EncodecModel(cfg).eval().decoder
    latents = torch.randn(3, cfg.hidden_size, 2 * TAIL_CHUNK + 9)
    with torch.no_grad():
        batch = decoder(latents)
        alone = torch.cat([decoder(latents[i : i + 1]) for i in range(3)])
    diff = (batch - alone).abs().max().item()
    assert diff < 1e-5, diff
    assert (batch[0] - batch[1]).abs().max() > 1000 * diff  # the rows differ


@torch.no_grad()
@pytest.mark.parametrize("layout", TAIL_CONFIGS)
@pytest.mark.parametrize(
    ("batch", "frames", "chunk"),
    [(2, 37, 10), (1, 40, 10), (1, 7, 10), (2, 23, 1)],
    ids=["not-a-multiple", "a-multiple", "shorter-than-a-chunk", "one-frame-chunks"],
)
def test_chunked_decoder_matches_one_whole_pass(
    layout: str, batch: int, frames: int, chunk: int
) -> None:
    """The decoder's tail run in chunks (with a halo of frames cropped away) gives what one
    pass over the whole sequence gives (a chunk longer than the input), up to rounding."""
    torch.manual_seed(4)
    cfg = EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16, **TAIL_CONFIGS[layout])
    decoder = EncodecModel(cfg).eval().decoder
    latents = torch.randn(batch, cfg.hidden_size, frames)
    whole = decoder(latents, chunk=frames + 1)
    chunked = decoder(latents, chunk=chunk)
    assert chunked.shape == whole.shape == (batch, 1, frames * cfg.hop_length)
    diff = (chunked - whole).abs().max().item()
    assert diff < 1e-5, diff
    assert whole.abs().max() > 1e-2  # not two silent outputs


def test_bad_arguments_are_refused() -> None:
    model = EncodecModel(EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16))
    with pytest.raises(ValueError, match="num_codebooks"):
        model.encode(torch.zeros(1, 1, HOP), num_codebooks=5)
    with pytest.raises(ValueError, match="waveform"):
        model.encode(torch.zeros(1, 2, HOP))
    with pytest.raises(ValueError, match="codes"):
        model.decode(torch.zeros(1, 5, 3, dtype=torch.long))
