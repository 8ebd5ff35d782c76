"""A real, small T5-style tokenizer for test checkpoints: sentencepiece unigram + tokenizer.json.

Needs `sentencepiece` (a test extra). The files match the hub layout: `spiece.model`,
`tokenizer.json` (what tunesmith reads) and the config files transformers reads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

CAPTIONS = [
    "lofi hip hop beat with soft piano and vinyl crackle",
    "epic orchestral music with strings and brass",
    "calm acoustic guitar melody by the fire",
    "fast jazz drums with walking bass and saxophone",
    "dreamy synth pads over a slow electronic beat",
    "80s synthwave with arpeggios and gated reverb drums",
    "ambient drone with distant bells and wind",
    "happy ukulele tune with hand claps",
    "heavy metal riff with double kick drums",
    "reggae groove with offbeat organ and bass",
    "classical piano sonata in a minor key",
    "funky disco bassline with strings and hi hats",
    "cinematic trailer music with huge drums",
    "a warm bossa nova with nylon guitar",
    "techno track with a driving kick and acid bass",
    "soft lullaby with music box and harp",
    "country song with banjo fiddle and slide guitar",
    "trap beat with rolling hi hats and deep 808",
    "celtic folk with flute and bodhran",
    "chill house music with a deep groove and warm chords",
]


def build_test_tokenizer(folder: Path, vocab_size: int = 120) -> None:
    """Train a unigram sentencepiece model on CAPTIONS and write the tokenizer files.

    ids: <pad> 0, </s> 1, <unk> 2 (T5's), no <s>; `tokenizer.json` appends `</s>`.
    """
    import sentencepiece as spm
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    folder = Path(folder)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="identity",  # no charsmap: tokenizer.json needs none either
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    # sentencepiece's default whitespace handling: trim, collapse runs of spaces.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": 0,
        "additional_special_tokens": [],
        "model_max_length": 512,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
