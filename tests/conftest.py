"""Checkpoints the tests build themselves: transformers' MusicGen at tiny sizes, random
weights, saved in the hub layout with a real sentencepiece tokenizer. Built once per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tunesmith.kernels.cpu import build, isa
from tunesmith.kernels.cpu.ops import Kernels
from tunesmith.models.lm import MusicGenLM
from tunesmith.testing.checkpoints import build_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny checkpoint as transformers 5 writes it (`parametrizations.weight.original0/1`)."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_legacy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights with the hub file's legacy names (`weight_g` / `weight_v`, stored
    positional table, both copies of the tied T5 embedding)."""
    return build_checkpoint(tmp_path_factory.mktemp("tiny-legacy"), "tiny", seed=0, legacy=True)


@pytest.fixture(scope="session")
def tiny_reference(tiny_checkpoint: Path):
    """transformers' model loaded from the tiny checkpoint: the parity reference."""
    from transformers import MusicgenForConditionalGeneration

    return MusicgenForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):
    from tunesmith import MusicGen

    return MusicGen.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def decoder_pair() -> tuple[object, MusicGenLM]:
    """transformers' tiny MusicGen decoder and ours with the same weights."""
    from tunesmith.checkpoints.hub_keys import hf_to_tunesmith, strip_prefix
    from tunesmith.config import LMConfig
    from tunesmith.testing.checkpoints import build_hf_model

    hf = build_hf_model("tiny", seed=3)
    ours = MusicGenLM(LMConfig.from_hf(hf.config.decoder.to_dict()))
    state = strip_prefix(hf_to_tunesmith(hf.state_dict()), "decoder.")
    ours.load_state_dict(state, strict=True)
    return hf.decoder, ours.eval()


@pytest.fixture(params=isa.NAMES)
def kernel_build(request: pytest.FixtureRequest) -> Kernels:
    """Each CPU kernel build this machine can run (the others skip, saying why)."""
    name = request.param
    if name not in {i.name for i in isa.runnable(isa.cpu_features())}:
        pytest.skip(f"this CPU cannot run the {name} kernels")
    found = build.kernels_for(name)
    if found is None:
        pytest.skip(f"the {name} kernels do not build here")
    return found


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny products gain nothing from two, and on a busy
    machine each of torch's many small parallel regions waits for the second thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "cuda" in item.keywords and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
