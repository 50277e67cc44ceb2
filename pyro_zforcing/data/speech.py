"""Raw-waveform speech: TIMIT, Blizzard 2013 and any folder of audio files.

All three follow the protocol of Chung et al. 2015 (VRNN) / Fraccaro et al. 2016 (SRNN) that
the Z-Forcing paper uses for speech:

1. each file is read as mono samples at ``sample_rate`` (16 kHz; see :mod:`.audio_io` for
   formats, checks and resampling with ``scipy.signal.resample_poly``);
2. cut into non-overlapping frames of ``frame_size`` samples (200); the samples after the
   last whole frame of a file are dropped;
3. normalised with one scalar mean and std computed over all *training* samples
   (``DataInfo.mean``/``std``, in full-scale float units: int16 value / 32768; they are saved
   with the model through ``DataInfo``);
4. training files are cut into chunks of ``chunk_frames`` frames (40 frames = 0.5 s); the
   last ``T % chunk_frames`` frames of a file are dropped, or kept as a shorter sequence with
   ``keep_remainder=True``. With ``stream=True`` (TIMIT only; the ``timit`` recipe sets it) the
   training files are instead concatenated into one signal, framed and cut as Fraccaro et al.'s
   ``timit_for_srnn.py`` (the data of the authors' ``train_timit.py``) does: frames and chunks
   straddle utterance boundaries, each chunk starts from the frame before it (``train_first``,
   the first input u_1, as their inputs are the stream shifted by one frame), and only the
   stream's tail is dropped (:func:`stream_chunks`);
5. evaluation: TIMIT and audio folders score whole utterances (``extra["sequence_unit"] ==
   "utterance"``), Blizzard scores 40-frame sequences (``"chunk"``), set by
   ``eval_chunk_frames`` (None = whole files).

A file with fewer samples than one frame is a bad file, and so is any file :mod:`.audio_io`
refuses (unreadable, truncated, non-finite or absurd amplitudes, a rate below the floor, a
dangling symbolic link): each stops the load naming the file, or with ``skip_bad_files`` is
skipped and listed once the corpus is read. Each sequence is a float32 array ``(T_i, frame_size)``; the emission is
gaussian with ``dim = frame_size`` and bounds are reported per sample.

Options and defaults (``DataConfig.options``):

======================  ===========  ===========  ===========
option                  timit        blizzard     audio
======================  ===========  ===========  ===========
frame_size              200          200          200
chunk_frames            40           40           40
keep_remainder          False        False        True
sample_rate             16000        16000        16000
resample                True         True         True
eval_chunk_frames       None         40           None
valid_fraction          0.05         0.05         0.1
test_fraction           (fixed)      0.05         0.1
include_sa              True         -            -
stream                  False        -            -
======================  ===========  ===========  ===========

TIMIT's test set is the standard ``TEST`` folder (168 speakers, 1,680 utterances);
``valid_fraction`` of the 462 training *speakers* (seeded by ``DataConfig.seed``, so speakers
never straddle splits) are held out for validation. ``include_sa=True`` keeps the two
dialect sentences SA1/SA2 every speaker reads, as Chung et al. and Fraccaro et al. use all
6,300 utterances. Blizzard and audio folders are split by file with the seeded
:func:`.common.split_items`. An audio folder keeps short-file remainders by default because
arbitrary folders (e.g. prompts of a phone system) hold many files shorter than one chunk.

Memory: prepared audio is float32 at ``sample_rate`` (64 kB per second at 16 kHz), held in
memory and in the cache; all of TIMIT (about 5.4 hours) is about 1.2 GB. The full Blizzard
2013 release (about 300 hours, ~69 GB prepared) does not fit: point ``--data-dir`` at the
subset you train on (Chung et al. used a subset too).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .audio_io import (chunk_frames, frame_signal, is_audio_file, normalisation_stats,
                       read_audio)
from .base import DataError, DataInfo, SequenceSplits
from .cache import cached
from .common import (BadFiles, check_choice, check_fraction, check_int, child_ci, corpus_path,
                     progress, resolve_options, split_items, walk_files, wrong_layout)

logger = logging.getLogger(__name__)

_COMMON = {"frame_size": 200, "chunk_frames": 40, "sample_rate": 16000, "resample": True}
TIMIT_OPTIONS = {**_COMMON, "keep_remainder": False, "eval_chunk_frames": None,
                 "valid_fraction": 0.05, "include_sa": True, "stream": False}
BLIZZARD_OPTIONS = {**_COMMON, "keep_remainder": False, "eval_chunk_frames": 40,
                    "valid_fraction": 0.05, "test_fraction": 0.05}
AUDIO_OPTIONS = {**_COMMON, "keep_remainder": True, "eval_chunk_frames": None,
                 "valid_fraction": 0.1, "test_fraction": 0.1}

TIMIT_LAYOUT = ("TRAIN/DR1..DR8/<SPEAKER>/<UTTERANCE>.WAV and TEST/DR1..DR8/<SPEAKER>/*.WAV "
                "(NIST SPHERE, any letter case; a TIMIT/ or data/ folder above them is fine)")
BLIZZARD_LAYOUT = "any folders of Blizzard 2013 audio files (.wav/.flac/.mp3/.ogg), mono"
AUDIO_LAYOUT = "any folders of audio files (.wav/.flac/.ogg/.mp3/.sph/.aiff/.au), mono"


def _speech_options(dataset: str, config, defaults: dict) -> dict:
    options = resolve_options(dataset, config.options, defaults)
    for name in ("frame_size", "chunk_frames", "sample_rate"):
        check_int(dataset, name, options[name])
    check_int(dataset, "eval_chunk_frames", options["eval_chunk_frames"], allow_none=True)
    for name in ("resample", "keep_remainder", "include_sa", "stream"):
        if name in options:
            check_choice(dataset, name, options[name], (True, False))
    for name in ("valid_fraction", "test_fraction"):
        if name in options:
            check_fraction(dataset, name, options[name])
    return options


def _read_samples(path: Path, options: dict) -> np.ndarray:
    samples = read_audio(path, sample_rate=options["sample_rate"], resample=options["resample"])
    if len(samples) < options["frame_size"]:
        raise DataError(f"{path}: {len(samples)} samples, shorter than one frame of "
                        f"{options['frame_size']}")
    return samples


def stream_chunks(frames: np.ndarray, length: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """``frames: (N, D)`` of one stream cut into consecutive ``(length, D)`` training targets
    ``frames[1 + k * length : 1 + (k + 1) * length]`` and the frame before each, ``frames[k * length]``,
    their first input: as Fraccaro et al.'s ``reorder`` does, frame 0 is only ever an input, every
    chunk's input sequence is the stream shifted by one frame, and the stream's tail shorter than a
    chunk is dropped."""
    count = (len(frames) - 1) // length
    return ([frames[1 + k * length: 1 + (k + 1) * length] for k in range(count)],
            [frames[k * length] for k in range(count)])


def prepare_speech(config, *, dataset: str, files: Dict[str, Sequence[Path]], options: dict,
                   extra: dict) -> SequenceSplits:
    """Read, frame, normalise and chunk ``files`` ({"train": [...], "valid": ..., "test": ...})."""
    bad = BadFiles(dataset, config.skip_bad_files)
    framed, read = {}, {}
    for split in ("train", "valid", "test"):
        signals = []
        for path in progress(files[split], desc=f"{dataset} {split}"):
            samples = bad.read(path, lambda p: _read_samples(p, options))
            if samples is not None:
                signals.append(samples)
        read[split] = len(signals)
        if split == "train" and options.get("stream") and signals:  # one stream across file boundaries
            signals = [np.concatenate(signals)]
        framed[split] = [frame_signal(samples, options["frame_size"]) for samples in signals]
    if not framed["train"]:
        raise DataError(f"{dataset}: no readable training files (skipped {len(bad.skipped)})")
    mean, std = normalisation_stats(framed["train"])
    for split in framed:
        framed[split] = [((a - mean) / std).astype(np.float32) for a in framed[split]]

    def cut(arrays, length, keep):
        return [piece for a in arrays for piece in chunk_frames(a, length, keep_remainder=keep)]

    train_first = None
    if options.get("stream"):
        train, train_first = stream_chunks(framed["train"][0], options["chunk_frames"])
    else:
        train = cut(framed["train"], options["chunk_frames"], options["keep_remainder"])
    if not train:
        raise DataError(f"{dataset}: no training file is as long as one chunk of "
                        f"{options['chunk_frames']} frames (set keep_remainder=True)")
    eval_len = options["eval_chunk_frames"]
    valid, test = framed["valid"], framed["test"]
    if eval_len is not None:
        valid, test = cut(valid, eval_len, False), cut(test, eval_len, False)
    info = DataInfo(
        name=dataset, emission="gaussian", dim=options["frame_size"], unit="sample",
        units_per_step=options["frame_size"], sample_rate=options["sample_rate"],
        mean=float(mean), std=float(std),
        extra={"sequence_unit": "utterance" if eval_len is None else "chunk",
               "chunk_frames": options["chunk_frames"], "eval_chunk_frames": eval_len,
               "amplitude_scale": "full-scale float (int16 / 32768)",
               "files": read, "stream": bool(options.get("stream")), **extra})
    bad.report()
    return SequenceSplits(info, train, valid, test, skipped=list(bad.skipped), train_first=train_first)


def _cached_speech(config, *, dataset: str, root: Path, files: Dict[str, List[Path]],
                   options: dict, extra: dict) -> SequenceSplits:
    everything = [p for split in ("train", "valid", "test") for p in files[split]]
    return cached(config, dataset=dataset, root=root, files=everything,
                  options={**options, "splits": {k: [str(p) for p in v] for k, v in files.items()}},
                  build=lambda: prepare_speech(config, dataset=dataset, files=files,
                                               options=options, extra=extra))


# ----------------------------------------------------------------------------- TIMIT

def _timit_root(data_dir: Path) -> Path:
    candidates = [data_dir]
    for name in ("timit", "data", "timit/timit", "timit/data"):
        node = data_dir
        for part in name.split("/"):
            node = child_ci(node, part) if node is not None else None
        if node is not None:
            candidates.append(node)
    for root in candidates:
        if child_ci(root, "train") is not None and child_ci(root, "test") is not None:
            return root
    raise wrong_layout("timit", data_dir, TIMIT_LAYOUT, "no TRAIN and TEST folders")


def _timit_speakers(split_dir: Path) -> Dict[str, List[Path]]:
    """{"DR1/FCJF0": [utterance files]}: one file per utterance id, the SPHERE ``X.WAV``
    preferred over converted copies such as ``X.WAV.wav`` that some redistributions add."""
    speakers = {}
    for region in sorted(split_dir.iterdir()):
        if not (region.is_dir() and region.name.lower().startswith("dr")):
            continue
        for speaker in sorted(region.iterdir()):
            if not speaker.is_dir() or speaker.name.startswith("."):
                continue
            chosen = {}
            for path in sorted(speaker.iterdir()):
                if not path.is_file() or not path.name.lower().endswith(".wav"):
                    continue
                utt = path.name.split(".")[0].upper()
                if utt not in chosen or path.name.lower() == utt.lower() + ".wav":
                    chosen[utt] = path
            if chosen:
                speakers[f"{region.name.upper()}/{speaker.name.upper()}"] = [chosen[u] for u in sorted(chosen)]
    if not speakers:
        raise wrong_layout("timit", split_dir, TIMIT_LAYOUT, "no DR*/<SPEAKER>/*.WAV files")
    return speakers


def load_timit(config) -> SequenceSplits:
    """TIMIT (LDC93S1) as 200-sample frames: 40-frame training chunks, whole test utterances."""
    options = _speech_options("timit", config, TIMIT_OPTIONS)
    data_dir = corpus_path(config, dataset="timit", description="TIMIT (LDC93S1, licensed)",
                           source="the LDC catalog, https://catalog.ldc.upenn.edu/LDC93S1",
                           layout=TIMIT_LAYOUT)
    root = _timit_root(data_dir)
    train_speakers = _timit_speakers(child_ci(root, "train"))
    test_speakers = _timit_speakers(child_ci(root, "test"))
    train_ids, valid_ids, _ = split_items(list(train_speakers), valid_fraction=options["valid_fraction"],
                                          test_fraction=0.0, seed=config.seed, dataset="timit",
                                          what="training speakers")

    def utterances(speakers, ids):
        return [p for s in ids for p in speakers[s]
                if options["include_sa"] or not p.name.upper().startswith("SA")]

    files = {"train": utterances(train_speakers, train_ids),
             "valid": utterances(train_speakers, valid_ids),
             "test": utterances(test_speakers, sorted(test_speakers))}
    extra = {"speakers": {"train": len(train_ids), "valid": len(valid_ids), "test": len(test_speakers)}}
    return _cached_speech(config, dataset="timit", root=root, files=files, options=options, extra=extra)


# ----------------------------------------------------------------------- folders

_FOLDERS = {
    "blizzard": dict(
        defaults=BLIZZARD_OPTIONS, layout=BLIZZARD_LAYOUT,
        description="the Blizzard Challenge 2013 English audiobook data (licensed)",
        source="the Blizzard Challenge 2013 release (Lessac Technologies, via the Blizzard "
               "Challenge organisers, https://www.cstr.ed.ac.uk/projects/blizzard/)"),
    "audio": dict(
        defaults=AUDIO_OPTIONS, layout=AUDIO_LAYOUT, description="a folder of your own audio files",
        source="any recordings you have (e.g. Debian's asterisk-core-sounds-en-wav in "
               "/usr/share/asterisk/sounds/en_US_f_Allison)"),
}


def _load_folder(config, dataset: str) -> SequenceSplits:
    spec = _FOLDERS[dataset]
    options = _speech_options(dataset, config, spec["defaults"])
    root = corpus_path(config, dataset=dataset, description=spec["description"],
                       source=spec["source"], layout=spec["layout"])
    paths = walk_files(root, is_audio_file)
    if not paths:
        raise wrong_layout(dataset, root, spec["layout"], "no audio files found")
    train, valid, test = split_items(paths, valid_fraction=options["valid_fraction"],
                                     test_fraction=options["test_fraction"], seed=config.seed,
                                     dataset=dataset)
    return _cached_speech(config, dataset=dataset, root=root,
                          files={"train": train, "valid": valid, "test": test},
                          options=options, extra={})


def load_blizzard(config) -> SequenceSplits:
    """Blizzard 2013 audio, 16 kHz, 200-sample frames, 40-frame sequences everywhere."""
    return _load_folder(config, "blizzard")


def load_audio_folder(config) -> SequenceSplits:
    """Any folder of mono audio files, resampled to ``sample_rate``, framed like TIMIT."""
    return _load_folder(config, "audio")
