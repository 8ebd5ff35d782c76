"""tunesmith: text to music with MusicGen, in plain PyTorch.

    >>> from tunesmith import MusicGen
    >>> model = MusicGen.from_pretrained("facebook/musicgen-small")
    >>> wav = model.generate(["lofi beat with warm piano"], duration=8.0, seed=1)  # [B, C, N]

The names below are imported on first use, so `import tunesmith` (and `tunesmith --help`)
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MusicGen": "musicgen",
    "GenerationOptions": "options",
    "Section": "composition.section",
    "MusicGenConfig": "config",
    "LMConfig": "config",
    "T5Config": "config",
    "EncodecConfig": "config",
    "TunesmithError": "errors",
    "InvalidOptionError": "errors",
    "ModelNotFoundError": "errors",
    "CheckpointError": "errors",
    "AudioFileError": "errors",
    "FinishOptions": "finishing.options",
    "finish": "finishing.pipeline",
    "write_finished": "finishing.files",
    "hinted_prompt": "finishing.prompts",
}

if TYPE_CHECKING:
    from .composition.section import Section
    from .config import EncodecConfig, LMConfig, MusicGenConfig, T5Config
    from .errors import (
        AudioFileError,
        CheckpointError,
        InvalidOptionError,
        ModelNotFoundError,
        TunesmithError,
    )
    from .finishing.files import write_finished
    from .finishing.options import FinishOptions
    from .finishing.pipeline import finish
    from .finishing.prompts import hinted_prompt
    from .musicgen import MusicGen
    from .options import GenerationOptions


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")


__all__ = [
    "AudioFileError",
    "CheckpointError",
    "EncodecConfig",
    "FinishOptions",
    "GenerationOptions",
    "InvalidOptionError",
    "LMConfig",
    "ModelNotFoundError",
    "MusicGen",
    "MusicGenConfig",
    "Section",
    "T5Config",
    "TunesmithError",
    "__version__",
    "finish",
    "hinted_prompt",
    "write_finished",
]
