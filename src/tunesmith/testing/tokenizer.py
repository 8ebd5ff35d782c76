"""A real, small T5-style tokenizer for test checkpoints: sentencepiece unigram + tokenizer.json.

Needs `sentencepiece` (a test extra), imported only when a tokenizer is built. The files match
the hub layout: `spiece.model`, `tokenizer.json` (what tunesmith reads) and the config files
transformers reads. `tokenizer.json` has the same pipeline as t5-base's on the hub:
Precompiled (NFKC) normalizer, whitespace split + Metaspace, Unigram, `</s>` appended.
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


def _proto_field(buf: bytes, number: int) -> bytes:
    """The first length-delimited field `number` of a serialized protobuf message, or b"".

    Just enough of the wire format to read the normalizer's charsmap out of `spiece.model`
    without depending on `protobuf`.
    """

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            shift, i = shift + 7, i + 1
            if byte < 0x80:
                return value, i

    i = 0
    while i < len(buf):
        tag, i = varint(i)
        wire_type = tag & 7
        if wire_type == 0:
            _, i = varint(i)
        elif wire_type in (1, 5):
            i += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, i = varint(i)
            if tag >> 3 == number:
                return buf[i : i + size]
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
    return b""


def build_test_tokenizer(folder: Path, vocab_size: int = 120) -> None:
    """Train a unigram sentencepiece model on CAPTIONS and write the tokenizer files into
    `folder`: spiece.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json.

    ids: <pad> 0, </s> 1, <unk> 2 (T5's), no <s>; `vocab_size` pieces in all (120 by default:
    enough for every single character of CAPTIONS, so unseen words split into characters
    rather than becoming <unk>). `transformers.AutoTokenizer.from_pretrained(folder)` loads
    it as a T5 tokenizer with the same ids.
    """
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="nmt_nfkc",  # T5's rule (and sentencepiece's default)
        minloglevel=2,
    )
    model = buffer.getvalue()
    (folder / "spiece.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)

    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    # ModelProto field 3 is the normalizer spec; its field 2 the compiled NFKC charsmap.
    charsmap = _proto_field(_proto_field(model, 3), 2)
    tokenizer.normalizer = normalizers.Precompiled(charsmap)
    # sentencepiece trims and collapses spaces and prefixes "▁": WhitespaceSplit + Metaspace
    # do the same per word, as in t5-base's own tokenizer.json.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))

    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "T5Tokenizer",
        "extra_ids": 0,  # the hub's t5-base has 100 sentinels; MusicGen never uses them
        "additional_special_tokens": [],
        "model_max_length": 512,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
