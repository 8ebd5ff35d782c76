"""Loop points inside files, read back by other readers: soundfile still reads the WAV, a
small RIFF parser here finds the smpl and acid chunks, mutagen reads FLAC/OGG tags."""

from __future__ import annotations

import struct
from pathlib import Path

import mutagen
import pytest
import soundfile as sf
import torch

from tunesmith.audio.files import write_audio
from tunesmith.audio.loop_chunks import write_loop_metadata
from tunesmith.errors import InvalidOptionError


def riff_chunks(path: Path) -> dict[bytes, bytes]:
    """Every chunk of a RIFF WAVE file by name (an independent reader of the format)."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8  # the RIFF size was fixed
    chunks, at = {}, 12
    while at + 8 <= len(data):
        name, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        chunks[name] = data[at + 8 : at + 8 + size]
        at += 8 + size + size % 2
    assert at == len(data)
    return chunks


def test_wav_loop_chunks_read_back(tmp_path: Path) -> None:
    path = tmp_path / "loop.wav"
    write_audio(path, torch.zeros(1, 1001), 32000, tags={"title": "a loop"})
    write_loop_metadata(path, 1001, 32000, 110.0, 16, root=69)
    info = sf.info(str(path))
    assert (info.frames, info.samplerate) == (1001, 32000)  # still a plain WAV to soundfile
    chunks = riff_chunks(path)
    smpl = struct.unpack("<9I6I", chunks[b"smpl"])
    assert smpl[2] == round(1e9 / 32000) and smpl[3] == 69 and smpl[7] == 1  # one loop
    assert smpl[9:13] == (0, 0, 0, 1000)  # id, forward, first and last sample
    flags, root, _, _, beats, denominator, numerator, tempo = struct.unpack(
        "<IHHfIHHf", chunks[b"acid"]
    )
    assert (beats, numerator, denominator, root) == (16, 4, 4, 69) and not flags & 1  # a loop
    assert tempo == pytest.approx(110.0)
    assert b"data" in chunks and b"LIST" in chunks  # the audio and the tags are still there


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_flac_and_ogg_loop_tags_read_back(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"loop{suffix}"
    write_audio(path, torch.zeros(1, 32000), 32000, tags={"title": "a loop"})
    write_loop_metadata(path, 32000, 32000, 96.0, 4)
    tags = mutagen.File(str(path))
    assert tags["LOOPSTART"] == ["0"] and tags["LOOPLENGTH"] == ["32000"] and tags["BPM"] == ["96"]
    assert sf.read(str(path))[0].shape[0] == 32000 and sf.SoundFile(str(path)).title == "a loop"


def test_mp3_gets_no_loop(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="not mp3"):
        write_loop_metadata(tmp_path / "x.mp3", 10, 32000, 100.0, 4)
