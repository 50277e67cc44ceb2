"""Reading any audio file into mono float samples, and the framing used for speech.

Reading (:func:`read_audio`):
- Everything goes through soundfile/libsndfile (WAV, FLAC, OGG/Vorbis, MP3 with libsndfile
  >= 1.1, AIFF, AU, NIST SPHERE). A file whose first bytes are ``NIST_1A`` (TIMIT's ``.WAV``
  files are SPHERE, whatever their extension) has its header checked first against the SPHERE
  spec, because libsndfile reads a truncated SPHERE file silently: header size, ``end_head``,
  ``channel_count`` 1, ``sample_n_bytes`` 2 (16-bit PCM, as TIMIT ships), uncompressed
  ``sample_coding`` (shorten-compressed SPHERE must be converted with ``sph2pipe`` first),
  and a body holding ``sample_count`` samples.
- A WAV file (``RIFF``/``WAVE``) has its chunks walked first, because libsndfile reads a WAV
  whose data chunk is cut short silently (the frames that are there): a data chunk that
  declares more bytes than the file holds is an error. The sizes that streaming writers put
  in a header when the length is unknown (0, 0xFFFFFFFF, and sox's 0x7FFFF000) are accepted.
- Samples come back as float32 in full-scale units ([-1, 1) for integer PCM, i.e. int16
  values / 32768); the scale cancels in the normalisation below.
- Only mono is accepted: a file with more channels is an error (we do not guess a mixdown).
- Empty files and files with NaN or infinite samples are errors, and so is a file whose peak
  amplitude is above ``MAX_AMPLITUDE`` (16) times full scale (+24 dB): integer PCM cannot get
  there, a float file can hold a little over 1 but not this; such a file is corrupt or stored
  in integer units, and its samples would set the corpus' normalisation (one float WAV of
  1e30 values makes the std 1.9e28 and all real speech ~0).
- A file at another sample rate is resampled to the requested rate with
  ``scipy.signal.resample_poly`` (polyphase FIR, Kaiser window, up/down = target/source
  reduced by their gcd), or, with ``resample=False``, is an error: rates are never mixed.
  A file below ``MIN_SAMPLE_RATE`` (4,000 Hz, less than 2 kHz of bandwidth) is never
  resampled (a 1 Hz header would be upsampled 16,000x): it is an error unless it is already
  at the requested rate.
Every failure is a :class:`DataError` naming the file.

Framing (:func:`frame_signal`): non-overlapping frames of ``frame_size`` samples; the last
``len % frame_size`` samples of a file, less than one frame, are dropped.
Normalisation (:func:`normalisation_stats`): one scalar mean and std over every sample of the
training frames (Fraccaro et al. 2016), applied to all splits as ``(x - mean) / std``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from .base import DataError

MAX_AMPLITUDE = 16.0  # times full scale: the loudest sample a file may hold (see the module docstring)
MIN_SAMPLE_RATE = 4000  # Hz: the lowest rate a file is resampled from
UNKNOWN_WAV_SIZES = (0, 0xFFFFFFFF, 0x7FFFF000)  # data sizes streaming writers leave in a header
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".sph", ".nist", ".aif", ".aiff", ".au")
SPHERE_MAGIC = b"NIST_1A\n"
_SPHERE_FIELD = re.compile(r"^(\S+)\s+-(i|r|s\d+)\s+(.*)$")


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def read_sphere_header(path: Path) -> dict:
    """Parse and check a NIST SPHERE header; returns its fields (ints as int)."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
        if not head.startswith(SPHERE_MAGIC):
            raise DataError(f"{path}: not a NIST SPHERE file (no NIST_1A header)")
        lines = head.split(b"\n")
        try:
            header_size = int(lines[1].strip())
        except (IndexError, ValueError):
            raise DataError(f"{path}: bad SPHERE header: second line is not the header size") from None
        if header_size < 16 or header_size % 1024 != 0:
            raise DataError(f"{path}: bad SPHERE header size {header_size} (must be a multiple of 1024)")
        if header_size > len(head):
            head += handle.read(header_size - len(head))
        if len(head) < header_size:
            raise DataError(f"{path}: truncated SPHERE header ({len(head)} of {header_size} bytes)")
    fields = {}
    try:
        text = head[:header_size].decode("ascii")
    except UnicodeDecodeError:
        raise DataError(f"{path}: bad SPHERE header: non-ASCII bytes") from None
    for line in text.split("\n")[2:]:
        line = line.strip()
        if line == "end_head":
            break
        if not line or line.startswith(";"):
            continue
        match = _SPHERE_FIELD.match(line)
        if match is None:
            raise DataError(f"{path}: bad SPHERE header line {line[:40]!r}")
        name, kind, value = match.groups()
        try:
            fields[name] = int(value) if kind == "i" else float(value) if kind == "r" else value
        except ValueError:
            raise DataError(f"{path}: bad SPHERE header value {line[:40]!r}") from None
    else:
        raise DataError(f"{path}: bad SPHERE header: no end_head")
    for name in ("sample_rate", "sample_count", "sample_n_bytes", "channel_count"):
        if not isinstance(fields.get(name), int) or fields[name] < 0:
            raise DataError(f"{path}: bad SPHERE header: missing or invalid {name}")
    if fields["channel_count"] != 1:
        raise DataError(f"{path}: {fields['channel_count']} channels; expected mono")
    if fields["sample_n_bytes"] != 2:
        raise DataError(f"{path}: sample width {fields['sample_n_bytes']} bytes; expected 16-bit (2-byte) PCM")
    coding = str(fields.get("sample_coding", "pcm"))
    if coding != "pcm":
        raise DataError(f"{path}: SPHERE sample_coding {coding!r} is not plain pcm "
                        "(decompress shorten files with sph2pipe first)")
    if str(fields.get("sample_byte_format", "01")) not in ("01", "10", "1"):
        raise DataError(f"{path}: bad SPHERE sample_byte_format {fields.get('sample_byte_format')!r}")
    if fields["sample_rate"] < 1 or fields["sample_count"] < 1:
        raise DataError(f"{path}: empty SPHERE file (sample_count {fields['sample_count']})")
    body = path.stat().st_size - header_size
    need = fields["sample_count"] * fields["sample_n_bytes"]
    if body < need:
        raise DataError(f"{path}: truncated SPHERE file: {body} bytes of samples, header promises {need}")
    fields["header_size"] = header_size
    return fields


def _starts_with_sphere(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(SPHERE_MAGIC)) == SPHERE_MAGIC


def check_wav_chunks(path: Path) -> None:
    """A RIFF/WAVE file's data chunk must hold the bytes its header declares (other files pass)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                held = size - offset - 8
                if declared > held and declared not in UNKNOWN_WAV_SIZES:
                    raise DataError(f"{path}: truncated WAV file: its data chunk declares {declared} bytes "
                                    f"but the file holds {held}")
                return
            offset += 8 + declared + (declared & 1)  # chunks are padded to an even size


def read_audio(path, *, sample_rate: int, resample: bool = True) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate``: ``(n,)`` (see the module docstring)."""
    import soundfile

    path = Path(path)
    try:
        if _starts_with_sphere(path):
            read_sphere_header(path)
        check_wav_chunks(path)
        info = soundfile.info(str(path))
        if info.channels != 1:
            raise DataError(f"{path}: {info.channels} channels; expected mono")
        if info.samplerate < MIN_SAMPLE_RATE and info.samplerate != sample_rate:
            raise DataError(f"{path}: sample rate {info.samplerate} Hz is below {MIN_SAMPLE_RATE} Hz, "
                            f"the lowest rate resampled to {sample_rate} Hz (a damaged header?)")
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except DataError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, EOFError, soundfile.LibsndfileError) as err:
        raise DataError(f"{path}: unreadable audio file ({type(err).__name__}: {err})") from None
    if samples.ndim != 1:
        raise DataError(f"{path}: {samples.shape[1]} channels; expected mono")
    if samples.size == 0:
        raise DataError(f"{path}: empty audio file (no samples)")
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: NaN or infinite samples")
    peak = float(np.abs(samples).max())
    if peak > MAX_AMPLITUDE:
        raise DataError(f"{path}: peak amplitude {peak:.3g} times full scale, above the {MAX_AMPLITUDE:g} "
                        "a file may hold (a corrupt file, or float samples in integer units?)")
    if rate != sample_rate:
        if not resample:
            raise DataError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                            "(set option resample=True to resample)")
        samples = resample_signal(samples, rate, sample_rate)
    return samples


def resample_signal(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """``signal`` at ``source_rate`` resampled to ``target_rate`` (scipy ``resample_poly``)."""
    from scipy.signal import resample_poly

    g = math.gcd(int(source_rate), int(target_rate))
    out = resample_poly(signal.astype(np.float64), int(target_rate) // g, int(source_rate) // g)
    return out.astype(np.float32)


def frame_signal(signal: np.ndarray, frame_size: int) -> np.ndarray:
    """``signal: (n,)`` -> ``(n // frame_size, frame_size)`` non-overlapping frames."""
    steps = len(signal) // frame_size
    return np.ascontiguousarray(signal[: steps * frame_size].reshape(steps, frame_size))


def normalisation_stats(sequences: Sequence[np.ndarray]) -> Tuple[float, float]:
    """Scalar mean and std over every sample of ``sequences`` (float64 accumulation)."""
    count = sum(s.size for s in sequences)
    if count == 0:
        raise DataError("no training samples to compute the normalisation from")
    total = sum(float(s.sum(dtype=np.float64)) for s in sequences)
    mean = total / count
    var = sum(float(np.square(s.astype(np.float64) - mean).sum()) for s in sequences) / count
    std = math.sqrt(var)
    if not std > 0:
        raise DataError("training audio is constant (std 0); cannot normalise")
    return mean, std


def chunk_frames(frames: np.ndarray, length: int, *, keep_remainder: bool) -> List[np.ndarray]:
    """``frames: (T, D)`` cut into consecutive ``(length, D)`` pieces; the last ``T % length``
    frames form a shorter piece when ``keep_remainder``, else they are dropped."""
    pieces = [frames[i:i + length] for i in range(0, len(frames) - length + 1, length)]
    rest = len(frames) % length
    if keep_remainder and rest:
        pieces.append(frames[len(frames) - rest:])
    return pieces
