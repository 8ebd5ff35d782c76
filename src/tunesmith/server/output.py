"""A finished job's file, written as the CLI writes it: `jobs.batch.save_clip` with the
request's output settings (loudness normalization by default, the WAV subtype, the format)
and the same tags (prompt, model, settings).

OUTPUT_FIELDS is the one place that maps the request's output fields to the writer's
keywords: a new output setting is a field of `GenerationRequest` and a line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .schemas import GenerationRequest

# request field -> keyword of jobs.batch.save_clip
OUTPUT_FIELDS = {"normalize": "normalize", "wav_subtype": "subtype"}


def writer_options(params: GenerationRequest) -> dict[str, Any]:
    """The save_clip keywords a request's output fields give. The WAV subtype applies to WAV
    files only, as the CLI's --wav-subtype does."""
    options = {keyword: getattr(params, name) for name, keyword in OUTPUT_FIELDS.items()}
    if params.format != "wav":
        options["subtype"] = None
    return options


def write_result(
    path: Path, wav: torch.Tensor, sample_rate: int, params: GenerationRequest, model_name: str
) -> None:
    """Level, tag and write one job's audio [C, N] to `path` (its extension is the format)."""
    from ..jobs.batch import clip_tags, save_clip
    from ..jobs.prompts_file import options_record

    options = params.options()
    extra: dict[str, Any] = {}
    if params.audio_prompt is not None:
        extra["continue"] = f"upload {params.audio_prompt}"  # an id: never the server's path
    if params.melody is not None:
        extra["melody"] = f"upload {params.melody}"
    tags = clip_tags(
        params.prompt or None, model_name, options_record(options, options.seed), **extra
    )
    save_clip(path, wav, sample_rate, tags=tags, plot=False, **writer_options(params))


def needed_bytes(wav: torch.Tensor) -> int:
    """Room a file of `wav` [C, N] may take at most (32-bit samples), plus a margin."""
    return int(wav.shape[-2] * wav.shape[-1] * 4 + 64 * 1024)
