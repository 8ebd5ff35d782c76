"""The known MusicGen checkpoints: sizes, memory needs, licence, local cache status.

Sizes are computed from the presets in `config.py` (the tests hold the formulas to the
parameter counts of the modules themselves), so the table cannot drift from the code.
Nothing here needs the network: cache status is read from the local Hugging Face cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DECODER_PRESETS, EncodecConfig, LMConfig, T5Config

CC_BY_NC = "CC-BY-NC 4.0"
CC_BY_NC_URL = "https://creativecommons.org/licenses/by-nc/4.0/"
T5_REPO = "google-t5/t5-base"
ENCODEC_REPO = "facebook/encodec_32khz"  # what audiocraft's compression files may point to
KV_SECONDS = 30.0  # one full generation window


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint on the Hugging Face Hub."""

    name: str  # short name: "small", "stereo-large", ...
    repo_id: str
    decoder: LMConfig
    melody: bool = False  # chroma prepended to the decoder input, no cross-attention
    licence: str = CC_BY_NC

    @property
    def supported(self) -> bool:
        return True

    @property
    def status(self) -> str:
        if self.melody:
            return "hub layout; melody chroma from the full mix (no Demucs); not audiocraft files"
        return "hub layout and audiocraft files"

    @property
    def lm_params(self) -> int:
        return lm_parameters(self.decoder, cross_attention=not self.melody)

    @property
    def params(self) -> int:
        """Every weight in the hub file: T5, projections, decoder, EnCodec."""
        d = self.decoder.hidden_size
        t5 = T5Config()
        projections = t5.d_model * d + d
        if self.melody:
            projections += CHROMA_BINS * d + d  # chroma -> decoder width
        return t5_parameters(t5) + projections + self.lm_params + encodec_parameters()

    @property
    def download_bytes(self) -> int:
        """The fp32 safetensors the engine downloads (tokenizer and configs are negligible):
        the weights plus EnCodec's codebook training statistics, which the file also holds."""
        codec = EncodecConfig()
        stats = codec.num_quantizers * (codec.codebook_size * (codec.codebook_dim + 1) + 1)
        return 4 * (self.params + stats)

    def kv_cache_bytes(self, bytes_per_value: int) -> int:
        """Self-attention keys and values for one prompt with CFG (2 rows), one 30 s window."""
        cfg = self.decoder
        frames = int(KV_SECONDS * 50) + max(1, cfg.num_codebooks // cfg.audio_channels)
        return 2 * cfg.num_layers * 2 * frames * cfg.hidden_size * bytes_per_value

    @property
    def cpu_bytes(self) -> int:
        """Memory to run on CPU in float32: weights plus KV cache (activations are small)."""
        return 4 * self.params + self.kv_cache_bytes(4)

    @property
    def gpu_bytes(self) -> int:
        """GPU memory with a float16 decoder (T5 and EnCodec stay float32) plus KV cache."""
        rest = self.params - self.lm_params
        return 2 * self.lm_params + 4 * rest + self.kv_cache_bytes(2)


CHROMA_BINS = 12


def _entry(name: str) -> Checkpoint:
    return Checkpoint(
        name=name,
        repo_id=f"facebook/musicgen-{name}",
        decoder=DECODER_PRESETS[name],
        melody=name.startswith("melody"),
    )


CHECKPOINTS: list[Checkpoint] = [
    _entry(n)
    for n in (
        "small",
        "medium",
        "large",
        "stereo-small",
        "stereo-medium",
        "stereo-large",
        "melody",
        "melody-large",
    )
]
BY_REPO = {c.repo_id: c for c in CHECKPOINTS}


def find(name: str) -> Checkpoint | None:
    """The checkpoint called `name` ("small", "musicgen-small" or "facebook/musicgen-small")."""
    short = name.removeprefix("facebook/").removeprefix("musicgen-")
    return next((c for c in CHECKPOINTS if c.name == short), None)


def licence_notice(repo_id: str) -> str:
    """The line printed when a download of `repo_id` starts."""
    known = BY_REPO.get(repo_id)
    if known is not None:
        return (
            f"downloading {repo_id} (about {human_bytes(known.download_bytes)}): the weights are "
            f"licensed {known.licence} (non-commercial use only, {CC_BY_NC_URL})"
        )
    if repo_id == ENCODEC_REPO:
        return f"downloading {repo_id}: the weights are licensed {CC_BY_NC} ({CC_BY_NC_URL})"
    if repo_id in (T5_REPO, "t5-base"):
        return f"downloading {repo_id} (the T5 text encoder, Apache 2.0)"
    return f"downloading {repo_id}: check its model card for the licence of the weights"


# --- parameter counts -----------------------------------------------------------------------


def lm_parameters(cfg: LMConfig, cross_attention: bool = True) -> int:
    """Weights of the codebook decoder: embeddings, layers, final norm, heads."""
    d, f, k, v = cfg.hidden_size, cfg.ffn_dim, cfg.num_codebooks, cfg.vocab_size
    attention = 4 * d * d  # q, k, v, out; no biases
    norm = 2 * d  # LayerNorm weight and bias
    per_layer = attention + norm + 2 * d * f + norm
    if cross_attention:
        per_layer += attention + norm
    return k * (v + 1) * d + cfg.num_layers * per_layer + norm + k * v * d


def t5_parameters(cfg: T5Config) -> int:
    """T5 encoder: shared embedding, blocks, the one relative-position table, final norm."""
    d, inner = cfg.d_model, cfg.inner_dim
    block = 4 * d * inner + 2 * d * cfg.d_ff + 2 * d
    table = cfg.relative_attention_num_buckets * cfg.num_heads
    return cfg.vocab_size * d + cfg.num_layers * block + table + d


def encodec_parameters(cfg: EncodecConfig | None = None) -> int:
    """EnCodec: SEANet encoder and decoder (convs with bias, 2 LSTMs) and the codebooks."""
    cfg = cfg or EncodecConfig()
    ch, k = cfg.audio_channels, cfg.kernel_size

    def conv(cin: int, cout: int, kernel: int) -> int:
        return cin * cout * kernel + cout

    def resnet(dim: int) -> int:
        hidden = dim // cfg.compress
        short = conv(dim, dim, 1) if cfg.use_conv_shortcut else 0
        block = conv(dim, hidden, cfg.residual_kernel_size) + conv(hidden, dim, 1) + short
        return cfg.num_residual_layers * block

    def lstm(dim: int) -> int:
        return cfg.num_lstm_layers * (2 * 4 * dim * dim + 2 * 4 * dim)

    width, encoder = cfg.num_filters, conv(ch, cfg.num_filters, k)
    decoder = 0
    for ratio in reversed(cfg.upsampling_ratios):
        encoder += resnet(width) + conv(width, 2 * width, 2 * ratio)
        decoder += conv(2 * width, width, 2 * ratio) + resnet(width)  # the mirror stage
        width *= 2
    encoder += lstm(width) + conv(width, cfg.hidden_size, cfg.last_kernel_size)
    decoder += conv(cfg.hidden_size, width, k) + lstm(width)
    decoder += conv(cfg.num_filters, ch, cfg.last_kernel_size)
    codebooks = cfg.num_quantizers * cfg.codebook_size * cfg.codebook_dim
    return encoder + decoder + codebooks


def human_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def human_count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


# --- the local cache ------------------------------------------------------------------------


def cache_status(repo_id: str) -> str:
    """'yes' when config and every weight file are in the local Hugging Face cache,
    'partial' when only some are, 'no' otherwise. Never touches the network."""
    import json

    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> str | None:
        found = try_to_load_from_cache(repo_id, filename)
        return found if isinstance(found, str) else None

    config = cached("config.json")
    weights: list[str | None] = [cached("model.safetensors")]
    index = cached("model.safetensors.index.json")
    if weights[0] is None and index is not None:
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        weights = [cached(s) for s in shards]
    have = [config, *weights]
    if all(have):
        return "yes"
    return "partial" if any(have) or index is not None else "no"
