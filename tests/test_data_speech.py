"""TIMIT, Blizzard and audio-folder loaders on real files built by the formats' specs."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from pyro_zforcing.data import DataError, collate_sequences, load_dataset
from pyro_zforcing.data import speech
from test_data_builders import config, make_timit, speech_signal, sphere_bytes, write_sphere

ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def _identify(sequences, originals, mean, std, frame_size):
    """Map whole-utterance sequences back to the files they came from."""
    found = []
    for seq in sequences:
        raw = np.round((seq.reshape(-1) * std + mean) * 32768).astype(np.int64)
        match = [p for p, s in originals.items()
                 if len(s) // frame_size * frame_size == raw.size and np.array_equal(s[:raw.size], raw)]
        assert len(match) == 1
        found.append(match[0])
    return found


def test_timit_frames_normalisation_chunks_and_splits_match_hand_computation(tmp_path):
    originals = make_timit(tmp_path / "timit")
    frame, chunk = 100, 3
    splits = load_dataset(config("timit", tmp_path / "timit", tmp_path,
                                 options={"frame_size": frame, "chunk_frames": chunk,
                                          "valid_fraction": 0.25}))
    info = splits.info
    assert (info.emission, info.dim, info.unit, info.units_per_step, info.sample_rate) == (
        "gaussian", frame, "sample", frame, 16000)
    assert info.extra["sequence_unit"] == "utterance"
    # whole test utterances: every TEST file, once, all frames of it
    test_files = _identify(splits.test, originals, info.mean, info.std, frame)
    assert sorted(test_files) == sorted(p for p in originals if "TEST" in p.parts)
    valid_files = _identify(splits.valid, originals, info.mean, info.std, frame)
    valid_speakers = {p.parent for p in valid_files}
    assert len(valid_speakers) == 1 and len(valid_files) == 3  # 1 of 4 speakers, all 3 utterances
    train_files = [p for p in sorted(originals) if "TRAIN" in p.parts and p.parent not in valid_speakers]
    # normalisation: one scalar mean/std over every framed training sample
    framed = [originals[p][: len(originals[p]) // frame * frame] / 32768.0 for p in train_files]
    everything = np.concatenate(framed)
    assert info.mean == pytest.approx(everything.mean(), abs=1e-9)
    assert info.std == pytest.approx(everything.std(), rel=1e-9)
    # training chunks of 3 frames, remainders dropped, in file order
    expected = []
    for samples in framed:
        frames = ((samples - everything.mean()) / everything.std()).reshape(-1, frame)
        expected += [frames[i:i + chunk] for i in range(0, len(frames) - chunk + 1, chunk)]
    assert len(splits.train) == len(expected)
    for got, want in zip(splits.train, expected):
        assert got.dtype == np.float32 and got.shape == (chunk, frame)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_timit_lower_case_tree_and_sa_exclusion(tmp_path):
    make_timit(tmp_path / "data" / "timit", lower=True)  # lower-case names, an extra level
    splits = load_dataset(config("timit", tmp_path / "data", tmp_path,
                                 options={"include_sa": False, "chunk_frames": 2}))
    assert splits.info.extra["files"] == {"train": 6, "valid": 2, "test": 4}  # SA1 dropped


def test_timit_prefers_sphere_over_converted_wav_copies(tmp_path):
    originals = make_timit(tmp_path, train_speakers=3, test_speakers=1, utterances=("SX1",))
    for path, samples in originals.items():  # a redistribution's RIFF copy next to each file
        soundfile.write(str(path) + ".wav", np.zeros(4000, np.int16), 16000, subtype="PCM_16")
    splits = load_dataset(config("timit", tmp_path, tmp_path, options={"chunk_frames": 2}))
    assert splits.info.extra["files"] == {"train": 2, "valid": 1, "test": 1}
    assert all(np.abs(s).max() > 0 for s in splits.test)


def test_timit_missing_directory_names_ldc_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"LDC93S1.*TRAIN/DR1") as err:
        load_dataset(config("timit", tmp_path / "nowhere", tmp_path))
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="no --data-dir"):
        load_dataset(speech_config_without_dir())


def speech_config_without_dir():
    from pyro_zforcing.config import DataConfig
    return DataConfig(dataset="timit")


def test_timit_wrong_layout_names_path_and_expected_layout(tmp_path):
    (tmp_path / "TRAIN").mkdir()
    (tmp_path / "TEST" / "DR1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"TRAIN.*expected: TRAIN/DR1"):
        load_dataset(config("timit", tmp_path, tmp_path))


def test_unknown_option_names_key_and_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"frame_sise.*known: chunk_frames"):
        load_dataset(config("timit", tmp_path, tmp_path, options={"frame_sise": 3}))


@pytest.mark.parametrize("problem, pattern", [
    ("truncated", "truncated SPHERE"),
    ("width", "sample width 4 bytes"),
    ("stereo", "2 channels; expected mono"),
    ("shorten", "sph2pipe"),
    ("no_end_head", "no end_head"),
    ("empty", "unreadable audio|empty"),
    ("short", "shorter than one frame"),
])
def test_bad_timit_file_is_named_or_skipped_and_reported(tmp_path, caplog, problem, pattern):
    originals = make_timit(tmp_path / "c", train_speakers=3, test_speakers=1)
    bad = sorted(p for p in originals if "TRAIN" in p.parts)[0]
    samples = originals[bad]
    if problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:-10])
    elif problem == "width":
        bad.write_bytes(sphere_bytes(samples, sample_n_bytes=4))
    elif problem == "stereo":
        bad.write_bytes(sphere_bytes(np.repeat(samples, 2), channel_count=2))
    elif problem == "shorten":
        bad.write_bytes(sphere_bytes(samples, extra_fields="sample_coding -s26 pcm,embedded-shorten-v2.00"))
    elif problem == "no_end_head":
        bad.write_bytes(sphere_bytes(samples).replace(b"end_head", b"        "))
    elif problem == "empty":
        bad.write_bytes(b"")
    elif problem == "short":
        write_sphere(bad, samples[:150])
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(config("timit", tmp_path / "c", tmp_path, options={"chunk_frames": 2}))
    assert str(bad) in str(err.value)
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(config("timit", tmp_path / "c", tmp_path, skip_bad_files=True,
                                     options={"chunk_frames": 2}))
    assert len(splits.skipped) == 1 and splits.skipped[0].startswith(str(bad))
    assert "skipped 1 bad file" in caplog.text and str(bad) in caplog.text
    assert sum(splits.info.extra["files"].values()) == len(originals) - 1


def _audio_folder(root: Path, seed: int = 0):
    """Real files at three rates and three formats; returns the float samples written."""
    rng = np.random.default_rng(seed)
    written = {}
    for i, (rate, fmt, subtype) in enumerate([(8000, "WAV", "PCM_16"), (22050, "FLAC", "PCM_16"),
                                              (16000, "OGG", "VORBIS"), (8000, "WAV", "PCM_16"),
                                              (44100, "FLAC", "PCM_24"), (16000, "WAV", "FLOAT")] * 2):
        samples = (speech_signal(rng, rate // 2 + 37 * i) / 32768.0).astype(np.float32)
        path = root / f"sub{i % 2}" / f"utt{i:02d}.{fmt.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), samples, rate, format=fmt, subtype=subtype)
        written[path] = (samples, rate)
    return written


def test_audio_folder_resamples_every_rate_with_resample_poly(tmp_path):
    written = _audio_folder(tmp_path / "a")
    splits = load_dataset(config("audio", tmp_path / "a", tmp_path,
                                 options={"valid_fraction": 0.0, "test_fraction": 0.1, "chunk_frames": 1000}))
    info = splits.info
    assert info.sample_rate == 16000 and info.extra["files"] == {"train": 11, "valid": 0, "test": 1}
    lengths = {}
    for path, (samples, rate) in written.items():
        read, _ = soundfile.read(str(path), dtype="float32")
        if rate != 16000:
            from math import gcd
            g = gcd(rate, 16000)
            read = resample_poly(read.astype(np.float64), 16000 // g, rate // g)
        lengths[path] = len(read) // 200
    # keep_remainder=True and chunks longer than any file: one training sequence per file
    assert sorted(len(s) for s in splits.train + splits.test) == sorted(lengths.values())
    wav8k = next(p for p, (s, r) in written.items() if r == 8000)
    up = resample_poly(soundfile.read(str(wav8k), dtype="float32")[0].astype(np.float64), 2, 1)
    want = ((up[: len(up) // 200 * 200] - info.mean) / info.std).reshape(-1, 200)
    assert any(s.shape == want.shape and np.allclose(s, want, atol=1e-4) for s in splits.train + splits.test)


def test_audio_folder_rate_mismatch_without_resampling_is_an_error(tmp_path):
    _audio_folder(tmp_path / "a")
    with pytest.raises(DataError, match=r"sample rate \d+ Hz, expected 16000 Hz"):
        load_dataset(config("audio", tmp_path / "a", tmp_path, options={"resample": False}))


def test_audio_folder_stereo_and_nan_files_are_named(tmp_path):
    _audio_folder(tmp_path / "a")
    stereo = tmp_path / "a" / "stereo.wav"
    soundfile.write(str(stereo), np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(DataError, match=rf"{stereo}: 2 channels; expected mono"):
        load_dataset(config("audio", tmp_path / "a", tmp_path))
    stereo.unlink()
    nan = tmp_path / "a" / "nan.wav"
    soundfile.write(str(nan), np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=rf"{nan}: NaN"):
        load_dataset(config("audio", tmp_path / "a", tmp_path))
    splits = load_dataset(config("audio", tmp_path / "a", tmp_path, skip_bad_files=True))
    assert [s.split(":")[0] for s in splits.skipped] == [str(nan)]


def test_split_is_seeded_and_deterministic(tmp_path):
    _audio_folder(tmp_path / "a")
    def test_set(seed):
        s = load_dataset(config("audio", tmp_path / "a", tmp_path, seed=seed))
        return [x.shape for x in s.test]
    assert test_set(1) == test_set(1)
    assert any(test_set(1) != test_set(seed) for seed in (2, 3, 4))


def test_blizzard_scores_forty_frame_sequences(tmp_path):
    _audio_folder(tmp_path / "b")
    splits = load_dataset(config("blizzard", tmp_path / "b", tmp_path,
                                 options={"chunk_frames": 10, "eval_chunk_frames": 10,
                                          "valid_fraction": 0.2, "test_fraction": 0.2}))
    assert splits.info.extra["sequence_unit"] == "chunk"
    assert {s.shape for s in splits.train + splits.valid + splits.test} == {(10, 200)}
    assert len(splits.valid) > 0 and len(splits.test) > 0
    assert speech.BLIZZARD_OPTIONS["eval_chunk_frames"] == 40
    with pytest.raises(DataError, match=r"Blizzard Challenge 2013.*expected under --data-dir"):
        load_dataset(config("blizzard", tmp_path / "missing", tmp_path))


def test_cache_is_reused_invalidated_by_a_changed_file_and_written_atomically(tmp_path, monkeypatch):
    written = _audio_folder(tmp_path / "a")
    first = load_dataset(config("audio", tmp_path / "a", tmp_path))
    cache_files = os.listdir(tmp_path / "cache")
    assert len(cache_files) == 1 and cache_files[0].endswith(".npz")  # no temp files left
    calls = []
    real = speech.prepare_speech
    monkeypatch.setattr(speech, "prepare_speech", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_dataset(config("audio", tmp_path / "a", tmp_path))
    assert calls == [] and again.info == first.info
    for a, b in zip(first.train + first.test, again.train + again.test):
        np.testing.assert_array_equal(a, b)
    path, (samples, rate) = next(iter(written.items()))
    soundfile.write(str(path), samples[: len(samples) // 2], rate)
    changed = load_dataset(config("audio", tmp_path / "a", tmp_path))
    assert calls == [1] and changed.info.mean != first.info.mean
    load_dataset(config("audio", tmp_path / "a", tmp_path, options={"frame_size": 100}))
    assert len(os.listdir(tmp_path / "cache")) == 2 and calls == [1, 1]


def test_default_cache_lives_in_the_user_cache_dir(tmp_path, monkeypatch):
    _audio_folder(tmp_path / "a")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from pyro_zforcing.config import DataConfig
    load_dataset(DataConfig(dataset="audio", data_dir=str(tmp_path / "a")))
    assert len(list((tmp_path / "xdg" / "pyro-zforcing").glob("audio-*.npz"))) == 1
    assert not (tmp_path / "a" / ".zforcing-cache").exists()


def test_speech_batches_have_padded_frames_and_masks(tmp_path):
    make_timit(tmp_path / "t", lengths=(1000, 600, 850))
    splits = load_dataset(config("timit", tmp_path / "t", tmp_path,
                                 options={"frame_size": 100, "chunk_frames": 4, "valid_fraction": 0.25}))
    batch = collate_sequences(splits.test[:3])
    assert batch.x.shape == (3, 10, 100) and batch.lengths.tolist() == [10, 6, 8]
    assert batch.mask.sum(1).tolist() == [10, 6, 8] and float(batch.x[1, 6:].abs().sum()) == 0.0


_HEADERS = st.sampled_from([b"", b"NIST_1A\n", b"NIST_1A\n   1024\n", b"RIFF\x24\x00\x00\x00WAVEfmt ",
                            b"fLaC", b"OggS", b"ID3", b"\xff\xfb"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_HEADERS, body=st.binary(max_size=3000))
def test_fuzzed_audio_files_give_a_clean_data_error(prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "TRAIN" / "DR1" / "FAAA0"
        samples = speech_signal(np.random.default_rng(0), 2000)
        for i in range(3):
            write_sphere(root.parent / f"MBBB{i}" / "SX1.WAV", samples)
        write_sphere(Path(tmp) / "TEST" / "DR1" / "MCCC0" / "SX1.WAV", samples)
        bad = root / "SA1.WAV"
        bad.parent.mkdir(parents=True)
        bad.write_bytes(prefix + body)
        try:
            load_dataset(config("timit", tmp, Path(tmp), options={"chunk_frames": 2}))
        except DataError as err:
            assert str(bad) in str(err)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=1024 + 2 * 999))
def test_truncated_sphere_files_always_give_a_data_error(cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.sph"
        path.write_bytes(sphere_bytes(speech_signal(np.random.default_rng(0), 1000))[:cut])
        from pyro_zforcing.data.audio_io import read_audio
        with pytest.raises(DataError, match=str(path)):
            read_audio(path, sample_rate=16000)


@pytest.mark.skipif(not ASTERISK.is_dir() and not os.environ.get("CI"),
                    reason=f"real speech corpus not installed: {ASTERISK} (apt-get install asterisk-core-sounds-en-wav; "
                           "CI installs it and never skips)")
def test_real_asterisk_prompts_prepare_into_normalised_frames(tmp_path):
    splits = load_dataset(config("audio", ASTERISK, tmp_path))
    info = splits.info
    files = sorted(ASTERISK.rglob("*.wav"))
    assert sum(info.extra["files"].values()) == len(files) == 568
    assert info.extra["files"]["valid"] == info.extra["files"]["test"] > 0
    train = np.concatenate(splits.train)
    assert abs(float(train.mean())) < 1e-3 and float(train.std()) == pytest.approx(1.0, abs=1e-3)
    assert all(len(s) <= 40 for s in splits.train) and splits.skipped == []
    # by hand: 8 kHz int16 -> float -> resample_poly(2, 1) -> 200-sample frames -> (x - mean) / std
    by_hand = {}
    for path in files:
        samples, rate = soundfile.read(str(path), dtype="float32")
        assert rate == 8000 and samples.ndim == 1
        wave = resample_poly(samples.astype(np.float64), 2, 1)
        frames = wave[: len(wave) // 200 * 200].reshape(-1, 200)
        by_hand[path] = (frames - info.mean) / info.std
    every_split = splits.train + splits.valid + splits.test
    assert sum(len(s) for s in every_split) == sum(len(f) for f in by_hand.values())
    for utterance in splits.test:  # whole test utterances: each is exactly one file, prepared by hand
        matches = [p for p, f in by_hand.items() if f.shape == utterance.shape
                   and np.allclose(f, utterance, atol=1e-4)]
        assert len(matches) == 1
