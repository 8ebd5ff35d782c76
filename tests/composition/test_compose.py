"""A composed piece: section by section what `generate_tokens` gives when prompted with the
codes before it (greedy), transitions wired to the right texts, audio, streaming, progress."""

from __future__ import annotations

import pytest
import torch

from tunesmith import MusicGen, Section
from tunesmith.composition.compose import plan_for
from tunesmith.errors import InvalidOptionError
from tunesmith.options import GenerationOptions

SECTIONS = [
    Section("soft piano intro", 2.0),
    Section("drums enter, full band", 3.0, cfg_scale=4.0),  # context: 30 - 28.5 s = all 2 s
    Section("brass outro", 1.5, context=0.8, temperature=0.5),
    Section("silence then a hum", 1.0, context=0),  # a fresh start: no prompt
]
PIECE = GenerationOptions(top_k=1, stride=28.5)


def section_codes(model: MusicGen, piece: torch.Tensor, number: int) -> torch.Tensor:
    """What `generate_tokens` gives for section `number` prompted (as codes) with the frames
    its plan says precede it."""
    plan = plan_for(model, SECTIONS, PIECE).sections[number - 1]
    prompt = piece[..., plan.start - plan.context : plan.start] if plan.context else None
    return model.generate_tokens(
        plan.section.text, plan.options, audio_prompt=prompt, prompt_in_output=False
    )


def test_each_section_is_generate_tokens_prompted_with_the_codes_before_it(
    tiny_model: MusicGen,
) -> None:
    piece = tiny_model.compose_tokens(SECTIONS, PIECE)
    plan = plan_for(tiny_model, SECTIONS, PIECE)
    assert piece.shape == (1, 4, 100 + 150 + 75 + 50)
    assert [(s.start, s.frames, s.context) for s in plan.sections] == [
        (0, 100, 0), (100, 150, 75), (250, 75, 40), (325, 50, 0),
    ]  # fmt: skip
    for s in plan.sections:
        got = piece[..., s.start : s.start + s.frames]
        assert torch.equal(got, section_codes(tiny_model, piece, s.number)), s.label
    # The sections' own settings took: the second without its cfg override is other music.
    plain = tiny_model.generate_tokens(
        SECTIONS[1].text, 3.0, top_k=1, audio_prompt=piece[..., 25:100], prompt_in_output=False
    )
    assert not torch.equal(plain, piece[..., 100:250])


def test_a_section_longer_than_the_window_slides_as_long_form(tiny_model: MusicGen) -> None:
    """Section 2 is 40 s, prompted with the 1 s that exists: its first window adds 29 s, the
    next slides by the stride (18 s) inside the section, as long form's windows do."""
    sections = [Section("intro", 1.0), Section("long middle part", 40.0, context=5.0)]
    options = GenerationOptions(top_k=1, cfg_scale=1.0)
    piece = tiny_model.compose_tokens(sections, options)
    middle = tiny_model.generate_tokens(
        "long middle part", options, duration=40.0,
        audio_prompt=piece[..., :50], prompt_in_output=False,
    )  # fmt: skip
    assert torch.equal(piece[..., 50:], middle)


def test_a_transition_starts_from_the_previous_text(tiny_model: MusicGen) -> None:
    """Weight 0 at the boundary's first step: the first frame's first codebook is the one the
    previous text (with its own guidance) would have made there; later frames move to the new
    text's, and differ from a hard change."""
    before = Section("soft piano intro", 1.0, cfg_scale=5.0)
    hard = [before, Section("drums enter, full band", 1.0)]
    soft = [before, Section("drums enter, full band", 1.0, transition=0.5)]
    options = GenerationOptions(top_k=1)
    a, b = tiny_model.compose_tokens(hard, options), tiny_model.compose_tokens(soft, options)
    assert torch.equal(a[..., :50], b[..., :50])
    previous = tiny_model.generate_tokens(
        before.text, options, duration=1.0, cfg_scale=5.0,
        audio_prompt=b[..., :50], prompt_in_output=False,
    )  # fmt: skip
    assert a[0, 0, 50] != previous[0, 0, 0]  # the hard change takes the new text at once
    assert b[0, 0, 50] == previous[0, 0, 0]
    assert not torch.equal(a[..., 50:], b[..., 50:])


def test_compose_is_the_decoded_piece_and_streams(tiny_model: MusicGen) -> None:
    sections = [Section("a", 0.6), Section("b", 0.4, transition=0.2)]
    codes = tiny_model.compose_tokens(sections, seed=3)
    wav = tiny_model.compose(sections, seed=3)
    assert wav.shape == (1, 1, 50 * 640)
    assert torch.equal(wav, tiny_model.decode(codes))
    chunks = list(tiny_model.compose_stream(sections, seed=3, chunk_seconds=0.25))
    assert len(chunks) > 1
    joined = torch.cat(chunks, dim=-1)
    assert joined.shape == wav.shape
    snr = 10 * torch.log10(wav.pow(2).sum() / (joined - wav).pow(2).sum().clamp_min(1e-20))
    assert snr > 40


def test_progress_covers_the_piece_and_names_the_section(tiny_model: MusicGen, capsys) -> None:
    sections = [Section("first part", 0.3), Section("second part", 0.2)]
    seen: list[tuple[int, int, str]] = []
    with tiny_model.compose_token_stream(sections, top_k=1) as stream:

        def note(done: int, total: int) -> None:
            assert stream.section is not None
            seen.append((done, total, stream.section.label))

        stream._on_step = note
        list(stream)
    steps = stream.plan.steps
    assert steps == (15 + 3) + (10 + 3)  # each section's frames and the delay tail
    assert [d for d, _, _ in seen] == list(range(1, steps + 1))
    assert {t for _, t, _ in seen} == {steps}
    assert [label for _, _, label in seen].index("section 2/2: second part") == 18
    tiny_model.compose_tokens(sections, top_k=1, progress=True)
    assert "section 2/2: second part" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ([], "at least one section"),
        ("20: intro", "list of Section"),
        ([Section("a", 1.0), "b"], "section 2: expected a Section"),
        ([Section("a", 1.0, transition=0.5)], "section 1: a transition blends"),
        ([Section("a", 1.0)] * 101, "at most 100"),
        ([Section("a", 3000.0), Section("b", 700.0)], "add up to 3700s"),
    ],
)
def test_bad_pieces_are_refused_before_any_step(
    tiny_model: MusicGen, sections: list, message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        tiny_model.compose_token_stream(sections)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(text="", seconds=2), "text must be a non-empty string"),
        (dict(text="  ", seconds=2), "text must be a non-empty string"),
        (dict(text="a", seconds=0), "seconds must be a positive number"),
        (dict(text="a", seconds=-1), "seconds must be a positive number"),
        (dict(text="a", seconds="20"), "seconds must be a positive number"),
        (dict(text="a", seconds=float("nan")), "seconds must be a positive number"),
        (dict(text="a", seconds=4000), "longer than a piece may be"),
        (dict(text="a", seconds=2, transition=3), "transition 3s is longer than the section's 2s"),
        (dict(text="a", seconds=2, transition=-1), "transition must be"),
        (dict(text="a", seconds=2, context=30), "context 30s is not shorter than"),
        (dict(text="a", seconds=2, context=-2), "context must be"),
        (dict(text="a", seconds=2, top_k=-1), "top_k must be"),
        (dict(text="a", seconds=2, temperature=0), "temperature must be"),
    ],
)
def test_bad_sections_are_refused_when_made(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        Section(**kwargs)
