"""Proof that training learns: a tiny model fine-tuned on four captions, each with its own
sound, then asked for each caption greedily (no guidance), gives back that caption's own
codes, where the untrained model gives back none of them.

The checkpoint's codec has codebooks fitted to its encoder (`fit_codebooks`): with purely
random codebooks every sound quantizes to the same code or two, and the test would prove
nothing. LoRA also adapts the output heads here (as musicgen-dreamboothing does): the tiny
model's random heads are otherwise a bottleneck no real checkpoint has.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import SOUNDS, write_clips
from tunesmith import MusicGen
from tunesmith.cli.main import main
from tunesmith.testing.checkpoints import build_checkpoint
from tunesmith.training.codes import encode_examples
from tunesmith.training.data import find_examples
from tunesmith.training.lora import DEFAULT_TARGETS

STEPS = 300
CHANCE = 1 / 2048


def _match_table(model: MusicGen, own: dict[str, torch.Tensor]) -> torch.Tensor:
    """[caption asked, caption whose codes] -> share of positions the greedy codes equal.

    Without guidance (cfg_scale 1): the conditional model is what training fits. Guidance
    extrapolates away from the unconditional model, which here (text dropped from 4 clips) is
    a blend of the four sounds. On one CPU, one caption's second frame flipped under CFG 3
    while its conditional codes were all its own: a float rounding in training decided it.
    """
    table = torch.zeros(len(own), len(own))
    for i, caption in enumerate(own):
        codes = model.generate_tokens(caption, duration=1.0, top_k=1, seed=0, cfg_scale=1.0)[0]
        for j, other in enumerate(own.values()):
            table[i, j] = (codes == other[:, : codes.shape[-1]]).float().mean()
    return table


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("learning")
    model_dir = build_checkpoint(root / "model", "tiny", seed=0, fitted_codec=True)
    data = root / "data"
    write_clips(data)
    out = root / "run"
    targets = ",".join([*DEFAULT_TARGETS, *(f"lm_heads.{i}" for i in range(4))])
    rc = main([
        "train", str(data), "--model", str(model_dir), "--out", str(out),
        "--segment-seconds", "1", "--val-share", "0", "--steps", str(STEPS),
        "--lr", "1e-2", "--batch-size", "4", "--save-every", str(STEPS),
        "--lora-targets", targets,
    ])  # fmt: skip
    assert rc == 0
    base = MusicGen.from_pretrained(model_dir, device="cpu")
    segments, _ = encode_examples(base, find_examples(data), out / "codes", 1.0, progress=False)
    own = {s.caption: s.codes.long() for s in segments}
    assert list(own) != [] and set(own) == set(SOUNDS)
    adapted = MusicGen.from_pretrained(model_dir, device="cpu", adapter=out / "adapter")
    return out, base, adapted, own


def test_training_loss_falls_well_below_its_start(learned) -> None:
    out = learned[0]
    losses = [json.loads(x)["loss"] for x in (out / "train.jsonl").read_text().splitlines()]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.25 * first, f"mean loss of the first 10 steps {first:.3f}, last 10 {last:.3f}"


def test_each_caption_gives_back_its_own_codes(learned) -> None:
    _, base, adapted, own = learned
    trained, untrained = _match_table(adapted, own), _match_table(base, own)
    report = (
        f"share of greedy codes equal to each caption's own (chance {CHANCE:.5f}):\n"
        f"trained (rows: caption asked, columns: codes of)\n{trained}\nuntrained\n{untrained}"
    )
    diagonal = trained.diagonal()
    off = trained[~torch.eye(len(own), dtype=torch.bool)]
    assert diagonal.min() > 0.5, report
    assert off.max() < 0.1, report  # its own sound, not the others'
    assert untrained.max() < 0.05, report
