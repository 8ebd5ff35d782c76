"""The T5 tokenizer, read from the checkpoint's own `tokenizer.json` with `tokenizers`."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer


class TextTokenizer:
    """Texts -> (ids [B, S], mask [B, S]), right-padded to the longest, `</s>` appended."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int = 0) -> None:
        tokenizer.no_padding()  # we pad ourselves, to the longest text of each call
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        pad_id = tokenizer.token_to_id("<pad>")
        return cls(tokenizer, pad_id=0 if pad_id is None else pad_id)

    def __call__(
        self, texts: list[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(texts)
        rows = [e.ids if max_length is None else e.ids[:max_length] for e in encodings]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask
