"""`MusicGen`: the public entry point. Load once, then generate, encode and decode.

Generation settings are passed on every call (a frozen `GenerationOptions` is built from the
keyword arguments), never stored on the model, so one loaded model can serve many callers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .config import MusicGenConfig
from .devices import default_dtype, resolve_device
from .errors import InvalidOptionError
from .generation import StepCallback, TextCondition, generate_codes
from .loading import DEFAULT_MODEL, load_model, load_tokenizer, read_config, resolve_checkpoint
from .models.musicgen import MusicGenModel
from .options import GenerationOptions
from .tokenizer import TextTokenizer

Prompts = str | None | Sequence[str | None]
Progress = bool | StepCallback


class MusicGen:
    """A loaded MusicGen checkpoint on one device.

    >>> model = MusicGen.from_pretrained("facebook/musicgen-small")
    >>> wav = model.generate("lofi beat with warm piano", duration=8.0, seed=1)  # [1, 1, 256000]
    """

    def __init__(
        self,
        model: MusicGenModel,
        tokenizer: TextTokenizer,
        name: str = "musicgen",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config: MusicGenConfig = model.cfg

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> MusicGen:
        """Load a checkpoint from a hub id (downloaded into the Hugging Face cache) or a folder.

        device: "auto"/None picks CUDA, then MPS, then CPU. dtype: the decoder's weights
        (default float32 on CPU, float16 on GPUs).
        """
        dev = resolve_device(device)
        folder = resolve_checkpoint(name_or_path)
        config = read_config(folder)
        tokenizer = load_tokenizer(folder)
        model = load_model(folder, config, dev, dtype or default_dtype(dev))
        return cls(model, tokenizer, name=str(name_or_path))

    # --- facts about the checkpoint -------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.decoder.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.config.audio_encoder.sampling_rate

    @property
    def frame_rate(self) -> int:
        return self.config.audio_encoder.frame_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.decoder.num_codebooks

    @property
    def audio_channels(self) -> int:
        return self.config.decoder.audio_channels

    @property
    def max_duration(self) -> float:
        return self.config.max_duration

    # --- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompts: Prompts,
        duration: float = 8.0,
        *,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        cfg_scale: float = 3.0,
        seed: int | None = None,
        progress: Progress = False,
    ) -> torch.Tensor:
        """Text to audio: [B, C, N] float32 at `sample_rate`; "" or None is unconditional."""
        codes = self.generate_tokens(
            prompts,
            duration,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            cfg_scale=cfg_scale,
            seed=seed,
            progress=progress,
        )
        return self.decode(codes)

    def generate_tokens(
        self,
        prompts: Prompts,
        duration: float = 8.0,
        *,
        top_k: int = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        cfg_scale: float = 3.0,
        seed: int | None = None,
        progress: Progress = False,
    ) -> torch.Tensor:
        """Text to codes [B, K, T] with T = round(duration * frame_rate)."""
        options = GenerationOptions(
            duration=duration,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            cfg_scale=cfg_scale,
            seed=seed,
        )
        options.validate(max_duration=self.max_duration)
        texts = _as_prompt_list(prompts)
        frames = self.frames_for(options.duration)
        text = self.condition(texts)
        with _progress_callback(progress, "generating") as on_step:
            return generate_codes(self.model.decoder, text, frames, options, on_step=on_step)

    def frames_for(self, duration: float) -> int:
        return max(1, round(duration * self.frame_rate))

    @torch.inference_mode()
    def condition(self, texts: list[str | None]) -> TextCondition:
        """Encode prompts once; None or "" rows become the unconditional (all-zero) state."""
        ids, mask = self.tokenizer([t or "" for t in texts])
        ids, mask = ids.to(self.device), mask.to(self.device)
        unconditional = torch.tensor([not t for t in texts], device=self.device)
        mask = mask.masked_fill(unconditional[:, None], 0)
        states = self.model.encode_text(ids, mask)
        return TextCondition(states=states, mask=mask)

    # --- the codec --------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] -> waveform [B, C, T * hop] float32; stereo streams are interleaved."""
        codes = codes.to(self.device)
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise InvalidOptionError(
                f"codes must be [batch, {self.num_codebooks}, frames], got {tuple(codes.shape)}"
            )
        codec = self.model.audio_encoder
        if self.audio_channels == 1:
            return codec.decode(codes).float()
        channels = [
            codec.decode(codes[:, c :: self.audio_channels]) for c in range(self.audio_channels)
        ]
        return torch.cat(channels, dim=1).float()

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform [B, C, N] (or [C, N], [N]) at `sample_rate` -> codes [B, K, T]."""
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[None]
        if wav.shape[1] != self.audio_channels:
            raise InvalidOptionError(
                f"expected {self.audio_channels}-channel audio at {self.sample_rate} Hz, "
                f"got {wav.shape[1]} channels"
            )
        wav = wav.to(self.device, torch.float32)
        codec = self.model.audio_encoder
        per_channel = self.num_codebooks // self.audio_channels
        if self.audio_channels == 1:
            return codec.encode(wav, per_channel)
        streams = [codec.encode(wav[:, c : c + 1], per_channel) for c in range(self.audio_channels)]
        return torch.stack(streams, dim=2).flatten(1, 2)  # interleave: L0 R0 L1 R1 ...


def _as_prompt_list(prompts: Prompts) -> list[str | None]:
    if prompts is None or isinstance(prompts, str):
        return [prompts]
    texts = list(prompts)
    if not texts:
        raise InvalidOptionError('give at least one prompt ("" or None for unconditional)')
    for t in texts:
        if t is not None and not isinstance(t, str):
            raise InvalidOptionError(f"prompts must be strings or None, got {type(t).__name__}")
    return texts


class _progress_callback:
    """Context manager turning `progress` (bool or callable) into a step callback."""

    def __init__(self, progress: Progress, description: str) -> None:
        self.progress = progress
        self.description = description
        self.bar: Any = None

    def __enter__(self) -> StepCallback | None:
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        def update(done: int, total: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.description, unit="step")
            self.bar.update(done - self.bar.n)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
