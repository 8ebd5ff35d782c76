"""Our tokenizer (the `tokenizers` library on tokenizer.json) gives the ids sentencepiece and
transformers give for the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.testing_tokenizer import build_test_tokenizer
from tunesmith.tokenizer import TextTokenizer

TEXTS = ["lofi hip hop beat with soft piano", "a zebra  plays the xylophone!", "", "jazz"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    build_test_tokenizer(path)
    return path


def test_ids_match_sentencepiece(folder: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    ids, mask = TextTokenizer.from_file(folder / "tokenizer.json")(TEXTS)
    for i, text in enumerate(TEXTS):
        assert ids[i][mask[i].bool()].tolist() == [*sp.encode(text), 1]
    assert (ids[mask == 0] == 0).all()  # right padding with <pad> = 0


def test_ids_and_mask_match_transformers(folder: Path) -> None:
    from transformers import AutoTokenizer

    ids, mask = TextTokenizer.from_file(folder / "tokenizer.json")(TEXTS)
    want = AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    assert ids.tolist() == want.input_ids.tolist()
    assert mask.tolist() == want.attention_mask.tolist()


def test_unknown_words_are_not_all_unk(folder: Path) -> None:
    ids, mask = TextTokenizer.from_file(folder / "tokenizer.json")(["xylophone zebra"])
    assert (ids[0][mask[0].bool()] != 2).sum() > 2


def test_max_length_truncates(folder: Path) -> None:
    ids, mask = TextTokenizer.from_file(folder / "tokenizer.json")(TEXTS, max_length=4)
    assert ids.shape == (4, 4)
    assert mask[2].tolist() == [1, 0, 0, 0]
