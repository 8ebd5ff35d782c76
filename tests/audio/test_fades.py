import math

import pytest
import torch

from tunesmith.audio.fades import apply_fades, equal_power
from tunesmith.errors import InvalidOptionError

RATE = 1000


def test_curves_are_equal_power_and_monotonic():
    up, down = equal_power(480, rising=True), equal_power(480, rising=False)
    assert torch.allclose(up.pow(2) + down.pow(2), torch.ones(480), atol=1e-6)
    assert bool((up[1:] >= up[:-1]).all()) and bool((down[1:] <= down[:-1]).all())
    assert float(up[0]) < 0.01 and float(up[-1]) > 0.99


def test_fades_touch_only_their_ends():
    wav = torch.ones(2, 5 * RATE)
    out = apply_fades(wav, RATE, fade_in=1.0, fade_out=0.5)
    assert out.shape == wav.shape and torch.equal(wav, torch.ones(2, 5 * RATE))  # not in place
    assert torch.equal(out[:, RATE : 5 * RATE - RATE // 2], wav[:, RATE : 5 * RATE - RATE // 2])
    mid_in = out[0, RATE // 2]  # half way into an equal-power fade: sin(pi/4)
    assert math.isclose(float(mid_in), math.sin(math.pi / 4), abs_tol=2e-3)
    assert float(out[0, 0]) < 0.01 and float(out[0, -1]) < 0.01


def test_zero_fades_leave_the_audio():
    wav = torch.randn(1, 3 * RATE)
    assert torch.equal(apply_fades(wav, RATE), wav)


@pytest.mark.parametrize(
    ("fade_in", "fade_out", "words"),
    [(-1.0, 0.0, "fade_in"), (0.0, float("nan"), "fade_out"), (2.0, 2.0, "longer than")],
)
def test_bad_fades_are_refused(fade_in, fade_out, words):
    with pytest.raises(InvalidOptionError, match=words):
        apply_fades(torch.zeros(1, 3 * RATE), RATE, fade_in, fade_out)
