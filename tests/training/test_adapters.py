"""Adapters cross between ecosystems: one trained here loads in transformers + PEFT, one
written by transformers + PEFT (musicgen-dreamboothing's targets) loads here, and the same
adapter gives the same logits in both, within 1e-4."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.checkpoints.adapters import AdapterSettings
from tunesmith.errors import CheckpointError
from tunesmith.training.lora import DEFAULT_TARGETS, add_lora, export_adapter, lora_weights
from tunesmith.training.objective import delayed_batch

peft = pytest.importorskip("peft")
CAPTIONS = ["warm lofi piano", "fast techno with a long title"]


def _batch() -> torch.Tensor:
    torch.manual_seed(5)
    return delayed_batch([torch.randint(0, 2048, (4, 20)) for _ in CAPTIONS], 2048).inputs


def _ours(model: MusicGen, inputs: torch.Tensor) -> torch.Tensor:
    text = model.condition(CAPTIONS)
    with torch.no_grad():
        return model.model.decoder.teacher_forced(inputs, text.states, text.mask)


def _theirs(reference, model: MusicGen, inputs: torch.Tensor) -> torch.Tensor:
    ids, mask = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        out = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs)
    b, k = inputs.shape[:2]
    return out.logits.view(b, k, *out.logits.shape[1:])


@pytest.fixture(scope="module")
def our_adapter(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter as `tunesmith train` writes it, with nonzero random factors."""
    model = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", engine=False)
    add_lora(model.model.decoder, DEFAULT_TARGETS, rank=4, alpha=8, dropout=0.0)
    torch.manual_seed(2)
    for _a, b in lora_weights(model.model.decoder).values():
        torch.nn.init.normal_(b, std=0.3)
    folder = tmp_path_factory.mktemp("ours") / "adapter"
    return export_adapter(
        model.model.decoder, folder, AdapterSettings(4, 8, 0.0, str(tiny_checkpoint))
    )


def test_our_adapter_loads_in_peft_with_the_same_logits(
    our_adapter: Path, tiny_checkpoint: Path, tiny_reference, tiny_model
) -> None:
    reference = peft.PeftModel.from_pretrained(copy.deepcopy(tiny_reference), our_adapter).eval()
    adapted = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", adapter=our_adapter)
    inputs = _batch()
    theirs, ours = _theirs(reference, adapted, inputs), _ours(adapted, inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    plain = _ours(tiny_model, inputs)
    assert (plain - ours).abs().max() > 1e-2  # the adapter changed something
    assert adapted.adapters[0]["rank"] == 4 and adapted.adapters[0]["layers"] == 20


def test_peft_adapter_loads_here_with_the_same_logits(
    tiny_checkpoint: Path, tiny_reference, tmp_path: Path
) -> None:
    """musicgen-dreamboothing's LoRA: attention, fc1/fc2, the projection, heads, embeddings."""
    targets = ["enc_to_dec_proj", "k_proj", "v_proj", "q_proj", "out_proj", "fc1", "fc2"]
    targets += [f"lm_heads.{i}" for i in range(4)] + [f"embed_tokens.{i}" for i in range(4)]
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.05)
    reference = peft.get_peft_model(copy.deepcopy(tiny_reference), config)
    torch.manual_seed(3)
    for name, param in reference.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.2)
    reference.save_pretrained(tmp_path / "peft")
    reference.eval()
    adapted = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", adapter=tmp_path / "peft")
    inputs = _batch()
    theirs, ours = _theirs(reference, adapted, inputs), _ours(adapted, inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_int8_with_adapter_holds_the_int8_guard(our_adapter: Path, tiny_checkpoint: Path) -> None:
    """Merged before quantizing: int8 + adapter against float32 + adapter, as int8 alone."""
    full = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", adapter=our_adapter)
    small = MusicGen.from_pretrained(
        tiny_checkpoint, device="cpu", adapter=our_adapter, quantize="int8"
    )
    inputs = _batch()
    a, b = _ours(full, inputs), _ours(small, inputs)
    relative = float((a - b).norm() / a.norm())
    assert relative < 0.03, f"int8 + adapter is {relative:.2%} from float32 + adapter"
    codes = small.generate_tokens("warm lofi piano", duration=0.3, seed=1, top_k=1)
    assert codes.shape == (1, 4, 15)


def test_adapter_scale_zero_is_the_plain_model(
    our_adapter: Path, tiny_checkpoint: Path, tiny_model
) -> None:
    off = MusicGen.from_pretrained(
        tiny_checkpoint, device="cpu", adapter=our_adapter, adapter_scale=0.0
    )
    inputs = _batch()
    torch.testing.assert_close(_ours(off, inputs), _ours(tiny_model, inputs))


def test_bad_adapters_are_one_clear_error(
    our_adapter: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match=r"no adapter_config\.json"):
        MusicGen.from_pretrained(tiny_checkpoint, device="cpu", adapter=tmp_path)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    with pytest.raises(CheckpointError, match="IA3"):
        MusicGen.from_pretrained(tiny_checkpoint, device="cpu", adapter=wrong)
    with pytest.raises(CheckpointError, match="2 adapter scales for 1"):
        MusicGen.from_pretrained(
            tiny_checkpoint, device="cpu", adapter=our_adapter, adapter_scale=[1.0, 0.5]
        )
