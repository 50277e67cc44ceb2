"""Builders of real data files for the data tests, written by each format's specification,
and the checks that real readers (libsndfile, gzip) accept what they write.

Other ``test_data_*`` modules import the builders from here.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import soundfile

from pyro_zforcing.config import DataConfig

SPHERE_HEADER_SIZE = 1024


def sphere_bytes(samples: np.ndarray, *, sample_rate: int = 16000, sample_n_bytes: int = 2,
                 channel_count: int = 1, sample_count: Optional[int] = None,
                 extra_fields: str = "") -> bytes:
    """A NIST SPHERE file as TIMIT ships it: ``NIST_1A``, the header size, ``name -type value``
    fields, ``end_head``, padded to 1024 bytes, then little-endian 16-bit PCM ("01")."""
    samples = np.asarray(samples)
    count = len(samples) // channel_count if sample_count is None else sample_count
    fields = [
        "NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0",
        "utterance_id -s8 fcjf0_sa1", f"channel_count -i {channel_count}",
        f"sample_count -i {count}", f"sample_rate -i {sample_rate}",
        f"sample_min -i {int(samples.min()) if samples.size else 0}",
        f"sample_max -i {int(samples.max()) if samples.size else 0}",
        f"sample_n_bytes -i {sample_n_bytes}", "sample_byte_format -s2 01",
        f"sample_sig_bits -i {8 * sample_n_bytes}",
    ]
    if extra_fields:
        fields.append(extra_fields)
    fields.append("end_head")
    header = ("\n".join(fields) + "\n").encode("ascii")
    assert len(header) <= SPHERE_HEADER_SIZE
    header = header.ljust(SPHERE_HEADER_SIZE, b" ")
    body = samples.astype("<i2").tobytes() if sample_n_bytes == 2 else samples.astype("<i4").tobytes()
    return header + body


def write_sphere(path: Path, samples: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sphere_bytes(samples, **kwargs))
    return path


def speech_signal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A speech-like int16 signal: a random-pitch tone plus noise."""
    t = np.arange(n)
    tone = 4000 * np.sin(2 * np.pi * rng.uniform(100, 300) * t / 16000)
    return np.clip(tone + rng.normal(0, 500, n), -32768, 32767).astype(np.int16)


def make_timit(root: Path, *, train_speakers: int = 4, test_speakers: int = 2,
               utterances=("SA1", "SI943", "SX13"), lower: bool = False, seed: int = 0,
               lengths=(1000, 1234, 850)) -> Dict[Path, np.ndarray]:
    """A TIMIT-shaped tree ``TRAIN/DR<k>/<SPEAKER>/<UTT>.WAV`` of SPHERE files; returns the
    int16 samples of every file by path."""
    rng = np.random.default_rng(seed)
    written = {}
    case = str.lower if lower else str.upper
    for split, count in (("TRAIN", train_speakers), ("TEST", test_speakers)):
        for s in range(count):
            region = f"DR{1 + s % 2}"
            speaker = f"{'FM'[s % 2]}SPK{split[1]}{s}"
            for u, utt in enumerate(utterances):
                samples = speech_signal(rng, lengths[u % len(lengths)])
                path = root / case(split) / case(region) / case(speaker) / case(f"{utt}.WAV")
                written[write_sphere(path, samples)] = samples
    return written


def config(dataset: str, data_dir, tmp_path: Path, **kwargs) -> DataConfig:
    """A DataConfig that caches under the test's temporary folder."""
    return DataConfig(dataset=dataset, data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"),
                      **kwargs)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (LeCun's MNIST format): magic 0x0000 0x08 (ubyte) ndim, big-endian int32
    sizes, then the unsigned bytes."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_amat(path: Path, images: np.ndarray) -> Path:
    """Larochelle & Murray's ``.amat``: one image a line, 784 space-separated 0/1 values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(str(int(v)) for v in img.reshape(-1)) for img in images]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------- self-checks

def test_sphere_header_written_by_spec_is_read_by_libsndfile(tmp_path):
    samples = speech_signal(np.random.default_rng(1), 777)
    path = write_sphere(tmp_path / "SA1.WAV", samples)
    raw = path.read_bytes()
    assert raw[:8] == b"NIST_1A\n" and raw[8:16] == b"   1024\n" and len(raw) == 1024 + 2 * 777
    info = soundfile.info(str(path))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
        "NIST", "PCM_16", 16000, 1, 777)
    read, rate = soundfile.read(str(path), dtype="int16")
    np.testing.assert_array_equal(read, samples)


def test_idx_builder_writes_lecun_magic_and_sizes(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = gzip.decompress(write_idx(tmp_path / "x.gz", images, gz=True).read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">III", raw[4:16]) == (2, 28, 28)
    np.testing.assert_array_equal(np.frombuffer(raw[16:], np.uint8).reshape(2, 28, 28), images)
