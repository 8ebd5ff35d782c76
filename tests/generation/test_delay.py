import torch

from tunesmith.generation.delay import apply_delay, delays, frame_views, undo_delay, valid_mask

S = 2048


def test_worked_example_from_docstring() -> None:
    codes = torch.tensor([[[10, 11, 12], [20, 21, 22], [30, 31, 32], [40, 41, 42]]])
    seq = apply_delay(codes, S)
    assert seq.tolist() == [
        [
            [S, 10, 11, 12, S, S, S],
            [S, S, 20, 21, 22, S, S],
            [S, S, S, 30, 31, 32, S],
            [S, S, S, S, 40, 41, 42],
        ]
    ]
    assert torch.equal(undo_delay(seq), codes)
    assert torch.equal(valid_mask(4, 7), seq[0] != S)


def test_round_trip_random_and_stereo() -> None:
    codes = torch.randint(0, 2048, (3, 8, 11))
    assert delays(8, channels=2) == [0, 0, 1, 1, 2, 2, 3, 3]
    seq = apply_delay(codes, S, channels=2)
    assert seq.shape == (3, 8, 1 + 11 + 3)
    assert torch.equal(undo_delay(seq, channels=2), codes)
    assert torch.equal(valid_mask(8, seq.shape[-1], channels=2), seq[0] != S)


def test_matches_transformers_delay_pattern() -> None:
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    cfg = MusicgenDecoderConfig(
        vocab_size=2048, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16
    )
    lm = MusicgenForCausalLM(cfg)
    start = torch.full((4, 1), S)
    _, pattern = lm.build_delay_pattern_mask(start, pad_token_id=S, max_length=10)
    # The reference marks positions to predict with -1; ours marks real frames True.
    assert torch.equal(pattern == -1, valid_mask(4, 10))


def test_frame_views_read_each_frame_as_it_is_written() -> None:
    """The loop's per-frame views (mono and stereo) read undo_delay's frames, from the values
    the sequence holds when they are read (written after the views were made)."""
    for k, channels in ((4, 1), (8, 2)):
        codes = torch.randint(0, 2048, (2, k, 6))
        seq = apply_delay(torch.zeros_like(codes), S, channels)
        views = frame_views(seq, channels)
        assert len(views) == 6
        seq.copy_(apply_delay(codes, S, channels))  # written after the views were made
        frames = [v if v.dim() == 3 else v.flatten(1, 2) for v in views]
        assert all(f.shape == (2, k, 1) for f in frames)
        assert torch.equal(torch.cat(frames, dim=2), codes)
