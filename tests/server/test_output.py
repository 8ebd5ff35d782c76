"""The service writes what the CLI writes: for the same prompt, seed and settings its file
holds the CLI's samples exactly (loudness normalization by default, and the request's
normalize, WAV subtype and format as the CLI's flags)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tunesmith.audio.loudness import measure_loudness
from tunesmith.cli.main import main
from tunesmith.server.output import OUTPUT_FIELDS, writer_options
from tunesmith.server.schemas import GenerationRequest

CASES = [
    ({}, []),  # the defaults: 16-bit WAV at -14 LUFS
    ({"format": "flac", "normalize": "peak"}, ["--normalize", "peak"]),
    ({"wav_subtype": "PCM_24", "normalize": "rms"}, ["--wav-subtype", "PCM_24", "--normalize", "rms"]),
    ({"wav_subtype": "FLOAT", "normalize": "none"}, ["--wav-subtype", "FLOAT", "--normalize", "none"]),
]  # fmt: skip


@pytest.mark.parametrize("fields,flags", CASES, ids=["default", "flac-peak", "pcm24-rms", "float"])
def test_the_service_file_is_the_cli_file(
    client, submit, wait_job, tiny_checkpoint, tmp_path, fields, flags
):
    """Was: the API's audio was ~9 dB quieter than the CLI's (-23.4 against -14.0 LUFS)."""
    fmt = fields.get("format", "wav")
    job = wait_job(client, submit(client, "bright brass fanfare", 1.0, seed=11, **fields))
    assert job["status"] == "done", job
    served = client.get(job["audio_url"]).content
    target = tmp_path / f"cli.{fmt}"
    code = main([
        "generate", "bright brass fanfare", "-o", str(target), "--model", str(tiny_checkpoint),
        "--device", "cpu", "--duration", "1.0", "--seed", "11", *flags,
    ])  # fmt: skip
    assert code == 0
    ours, theirs = sf.SoundFile(io.BytesIO(served)), sf.SoundFile(str(target))
    assert (ours.format, ours.subtype) == (theirs.format, theirs.subtype)
    assert ours.samplerate == theirs.samplerate and ours.frames == theirs.frames
    dtype = "float32" if ours.subtype == "FLOAT" else "int32"
    assert np.array_equal(ours.read(dtype=dtype), theirs.read(dtype=dtype))  # sample for sample
    assert ours.copy_metadata()["title"] == "bright brass fanfare"


def test_the_default_is_the_clis_loudness(client, submit, wait_job):
    job = wait_job(client, submit(client, "levelled", 2.0, seed=2))
    data, rate = sf.read(io.BytesIO(client.get(job["audio_url"]).content), dtype="float32")
    import torch

    assert measure_loudness(torch.from_numpy(data)[None], rate) == pytest.approx(-14.0, abs=0.5)
    assert job["parameters"]["normalize"] == "loudness"


def test_output_settings_reach_the_writer_through_one_map():
    request = GenerationRequest.model_validate({"wav_subtype": "PCM_24", "normalize": "peak"})
    assert writer_options(request) == {"normalize": "peak", "subtype": "PCM_24"}
    assert set(OUTPUT_FIELDS) <= set(GenerationRequest.model_fields)
    flac = GenerationRequest.model_validate({"format": "flac", "wav_subtype": "FLOAT"})
    assert writer_options(flac)["subtype"] is None  # WAV only, as the CLI's --wav-subtype


@pytest.mark.parametrize("fields", [{"normalize": "loud"}, {"wav_subtype": "PCM_8"}])
def test_bad_output_settings_are_422(client, fields):
    response = client.post("/v1/generations", json={"duration": 0.2, **fields})
    assert response.status_code == 422 and response.json()["detail"].startswith(next(iter(fields)))
