"""Errors a user can cause. Each message says what to do; the CLI prints it on one line."""


class TunesmithError(Exception):
    """Base class for every error tunesmith raises on bad input or environment."""


class InvalidOptionError(TunesmithError, ValueError):
    """A generation or load option is out of range or of the wrong kind."""


class SectionError(InvalidOptionError):
    """A section of a composed piece (1-based `number`) cannot be made as given; the message
    names it."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"section {number}: {reason}")
        self.number = number
        self.reason = reason


class ModelNotFoundError(TunesmithError):
    """A model name or path could not be resolved to checkpoint files."""


class CheckpointError(TunesmithError):
    """Checkpoint files exist but do not hold what a MusicGen model needs."""


class AudioFileError(TunesmithError):
    """An audio file could not be read or written."""


class TrainingDataError(TunesmithError, ValueError):
    """A fine-tuning data set or output folder cannot be used as given."""
