"""The training loss is transformers' `labels=` loss on the same weights and batch."""

from __future__ import annotations

import torch

from tunesmith.generation.delay import undo_delay
from tunesmith.training.objective import codebook_loss, delayed_batch


def test_delayed_batch_marks_only_real_codes() -> None:
    codes = [torch.arange(12).view(4, 3), torch.arange(8).view(4, 2) + 100]
    batch = delayed_batch(codes, special=2048)
    assert batch.inputs.shape == batch.targets.shape == (2, 4, 3 + 3)
    # Each codebook of the first row has its 3 codes, of the second row its 2.
    assert batch.valid[0].sum(dim=1).tolist() == [3, 3, 3, 3]
    assert batch.valid[1].sum(dim=1).tolist() == [2, 2, 2, 2]
    assert batch.tokens == 20
    assert (batch.targets[~batch.valid] == 2048).all()
    # Targets are the inputs one position on; undoing the delay gives the codes back.
    assert torch.equal(batch.inputs[:, :, 1:], batch.targets[:, :, :-1])
    full = torch.cat([batch.inputs[:, :, :1], batch.targets], dim=2)
    assert torch.equal(undo_delay(full)[0], codes[0])


def test_loss_equals_transformers_labels_loss(tiny_model, tiny_reference) -> None:
    torch.manual_seed(0)
    codes = [torch.randint(0, 2048, (4, 40)), torch.randint(0, 2048, (4, 33))]
    batch = delayed_batch(codes, special=2048)
    captions = ["warm lofi piano", "fast techno with a long title and more words"]
    ids, mask = tiny_model.tokenizer(captions)
    text = tiny_model.condition(captions)
    logits = tiny_model.model.decoder.teacher_forced(
        batch.inputs, text.states.clone(), text.mask.clone()
    )
    ours = codebook_loss(logits, batch).detach()  # compared as a number: no graph needed

    from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

    labels = batch.targets.transpose(1, 2)  # [B, L, K]; the special token marks no target
    # transformers 5 derives the inputs from labels with the decoder config's
    # decoder_start_token_id, which its MusicgenDecoderConfig lacks: its own helper, called
    # with the start token (BOS, 2048) explicitly, gives the inputs it means.
    inputs = shift_tokens_right(labels, 2048, 2048)
    with torch.no_grad():
        out = tiny_reference(
            input_ids=ids, attention_mask=mask, decoder_input_ids=inputs, labels=labels
        )
    reference = out.loss
    assert torch.equal(inputs, batch.inputs)
    assert abs(float(ours) - float(reference)) < 1e-4, (float(ours), float(reference))
    assert float(ours) > 1.0  # a real loss, not a degenerate zero


def test_teacher_forced_matches_cached_steps(tiny_model) -> None:
    """The training forward computes what the decode path computes, step by step."""
    lm = tiny_model.model.decoder
    torch.manual_seed(1)
    tokens = torch.randint(0, 2048, (2, 4, 12))
    text = tiny_model.condition(["a", "b c"])
    with torch.no_grad():
        whole = lm.teacher_forced(tokens, text.states, text.mask)
        cache = lm.new_cache(2, 12, text.states, text.mask)
        stepped = torch.cat([lm(tokens[:, :, t : t + 1], cache) for t in range(12)], dim=2)
    torch.testing.assert_close(whole, stepped, rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoint, tiny_model) -> None:
    from tunesmith import MusicGen

    lm = MusicGen.from_pretrained(tiny_checkpoint, device="cpu", engine=False).model.decoder
    lm.train()
    torch.manual_seed(2)
    batch = delayed_batch([torch.randint(0, 2048, (4, 16)) for _ in range(2)], 2048)
    text = tiny_model.condition(["a", "b"])
    states, mask = text.states.clone(), text.mask.clone()
    grads = []
    for checkpointed in (False, True):
        lm.zero_grad()
        loss = codebook_loss(lm.teacher_forced(batch.inputs, states, mask, checkpointed), batch)
        loss.backward()
        grads.append([p.grad.clone() for p in lm.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 10
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
