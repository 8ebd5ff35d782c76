"""The codec's layers: each fast form against torch's own layers, on small random weights.

The decoder's tail runs time-major at inference on a CPU (`forward_time_major`); training and
every other device run `forward` on [B, C, N]. Both must give the same samples to float
rounding, for every padding mode, kernel, dilation and length the layers take.
"""

from __future__ import annotations

import pytest
import torch

from tunesmith.config import EncodecConfig
from tunesmith.models.encodec import EncodecModel
from tunesmith.models.seanet_layers import (
    PaddedConv1d,
    ResnetBlock,
    TrimmedConvTranspose1d,
    run_time_major,
)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max(), (got - want).abs().max()
    assert want.abs().max() > 1e-3  # not two silent outputs


def time_major(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's time-major form on x [B, C, N], back in [B, C, N'] to compare."""
    with torch.no_grad():
        return run_time_major(layer, x.transpose(1, 2).contiguous()).transpose(1, 2)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("kernel", "dilation", "length"),
    [(3, 1, 50), (7, 1, 40), (3, 3, 61), (4, 1, 33), (1, 1, 20), (7, 1, 9), (3, 1, 2)],
    ids=["k3", "k7", "dilated", "even-kernel", "1x1", "short", "tiny"],
)
def test_padded_conv_time_major_is_forward(
    mode: str, causal: bool, kernel: int, dilation: int, length: int
) -> None:
    """The zero-padded channels-last conv with its ends computed again is the padded conv;
    inputs too short for that take the plain path."""
    cfg = EncodecConfig(pad_mode=mode, use_causal_conv=causal)
    torch.manual_seed(kernel * 10 + dilation)
    conv = PaddedConv1d(cfg, 6, 5, kernel, dilation=dilation)
    x = torch.randn(2, 6, length)
    with torch.no_grad():
        want = conv(x)
    close(time_major(conv, x), want)


@pytest.mark.parametrize("shortcut", [False, True])
def test_resnet_block_time_major_is_forward(shortcut: bool) -> None:
    cfg = EncodecConfig(use_conv_shortcut=shortcut)
    torch.manual_seed(1)
    block = ResnetBlock(cfg, 8, dilation=2)
    x = torch.randn(3, 8, 45)
    with torch.no_grad():
        want = block(x.clone())
    close(time_major(block, x), want)


@pytest.mark.parametrize(("stride", "batch", "frames"), [(8, 1, 7), (4, 2, 30), (2, 3, 1)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_transposed_conv_time_major_is_torchs(
    stride: int, batch: int, frames: int, causal: bool, bias: bool
) -> None:
    """Both halves of the kernel as products, in place: torch's ConvTranspose1d."""
    cfg = EncodecConfig(use_causal_conv=causal)
    torch.manual_seed(stride)
    layer = TrimmedConvTranspose1d(cfg, 16, 8, 2 * stride, stride)
    if not bias:
        layer.conv.bias = None
    x = torch.randn(batch, 16, frames)
    want = layer(x)  # gradients on: torch's transposed conv
    close(time_major(layer, x), want.detach())


def test_transposed_conv_of_another_kernel_takes_torchs_path() -> None:
    torch.manual_seed(0)
    layer = TrimmedConvTranspose1d(EncodecConfig(), 4, 3, 5, 2)
    x = torch.randn(1, 4, 9)
    close(time_major(layer, x), layer(x).detach())


@pytest.mark.parametrize("causal", [False, True])
def test_decoder_tail_time_major_is_torchs_layers(causal: bool) -> None:
    """The whole decoder at inference (time-major tail) against a pass with gradients on
    (torch's layers, [B, C, N] throughout)."""
    torch.manual_seed(2)
    cfg = EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16, use_causal_conv=causal)
    decoder = EncodecModel(cfg).eval().decoder
    latents = torch.randn(2, 16, 23)
    want = decoder(latents).detach()
    with torch.no_grad():
        got = decoder(latents)
    close(got, want)


@pytest.mark.parametrize(("stride", "batch", "frames"), [(8, 1, 7), (4, 2, 30), (2, 3, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_transposed_conv_as_a_product_is_torchs(
    stride: int, batch: int, frames: int, causal: bool
) -> None:
    """Inference runs kernel = 2 x stride transposed convs as a product and an overlap-add:
    torch's ConvTranspose1d (what training, with gradients, still runs) to float rounding."""
    from tunesmith.models.seanet_layers import TrimmedConvTranspose1d

    cfg = EncodecConfig(use_causal_conv=causal)
    torch.manual_seed(stride)
    layer = TrimmedConvTranspose1d(cfg, 16, 8, 2 * stride, stride)
    x = torch.randn(batch, 16, frames)
    want = layer(x)  # gradients on: torch's transposed conv
    with torch.no_grad():
        got = layer(x)
        layer.conv.weight.mul_(2)  # a changed weight is read as it is now
        again = layer(x)
    assert got.shape == want.shape == (batch, 8, frames * stride)
    assert (got - want).abs().max() < 1e-5 * want.abs().max()
    assert (
        again - layer.conv.bias[:, None] - 2 * (want - layer.conv.bias[:, None])
    ).abs().max() < 1e-4
