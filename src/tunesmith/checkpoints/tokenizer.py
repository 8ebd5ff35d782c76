"""The T5 tokenizer, read from the checkpoint's own `tokenizer.json` with `tokenizers`.

The file carries the whole pipeline (normalizer, Metaspace pre-tokenizer, Unigram model and
the post-processor that appends `</s>`), so ids match transformers' T5 tokenizer without
sentencepiece or transformers at run time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Encoding, Tokenizer


class TextTokenizer:
    """Texts -> (ids [B, S], mask [B, S]), right-padded to the longest, `</s>` appended."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int = 0) -> None:
        """Wrap a `tokenizers.Tokenizer`; its own padding and truncation settings are ignored
        (we pad per call, to the longest text)."""
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Load a `tokenizer.json`; the pad id is that of `<pad>` (0 for T5)."""
        tokenizer = Tokenizer.from_file(str(path))
        pad_id = tokenizer.token_to_id("<pad>")
        if pad_id is None:
            padding = tokenizer.padding  # a file may name its pad token only here
            pad_id = padding["pad_id"] if padding else 0
        return cls(tokenizer, pad_id=pad_id)

    def __call__(
        self, texts: list[str], max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch. `max_length` caps each row at that many ids, `</s>` included (as
        transformers' `truncation=True` does); None keeps every token.

        Returns (input_ids [B, S] long, attention_mask [B, S] long), S the longest row.
        """
        if not texts:
            raise ValueError("TextTokenizer needs at least one text")
        if max_length is None:
            encodings = self.tokenizer.encode_batch(texts)
        else:
            raw = self.tokenizer.encode_batch(texts, add_special_tokens=False)
            encodings = [self._truncated(e, max_length) for e in raw]
        longest = max(len(e.ids) for e in encodings)
        ids = torch.full((len(texts), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), longest), dtype=torch.long)
        for i, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[i, :n] = torch.tensor(encoding.ids, dtype=torch.long)
            mask[i, :n] = 1
        return ids, mask

    def _truncated(self, encoding: Encoding, max_length: int) -> Encoding:
        # Truncate the text part, then let the file's post-processor add `</s>`: the tokenizer
        # object is never reconfigured, so concurrent calls with other limits cannot race.
        post = self.tokenizer.post_processor
        room = max_length - (post.num_special_tokens_to_add(False) if post is not None else 0)
        if room < 0:
            raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
        encoding.truncate(room)
        return post.process(encoding) if post is not None else encoding
