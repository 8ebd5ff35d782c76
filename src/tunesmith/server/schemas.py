"""The JSON the API reads and writes, as pydantic models (they also make the OpenAPI docs).

Requests are strict: unknown fields, strings for numbers, booleans for integers, NaN and
infinities are all refused with a 422 naming the field, before a job is queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..options import (
    AUDIO_FORMATS,
    BOUNDS,
    DEFAULTS,
    NORMALIZE_MODES,
    WAV_SUBTYPES,
    GenerationOptions,
)

Status = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
if TYPE_CHECKING:
    AudioFormat = str
    NormalizeMode = str
    WavSubtype = str
else:  # the one list of each, as the Literal pydantic validates and documents
    AudioFormat = Literal[AUDIO_FORMATS]
    NormalizeMode = Literal[NORMALIZE_MODES]
    WavSubtype = Literal[WAV_SUBTYPES]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled", "interrupted"})
MAX_PROMPT_CHARS = 1000
UPLOAD_ID = r"^[0-9a-f]{32}$"


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 612.0 an integer: take it as 612. Strings and booleans stay
    refused (the strict check after this one)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _bounded(name: str, **field: Any) -> Any:
    """A Field holding the setting's range from `options.BOUNDS`, where it is defined once
    (GenerationOptions, hence the CLI, checks the same range)."""
    return Field(**field, **BOUNDS[name].as_field())


class GenerationRequest(BaseModel):
    """What to make. Defaults follow audiocraft's MusicGen (and the `tunesmith` CLI)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [{"prompt": "warm lofi beat with soft piano", "duration": 8.0}]
        },
    )

    prompt: str = Field(
        default="",
        max_length=MAX_PROMPT_CHARS,
        description='Text describing the music; "" makes unconditional music.',
    )
    duration: float = _bounded(
        "duration",
        default=DEFAULTS.duration,
        description="Seconds of new music; past the model's 30 s window the piece is continued "
        "window by window (long form, see `stride`).",
    )
    top_k: int = _bounded(
        "top_k",
        default=DEFAULTS.top_k,
        description="Sample from the k likeliest (0 = off).",
    )
    top_p: float = _bounded(
        "top_p",
        default=DEFAULTS.top_p,
        description="Nucleus sampling mass (0 = off).",
    )
    temperature: float = _bounded(
        "temperature",
        default=DEFAULTS.temperature,
        description="Softmax temperature.",
    )
    cfg_scale: float = _bounded(
        "cfg_scale",
        default=DEFAULTS.cfg_scale,
        description="Classifier-free guidance (1 = none, 0 = unconditional).",
    )
    seed: int | None = _bounded(
        "seed",
        default=None,
        description="Makes the result reproducible; seeded jobs run alone.",
    )
    format: AudioFormat = Field(
        default=AUDIO_FORMATS[0], description="Audio file format of the result."
    )
    stride: float = _bounded(
        "stride",
        default=DEFAULTS.stride,
        description="Long form: seconds each window past the first adds.",
    )
    audio_prompt: str | None = Field(
        default=None,
        pattern=UPLOAD_ID,
        description="An upload's id (POST /v1/uploads): the music continues it; the result "
        "starts with it. Shorter than the model's window.",
    )
    melody: str | None = Field(
        default=None,
        pattern=UPLOAD_ID,
        description="Melody checkpoints: an upload's id whose chroma conditions the music.",
    )

    # Output settings: how the file is written, as the CLI writes it (server/output.py maps
    # them to the writer's keywords). Jobs that differ only here still share a batch.
    normalize: NormalizeMode = Field(
        default=NORMALIZE_MODES[0],
        description="Level of the file: loudness (-14 LUFS, as the CLI), peak (-1 dBFS), "
        "rms (-18 dBFS) or none. The live /stream is the model's own level.",
    )
    wav_subtype: WavSubtype | None = Field(
        default=None,
        description="WAV samples (default PCM_16); other formats ignore it, as the CLI does.",
    )

    _whole_numbers = field_validator("top_k", "seed", mode="before")(
        classmethod(lambda cls, value: _whole_number(value))
    )

    def options(self) -> GenerationOptions:
        """The request's settings as the engine takes them (validated by the schema already,
        and once more here, as every GenerationOptions is)."""
        return GenerationOptions(
            duration=self.duration, top_k=self.top_k, top_p=self.top_p,
            temperature=self.temperature, cfg_scale=self.cfg_scale, seed=self.seed,
            stride=self.stride,
        )  # fmt: skip

    def batch_key(self) -> tuple[float, ...] | None:
        """Jobs with equal keys can share one forward batch; seeded jobs and jobs with an
        uploaded audio prompt or melody (None) never do."""
        if self.seed is not None or self.audio_prompt is not None or self.melody is not None:
            return None
        return (
            self.duration,
            self.top_k,
            self.top_p,
            self.temperature,
            self.cfg_scale,
            self.stride,
        )


class Progress(BaseModel):
    """How far the job is: decoder steps done of all its steps (0 of 0 before it starts), the
    same as seconds of new music, and the time left at the pace it runs."""

    steps_done: int
    steps_total: int
    seconds_done: float = Field(default=0.0, description="Seconds of new music made so far.")
    seconds_total: float = Field(default=0.0, description="Seconds of new music asked for.")
    seconds_left: float | None = Field(
        default=None, description="Estimated wall-clock seconds until it ends (running jobs)."
    )


class Timings(BaseModel):
    """When the job was created, started and finished (ISO 8601, UTC), and the spans."""

    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    wait_seconds: float | None = Field(default=None, description="Time spent queued.")
    run_seconds: float | None = Field(
        default=None, description="Time spent generating and writing."
    )


class Generation(BaseModel):
    """A job: its settings, where it stands, and (once done) where its audio is."""

    id: str
    status: Status
    progress: Progress
    parameters: GenerationRequest
    timings: Timings
    batch_size: int | None = Field(
        default=None, description="How many jobs shared its forward batch."
    )
    error: str | None = None
    audio_url: str | None = None
    stream_url: str
    audio_seconds: float | None = None
    media_type: str


class GenerationList(BaseModel):
    """A page of jobs, newest first."""

    items: list[Generation]
    total: int
    limit: int
    offset: int


class Peaks(BaseModel):
    """Peak levels (0..1) of the audio in equal slices, for drawing a waveform picture."""

    id: str
    peaks: list[float]


class QueueState(BaseModel):
    queued: int
    running: int
    max_queue: int
    max_batch: int


class AdapterInfo(BaseModel):
    """A LoRA adapter merged into the served model's weights."""

    name: str  # the adapter folder's name (not its path on the server)
    scale: float
    rank: int
    layers: int


class Health(BaseModel):
    """Liveness plus what a client needs to build a form: limits, formats, whether a key is due.
    On a server with API keys, everything but status, ready and auth_required needs a key
    (null without one)."""

    status: Literal["ok"]
    ready: bool = Field(description="Taking jobs now (see /readyz for why not).")
    auth_required: bool
    model: str | None = None
    sample_rate: int | None = None
    max_duration: float | None = Field(
        default=None, description="The longest duration a request may ask for."
    )
    window_seconds: float | None = Field(
        default=None, description="The model's window; longer pieces slide it."
    )
    min_stride: float | None = Field(
        default=None, description="The shortest stride a long piece may slide its window by."
    )
    max_steps: int | None = Field(
        default=None, description="The most decoder steps one job may take."
    )
    audio_channels: int | None = None
    melody: bool | None = Field(
        default=None, description="Whether `melody` (an uploaded melody) is taken."
    )
    formats: list[AudioFormat] | None = None
    adapters: list[AdapterInfo] | None = None
    queue: QueueState | None = None


class Upload(BaseModel):
    """An uploaded audio file, kept for `audio_prompt` or `melody`."""

    id: str
    seconds: float
    sample_rate: int
    channels: int


class ErrorBody(BaseModel):
    """Every error response: one readable message, plus per-field details for bad input."""

    detail: str
    errors: list[dict[str, object]] | None = None
