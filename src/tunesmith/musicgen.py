"""`MusicGen`: the public entry point. Load once, then generate, encode and decode.

Generation settings are passed on every call (a frozen `GenerationOptions`, or its fields as
keywords), never stored on the model, so one loaded model can serve many callers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .audio.chroma import melody_chroma
from .checkpoints.adapters import AdapterPaths, AdapterScales, read_adapters
from .checkpoints.loading import (
    load_model,
    load_tokenizer,
    read_config,
    resolve_checkpoint,
)
from .checkpoints.tokenizer import TextTokenizer
from .composition.compose import PieceStream, piece_audio, piece_stream
from .composition.section import Section
from .config import MusicGenConfig
from .engine.devices import default_dtype, resolve_device
from .engine.memory import release_freed_memory
from .engine.prepare import build_step
from .engine.step import EagerStep, Step
from .errors import InvalidOptionError
from .generation.codec_chunks import StreamDecoder, decode_in_chunks
from .generation.delay import delays
from .generation.loop import TextCondition, iter_frames, plan_windows, steps_for
from .generation.progress import Progress
from .generation.prompts import Prompts, checked_codes, is_codes, prompt_list, prompt_waveform
from .generation.stream import TokenStream
from .models.melody import MusicGenMelodyModel
from .models.network import MusicGenModel
from .options import DEFAULT_MODEL, MAX_JOB_STEPS, GenerationOptions, check_quantize

Options = GenerationOptions | float | None  # options, or a duration in seconds
AudioPrompt = torch.Tensor | str | Path  # a waveform, codes (a long tensor) or a file
DECODE_CONTEXT = 50  # frames of codes on each side of a chunk decoded on its own (1 s)
STREAM_LOOKAHEAD = 10  # frames a streamed chunk waits for past its end


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
        step: Step | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config: MusicGenConfig = model.cfg
        # How the decoder's steps run (chosen once, at load time; see tunesmith.engine).
        self.step: Step = step if step is not None else EagerStep(model.decoder)
        # The LoRA adapters merged into the weights (path, scale, rank, layers), for reports.
        self.adapters: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quantize: str | None = None,
        text_encoder: str | os.PathLike[str] | None = None,
        compile: bool = False,
        adapter: AdapterPaths = None,
        adapter_scale: AdapterScales = None,
        engine: bool = True,
    ) -> MusicGen:
        """Load a checkpoint from a hub id (downloaded into the Hugging Face cache) or a folder.

        device: "auto"/None picks CUDA, then MPS, then CPU. dtype: the decoder's weights
        (default float32 on CPU, float16 on GPUs). quantize: "int8" stores the decoder's
        linear layers as int8 with per-row scales (about a quarter of the memory traffic).
        text_encoder: for audiocraft folders (`state_dict.bin`), the hub id or folder holding
        the T5 weights and tokenizer (default t5-base). compile: on CUDA, compile the
        fixed-shape step (on first use) and replay it as a CUDA graph (`engine.cuda_graphs`).
        adapter: a LoRA adapter folder in PEFT's format (from `tunesmith train`, or
        transformers + PEFT), or several; each is merged into the weights as they load,
        times `adapter_scale` (one for all, or one each; default 1), before any quantizing.
        engine=False leaves the decoder's modules as the checkpoint has them (no fused or
        packed layers) and runs its steps eagerly: what training needs.
        On an x86-64 CPU decoder steps already run as one C++ call each (`engine.cpu_step`)
        and nothing is compiled; where our CPU kernels cannot be built (no AVX2 or no compiler), steps
        run through torch.compile instead, compiled here (~50 s the first time).
        """
        check_quantize(quantize)
        dev = resolve_device(device)
        folder = resolve_checkpoint(name_or_path)
        config = read_config(folder, text_encoder)
        tokenizer = load_tokenizer(folder, text_encoder)
        adapters = read_adapters(adapter, adapter_scale)
        model = load_model(
            folder, config, dev, dtype or default_dtype(dev), quantize, text_encoder, adapters
        )
        step = build_step(model.decoder, compile=compile) if engine else None
        loaded = cls(model, tokenizer, name=str(name_or_path), step=step)
        loaded.adapters = tuple(a.describe() for a in adapters)
        return loaded

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

    def generate(self, prompts: Prompts, options: Options = None, **kwargs: Any) -> torch.Tensor:
        """Text (and optionally an audio prompt) to audio [B, C, N] float32 at `sample_rate`.

        Arguments are those of `generate_tokens`. Past the 30 s window the piece is continued
        window by window, and the whole code sequence is decoded at once (in overlapping
        chunks), so there is no seam.
        """
        return self.decode(self.generate_tokens(prompts, options, **kwargs))

    def generate_tokens(
        self,
        prompts: Prompts,
        options: Options = None,
        *,
        prompt_in_output: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Codes [B, K, T] for `duration` seconds of new music (T = duration * frame_rate).

        prompts: a string or a list; "" or None is unconditional. options: a
        `GenerationOptions`, or the duration in seconds; its fields may also be given (or
        overridden) as keywords: duration=8.0, top_k=250 (1 is greedy), top_p=0.0,
        temperature=1.0, cfg_scale=3.0, seed=None (makes the call reproducible on one
        machine), stride=18.0 (seconds each window past the first adds: long form).
        audio_prompt: a waveform ([N], [C, N] or [B, C, N] at `audio_prompt_rate`, default
        `sample_rate`), an audio file, or codes (a long tensor [B, K, P], as `encode` or
        `generate_tokens` return them), continued by the model; its codes lead the output
        unless prompt_in_output is False. melody (melody checkpoints only): a waveform at
        `melody_rate` or an audio file whose chroma conditions the music with the text.
        progress: True for a progress bar on stderr, or a callback (steps done, in all).
        """
        with self.token_stream(prompts, options, **kwargs) as blocks:
            new = torch.cat(list(blocks), dim=2)
        if blocks.prompt is not None and prompt_in_output:
            return torch.cat([blocks.prompt, new], dim=2)
        return new

    def token_stream(
        self,
        prompts: Prompts,
        options: Options = None,
        *,
        audio_prompt: AudioPrompt | None = None,
        audio_prompt_rate: int | None = None,
        melody: AudioPrompt | None = None,
        melody_rate: int | None = None,
        progress: Progress = False,
        **settings: Any,
    ) -> TokenStream:
        """Like `generate_tokens`, but an iterator of newly made code blocks [B, K, n] (n >= 0),
        in order, one per decoder step: stop early and keep what exists. Use it as a context
        manager (`with model.token_stream(...) as blocks:`) so a progress bar closes cleanly.
        The audio prompt's codes are in `.prompt` (not yielded). Everything is validated, and
        the text and audio prompt encoded, before the first step."""
        opts = GenerationOptions.of(options, **settings)
        if opts.stride > self.max_duration:
            raise InvalidOptionError(
                f"stride {opts.stride:g}s is longer than the {self.max_duration:g}s window"
            )
        texts = prompt_list(prompts)
        chroma = None
        if melody is not None:
            if self.config.melody is None:
                raise InvalidOptionError(
                    f"a melody needs a melody checkpoint; {self.name} is conditioned on text only"
                )
            chroma = melody_chroma(melody, melody_rate, len(texts), self.sample_rate)
        prompt = None
        if audio_prompt is not None:
            prompt = self._prompt_codes(audio_prompt, audio_prompt_rate, len(texts))
        text = self.condition(texts, chroma)
        window = self.frames_for(self.max_duration)
        stride_frames = min(window, self.frames_for(opts.stride))
        new = self.frames_for(opts.duration)
        plan = plan_windows(0 if prompt is None else prompt.shape[-1], new, window, stride_frames)
        lm = self.model.decoder.cfg
        steps = steps_for(plan, max(delays(lm.num_codebooks, lm.audio_channels)))
        if steps > MAX_JOB_STEPS:
            raise InvalidOptionError(
                f"this piece would take {steps} decoder steps; a call may take at most "
                f"{MAX_JOB_STEPS}: shorten it or raise the stride"
            )
        blocks = iter_frames(
            self.step, text, new, opts, window=window, stride=stride_frames, prompt=prompt
        )
        return TokenStream(blocks, prompt, progress, steps)

    def stream(
        self,
        prompts: Prompts,
        options: Options = None,
        chunk_seconds: float = 1.0,
        *,
        prompt_in_output: bool = True,
        **kwargs: Any,
    ) -> Iterator[torch.Tensor]:
        """Yield audio [B, C, n] float32 as soon as each `chunk_seconds` of it can be decoded.

        Arguments are those of `generate_tokens`. Joined, the chunks equal `generate(...)`
        with the same seed to within the codec's chunking error (tests hold it above 40 dB
        SNR). With an audio prompt and prompt_in_output (the default), the prompt's audio
        comes first.
        """
        decoder = self._stream_decoder(chunk_seconds)
        with self.token_stream(prompts, options, **kwargs) as blocks:
            if blocks.prompt is not None and prompt_in_output:
                yield from decoder.push(blocks.prompt)
            elif blocks.prompt is not None:
                decoder.skip(blocks.prompt)
            for block in blocks:
                yield from decoder.push(block)
        tail = decoder.finish()
        if tail is not None:
            yield tail

    def _stream_decoder(self, chunk_seconds: float) -> StreamDecoder:
        if not (isinstance(chunk_seconds, (int, float)) and 0 < chunk_seconds <= 60):
            raise InvalidOptionError(f"chunk_seconds must be in (0, 60], got {chunk_seconds!r}")
        return StreamDecoder(
            self.decode, self.config.audio_encoder.hop_length, chunk=self.frames_for(chunk_seconds),
            lookahead=STREAM_LOOKAHEAD, context=DECODE_CONTEXT,
        )  # fmt: skip

    def _prompt_codes(self, audio: AudioPrompt, rate: int | None, batch: int) -> torch.Tensor:
        """An audio prompt -> codes [B, K, P], refused if it does not leave room in the window."""
        if is_codes(audio):
            assert isinstance(audio, torch.Tensor)
            return checked_codes(
                audio.to(self.device), codebooks=self.num_codebooks, batch=batch,
                vocab=self.config.decoder.vocab_size, window=self.frames_for(self.max_duration),
            )  # fmt: skip
        wav = prompt_waveform(
            audio, rate, sample_rate=self.sample_rate, channels=self.audio_channels
        )
        if wav.shape[0] not in (1, batch):
            raise InvalidOptionError(f"audio_prompt has {wav.shape[0]} rows for {batch} prompts")
        seconds = wav.shape[-1] / self.sample_rate
        if seconds >= self.max_duration or wav.shape[-1] < self.config.audio_encoder.hop_length:
            raise InvalidOptionError(
                f"audio prompt is {seconds:.2f}s: it must be at least one frame and shorter than "
                f"the model's {self.max_duration:g}s window"
            )
        codes = self.encode(wav)
        return codes.expand(batch, -1, -1) if codes.shape[0] != batch else codes

    # --- composition: a piece of sections (tunesmith.composition) -------------------------

    def compose(
        self, sections: Sequence[Section], options: Options = None, **kwargs: Any
    ) -> torch.Tensor:
        """A piece made of `sections` (`Section(text, seconds, ...)`, in order) as audio
        [1, C, N] float32: one continuous code sequence, decoded at once as long form is.
        Arguments are those of `compose_tokens`."""
        return self.decode(self.compose_tokens(sections, options, **kwargs))

    def compose_tokens(
        self, sections: Sequence[Section], options: Options = None, **kwargs: Any
    ) -> torch.Tensor:
        """Codes [1, K, T] of a piece: each section's first window is prompted with the last
        `context` seconds made and its own text (with greedy decoding, the codes of
        `generate_tokens(text, audio_prompt=<those codes>, prompt_in_output=False)`); its
        `transition` blends the previous text in. options (or keywords): the piece's seed,
        top_k, top_p, temperature, cfg_scale and stride, which sections may override; its
        duration is the sections'. progress: as `generate_tokens`, naming the section."""
        with self.compose_token_stream(sections, options, **kwargs) as blocks:
            return torch.cat(list(blocks), dim=2)

    def compose_token_stream(
        self,
        sections: Sequence[Section],
        options: Options = None,
        *,
        progress: Progress = False,
        **settings: Any,
    ) -> PieceStream:
        """Like `token_stream`, for a piece (`compose_tokens`); `.section` is the section
        being made. Everything is checked before the first step."""
        return piece_stream(self, sections, options, progress, **settings)

    def compose_stream(
        self,
        sections: Sequence[Section],
        options: Options = None,
        chunk_seconds: float = 1.0,
        **kwargs: Any,
    ) -> Iterator[torch.Tensor]:
        """Audio [1, C, n] of a piece as soon as each `chunk_seconds` can be decoded (as
        `stream`); arguments as `compose_tokens`."""
        decoder = self._stream_decoder(chunk_seconds)
        yield from piece_audio(self.compose_token_stream(sections, options, **kwargs), decoder)

    def frames_for(self, duration: float) -> int:
        return max(1, round(duration * self.frame_rate))

    @torch.inference_mode()
    def condition(
        self, texts: list[str | None], chroma: torch.Tensor | None = None
    ) -> TextCondition:
        """Encode prompts once; None or "" rows become the unconditional (all-zero) state.
        Melody checkpoints prepend `chroma` [B, T, 12] (default: the null melody)."""
        ids, mask = self.tokenizer([t or "" for t in texts])
        ids, mask = ids.to(self.device), mask.to(self.device)
        unconditional = torch.tensor([not t for t in texts], device=self.device)
        mask = mask.masked_fill(unconditional[:, None], 0)
        if isinstance(self.model, MusicGenMelodyModel):
            states = self.model.encode_text(ids, mask, chroma=chroma)
        else:
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
        hop = self.config.audio_encoder.hop_length
        window = self.frames_for(self.max_duration)
        wav = decode_in_chunks(
            self._decode_window, codes, hop, chunk=window, context=DECODE_CONTEXT
        )
        release_freed_memory()  # the decode's transients, before the next generation's cache
        return wav

    @torch.inference_mode()
    def _decode_window(self, codes: torch.Tensor) -> torch.Tensor:
        """One plain codec decode; stereo checkpoints interleave left and right codebooks."""
        codec = self.model.audio_encoder
        if self.audio_channels == 1:
            return codec.decode(codes).float()
        streams = [
            codec.decode(codes[:, c :: self.audio_channels]) for c in range(self.audio_channels)
        ]
        return torch.cat(streams, dim=1).float()

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
