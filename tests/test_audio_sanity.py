"""Audio sanity, per file, before it joins a corpus: absurd amplitudes, WAV data chunks shorter
than their header says, sample rates below the floor, dangling links. Each bad file is made by a
real tool (soundfile, sox) or by writing the RIFF bytes, refused with its name, or skipped under
``skip_bad_files`` and listed."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pyro_zforcing.data import DataError, load_dataset
from pyro_zforcing.data.audio_io import MAX_AMPLITUDE, MIN_SAMPLE_RATE, read_audio
from test_data_builders import config, speech_signal

needs_sox = pytest.mark.skipif(shutil.which("sox") is None and os.environ.get("CI") != "true",
                               reason="sox is not installed (apt-get install sox; CI installs it and never skips)")


def _good_folder(root: Path, count: int = 6) -> Path:
    """``count`` real 16 kHz PCM files of speech-like signal."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        soundfile.write(str(root / f"utt{i}.wav"), speech_signal(rng, 4000 + 200 * i), 16000, subtype="PCM_16")
    return root


def _load(root: Path, tmp_path: Path, **kwargs):
    return load_dataset(config("audio", root, tmp_path, options={"valid_fraction": 0.0, "test_fraction": 0.0},
                               **kwargs))


def _refused_then_skipped(root: Path, bad: Path, tmp_path: Path, caplog, pattern: str):
    """The folder with ``bad`` is refused naming it; skipped, the corpus equals the folder without it."""
    with pytest.raises(DataError, match=rf"^{bad}: {pattern}"):
        _load(root, tmp_path)
    with caplog.at_level(logging.WARNING):
        splits = _load(root, tmp_path, skip_bad_files=True)
    assert [s.split(":")[0] for s in splits.skipped] == [str(bad)]
    assert "skipped 1 bad file" in caplog.text and str(bad) in caplog.text
    aside = tmp_path / "aside"
    aside.mkdir(exist_ok=True)
    os.rename(bad, aside / bad.name) if bad.exists() or bad.is_symlink() else None
    clean = _load(root, tmp_path / "clean")
    assert (splits.info.mean, splits.info.std) == (clean.info.mean, clean.info.std)
    assert sum(len(s) for s in splits.train) == sum(len(s) for s in clean.train)
    return splits


# ----------------------------------------------------------------------------- amplitudes

@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize("peak", [1e30, 32767.0, 1.01 * MAX_AMPLITUDE])
def test_float_files_beyond_the_amplitude_ceiling_are_refused_or_skipped(tmp_path, caplog, subtype, peak):
    root = _good_folder(tmp_path / "a")
    bad = root / "loud.wav"
    signal = np.sin(np.linspace(0, 200, 4000)) * peak
    soundfile.write(str(bad), signal, 16000, subtype=subtype)
    splits = _refused_then_skipped(root, bad, tmp_path, caplog, r"peak amplitude .* times full scale, above the 16")
    assert splits.info.std < 1  # full-scale units: the one file did not set the normalisation


def test_float_files_a_little_over_full_scale_are_kept(tmp_path):
    root = _good_folder(tmp_path / "a")
    over = root / "over.wav"
    soundfile.write(str(over), np.sin(np.linspace(0, 200, 4000)) * 0.9 * MAX_AMPLITUDE, 16000, subtype="FLOAT")
    assert np.max(np.abs(read_audio(over, sample_rate=16000))) == pytest.approx(0.9 * MAX_AMPLITUDE, rel=1e-6)
    assert _load(root, tmp_path).info.extra["files"]["train"] == 7


# ----------------------------------------------------------------------------- truncated WAV data

def _riff(chunks, *, riff_size=None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _chunk(name: bytes, payload: bytes, *, declared=None) -> bytes:
    size = len(payload) if declared is None else declared
    return name + struct.pack("<I", size) + payload + (b"\0" if len(payload) % 2 else b"")


FMT_16K_MONO_PCM16 = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)


@pytest.mark.parametrize("kept", [1 / 3, 0.99, 0.0])
def test_a_wav_cut_short_by_any_amount_is_refused_or_skipped(tmp_path, caplog, kept):
    root = _good_folder(tmp_path / "a")
    bad = root / "cut.wav"
    soundfile.write(str(bad), speech_signal(np.random.default_rng(1), 6000), 16000, subtype="PCM_16")
    whole = bad.read_bytes()
    data_at = whole.index(b"data") + 8
    bad.write_bytes(whole[: data_at + int(kept * (len(whole) - data_at)) // 2 * 2])
    _refused_then_skipped(root, bad, tmp_path, caplog, r"truncated WAV file: its data chunk declares 12000 bytes")


def test_hand_written_riff_headers_are_walked_chunk_by_chunk(tmp_path):
    samples = speech_signal(np.random.default_rng(2), 3000)
    pcm = samples.astype("<i2").tobytes()
    odd_list = _chunk(b"LIST", b"INFOICMT\x03\0\0\0ab\0")  # an odd-sized chunk, padded, before the data
    whole = tmp_path / "whole.wav"
    whole.write_bytes(_riff([_chunk(b"fmt ", FMT_16K_MONO_PCM16), odd_list, _chunk(b"data", pcm)]))
    assert np.array_equal(np.round(read_audio(whole, sample_rate=16000) * 32768), samples)
    short = tmp_path / "short.wav"  # the header promises three times the samples the file holds
    short.write_bytes(_riff([_chunk(b"fmt ", FMT_16K_MONO_PCM16), odd_list, _chunk(b"data", pcm, declared=3 * len(pcm))]))
    with pytest.raises(DataError, match=rf"^{short}: truncated WAV file: its data chunk declares {3 * len(pcm)} "
                                        rf"bytes but the file holds {len(pcm)}$"):
        read_audio(short, sample_rate=16000)


@needs_sox
def test_a_wav_streamed_by_sox_with_an_unknown_length_is_read_whole(tmp_path):
    """sox writing to a pipe cannot seek back: its header says 0x7FFFF000 bytes of data."""
    piped = tmp_path / "piped.wav"
    piped.write_bytes(subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-t", "wav", "-", "synth", "0.5",
                                      "sine", "300"], stdout=subprocess.PIPE, check=True,
                                     stderr=subprocess.DEVNULL).stdout)
    assert struct.unpack("<I", piped.read_bytes()[40:44])[0] == 0x7FFFF000
    assert len(read_audio(piped, sample_rate=16000)) == 8000


# ----------------------------------------------------------------------------- sample rates

@needs_sox
@pytest.mark.parametrize("rate", [1, 100, MIN_SAMPLE_RATE - 1])
def test_rates_below_the_floor_are_never_resampled(tmp_path, caplog, rate):
    root = _good_folder(tmp_path / "a")
    bad = root / "slow.wav"
    soundfile.write(str(tmp_path / "src.wav"), speech_signal(np.random.default_rng(3), 8000), 16000, subtype="PCM_16")
    # sox relabels the rate (-r on the output with no rate effect keeps every sample)
    subprocess.run(["sox", "-r", str(rate), str(tmp_path / "src.wav"), str(bad)], check=True, stderr=subprocess.DEVNULL)
    assert soundfile.info(str(bad)).samplerate == rate
    _refused_then_skipped(root, bad, tmp_path, caplog,
                          rf"sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz, the lowest rate resampled to 16000 Hz")


@needs_sox
def test_rates_at_the_floor_are_resampled_and_a_low_rate_corpus_is_read_at_its_own_rate(tmp_path):
    root = _good_folder(tmp_path / "a")
    src = tmp_path / "src.wav"
    soundfile.write(str(src), speech_signal(np.random.default_rng(4), 8000), 16000, subtype="PCM_16")
    subprocess.run(["sox", "-r", str(MIN_SAMPLE_RATE), str(src), str(root / "floor.wav")], check=True,
                   stderr=subprocess.DEVNULL)
    assert len(read_audio(root / "floor.wav", sample_rate=16000)) == 4 * 8000
    low = tmp_path / "low"
    low.mkdir()
    for i in range(3):
        subprocess.run(["sox", "-r", "1000", str(src), str(low / f"u{i}.wav")], check=True, stderr=subprocess.DEVNULL)
    splits = load_dataset(config("audio", low, tmp_path, options={"valid_fraction": 0.0, "test_fraction": 0.0,
                                                                  "sample_rate": 1000}))
    assert splits.info.sample_rate == 1000 and splits.info.extra["files"]["train"] == 3


# ----------------------------------------------------------------------------- dangling links

def test_a_dangling_symlink_is_named_or_skipped_in_an_audio_folder(tmp_path, caplog):
    root = _good_folder(tmp_path / "a")
    link = root / "gone.wav"
    os.symlink(tmp_path / "deleted.wav", link)
    _refused_then_skipped(root, link, tmp_path, caplog, rf"dangling symbolic link to {tmp_path / 'deleted.wav'}")


def test_a_dangling_symlink_is_named_or_skipped_in_a_text_folder(tmp_path, caplog):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a.txt").write_text("one two three\nfour five six\n" * 20)
    link = root / "b.txt"
    os.symlink(tmp_path / "nowhere.txt", link)
    with pytest.raises(DataError, match=rf"^{link}: dangling symbolic link"):
        load_dataset(config("text", root, tmp_path))
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(config("text", root, tmp_path, skip_bad_files=True))
    assert [s.split(":")[0] for s in splits.skipped] == [str(link)] and str(link) in caplog.text
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 40
