"""Our tokenizer (the `tokenizers` library on tokenizer.json) gives the ids sentencepiece and
transformers give for the same files: real ids, padding and mask, not just shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunesmith.checkpoints.tokenizer import TextTokenizer
from tunesmith.testing.tokenizer import CAPTIONS, build_test_tokenizer

TEXTS = [
    "lofi hip hop beat with soft piano",
    "a zebra  plays the xylophone!",  # unseen words, a double space, punctuation
    "",
    "jazz",
    " \tjazz\n\nbass  ",  # whitespace that sentencepiece trims and collapses
    "ＦＵＬＬ width Café ﬁddle ½",  # NFKC folds these
    "🎸 guitar 音楽 solo",  # characters outside the vocabulary -> <unk>
    "UPPER Case 1990s",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Only the tokenizer files: no config.json, nothing else of a checkpoint.
    path = tmp_path_factory.mktemp("tok")
    build_test_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> TextTokenizer:
    return TextTokenizer.from_file(folder / "tokenizer.json")


def test_writes_the_hub_files(folder: Path) -> None:
    names = {"spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert names <= {p.name for p in folder.iterdir()}


def test_ids_match_sentencepiece(folder: Path, tokenizer: TextTokenizer) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert sp.get_piece_size() == 120
    texts = TEXTS + CAPTIONS
    ids, mask = tokenizer(texts)
    for i, text in enumerate(texts):
        assert ids[i][mask[i].bool()].tolist() == [*sp.encode(text), 1], text


def test_padding_and_mask(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer(["jazz", "", "lofi hip hop beat with soft piano"])
    assert ids.dtype == mask.dtype == torch.long
    lengths = mask.sum(1).tolist()
    assert lengths[1] == 1 and ids[1, 0] == 1  # "" is just </s>
    assert ids.shape[1] == max(lengths) == lengths[2]
    for row, n in zip(ids, lengths, strict=True):
        assert row[n - 1] == 1  # </s> closes every text
        assert (row[n:] == 0).all()  # then right padding with <pad> = 0
    assert torch.equal(mask, (torch.arange(ids.shape[1]) < torch.tensor(lengths)[:, None]).long())


def test_ids_and_mask_match_transformers(folder: Path, tokenizer: TextTokenizer) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    assert type(reference).__name__.startswith("T5Tokenizer")
    assert (reference.pad_token_id, reference.eos_token_id) == (0, 1)
    ids, mask = tokenizer(TEXTS)
    want = reference(TEXTS, padding=True, return_tensors="pt")
    assert ids.tolist() == want.input_ids.tolist()
    assert mask.tolist() == want.attention_mask.tolist()


def test_unseen_words_are_not_all_unk(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer(["xylophone zebra"])
    kept = ids[0][mask[0].bool()]
    assert (
        kept == 2
    ).sum() == 0  # letters seen in training are pieces: unseen words split into them
    assert len(kept) > 4


@pytest.mark.parametrize("max_length", [1, 2, 5, 1000])
def test_max_length_matches_transformers_truncation(
    folder: Path, tokenizer: TextTokenizer, max_length: int
) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    ids, mask = tokenizer(TEXTS, max_length=max_length)
    want = reference(
        TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    assert ids.tolist() == want.input_ids.tolist()
    assert mask.tolist() == want.attention_mask.tolist()
    assert ids.shape[1] <= max_length


def test_max_length_is_per_call(tokenizer: TextTokenizer) -> None:
    full, _ = tokenizer(TEXTS[:1])
    short, _ = tokenizer(TEXTS[:1], max_length=3)
    assert short[0].tolist() == [*full[0, :2].tolist(), 1]
    assert torch.equal(tokenizer(TEXTS[:1])[0], full)  # no setting left behind


def test_bad_calls_raise(tokenizer: TextTokenizer) -> None:
    with pytest.raises(ValueError, match="at least one"):
        tokenizer([])
    with pytest.raises(ValueError, match="max_length"):
        tokenizer(["jazz"], max_length=0)


def test_legacy_metaspace_file_gives_same_ids(folder: Path, tmp_path: Path) -> None:
    # Hub tokenizer.json files written by older `tokenizers` spell Metaspace with
    # `add_prefix_space` instead of `prepend_scheme`/`split`.
    data = json.loads((folder / "tokenizer.json").read_text())
    legacy = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    data["pre_tokenizer"]["pretokenizers"][1] = legacy
    data["decoder"] = legacy
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    got = TextTokenizer.from_file(tmp_path / "tokenizer.json")(TEXTS)
    want = TextTokenizer.from_file(folder / "tokenizer.json")(TEXTS)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
