"""Word-level text: the IMDB reviews (aclImdb) and any plain UTF-8 text file or folder.

One tokenisation for both:

1. IMDB only: the HTML line breaks the reviews contain (``<br />``, ``<br>``) become spaces.
2. Text is split into sentences after ``.``, ``!`` or ``?`` followed by white space (lines
   of a plain text file are sentences already and are not split further).
3. Each sentence is lower-cased and tokenised into words (``\\w+`` runs, keeping inner
   apostrophes: ``don't``) and single punctuation marks; control characters (the
   backspace over-striking of old fortune files) are dropped.
4. Sentences with fewer than ``min_length`` or more than ``max_length`` tokens are dropped
   (not truncated); the counts are in ``DataInfo.extra["dropped"]``.
5. The vocabulary is the ``vocab_size - 2`` most frequent training words (ties broken
   alphabetically) plus ``<unk>`` (id 0, every other word) and ``<eos>`` (id 1), appended to
   every sentence so the model learns to end. ``DataInfo.vocab`` lists the words by id and
   ``dim == vocab_size`` (smaller if the training text has fewer distinct words).

Sequences are int64 arrays ``(T_i,)`` (tokens + ``<eos>``); emission categorical, unit word
(``<eos>`` counts as a word in per-word bounds, as in the language-modelling literature).

``text`` reads a UTF-8 file, or every file below a folder (hidden files, ``.dat`` fortune
indexes and second names of the same file are skipped). ``format="auto"`` treats a file
with a line that is just ``%`` as a fortune file (entries between ``%`` lines, each joined
and split into sentences), any other file as one sentence per line. Sentences are split
into train/valid/test with the seeded :func:`.common.split_items`.

``imdb`` reads the aclImdb folder of the Large Movie Review Dataset: ``train/{pos,neg}``
and, with ``use_unsup``, ``train/unsup`` for training, less ``valid_fraction`` of those
reviews (seeded, whole reviews) for validation, and ``test/{pos,neg}`` for testing.

Options and defaults:

================  =======  =======
option            text     imdb
================  =======  =======
vocab_size        10000    20000
min_length        1        1
max_length        64       64
valid_fraction    0.05     0.05
test_fraction     0.05     (test/)
format            "auto"   -
use_unsup         -        True
================  =======  =======
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .cache import cached
from .common import (BadFiles, check_choice, check_fraction, check_int, child_ci, corpus_path,
                     progress, resolve_options, split_items, walk_files, wrong_layout)

UNK, EOS = "<unk>", "<eos>"
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s\x00-\x1f\x7f]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)

_COMMON = {"vocab_size": 10000, "min_length": 1, "max_length": 64, "valid_fraction": 0.05}
TEXT_OPTIONS = {**_COMMON, "test_fraction": 0.05, "format": "auto"}
IMDB_OPTIONS = {**_COMMON, "vocab_size": 20000, "use_unsup": True}

IMDB_LAYOUT = "aclImdb/ (or its contents): train/{pos,neg,unsup}/*.txt and test/{pos,neg}/*.txt"
TEXT_LAYOUT = ("a UTF-8 text file (one sentence per line, or fortune entries separated by % "
               "lines) or a folder of such files")


def tokenize(sentence: str) -> List[str]:
    """Lower-cased words and punctuation marks of ``sentence``."""
    return _WORD.findall(sentence.lower())


def split_sentences(text: str) -> List[str]:
    """Sentences of running ``text`` (split after . ! ? followed by white space)."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def read_utf8(path: Path) -> str:
    """The text of ``path``; undecodable, empty or unreadable files raise naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if not text.strip():
        raise DataError(f"{path}: empty text file")
    return text


def _options(dataset: str, config, defaults: dict) -> dict:
    options = resolve_options(dataset, config.options, defaults)
    check_int(dataset, "vocab_size", options["vocab_size"], minimum=3)
    check_int(dataset, "min_length", options["min_length"], minimum=1)
    check_int(dataset, "max_length", options["max_length"], minimum=options["min_length"])
    for name in ("valid_fraction", "test_fraction"):
        if name in options:
            check_fraction(dataset, name, options[name])
    if "format" in options:
        check_choice(dataset, "format", options["format"], ("auto", "lines", "fortune"))
    if "use_unsup" in options:
        check_choice(dataset, "use_unsup", options["use_unsup"], (True, False))
    return options


def encode_splits(*, dataset: str, sentences: Dict[str, Sequence[str]], options: dict,
                  skipped: List[str], extra: dict) -> SequenceSplits:
    """Tokenise, length-filter, build the training vocabulary and encode every split."""
    tokens, dropped = {}, {}
    for split, raw in sentences.items():
        kept, short, long = [], 0, 0
        for sentence in progress(raw, desc=f"{dataset} {split}"):
            words = tokenize(sentence)
            if len(words) < options["min_length"]:
                short += 1
            elif len(words) > options["max_length"]:
                long += 1
            else:
                kept.append(words)
        tokens[split], dropped[split] = kept, {"short": short, "long": long}
    if not tokens["train"]:
        raise DataError(f"{dataset}: no training sentence of {options['min_length']} to "
                        f"{options['max_length']} tokens")
    counts = Counter(w for words in tokens["train"] for w in words)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    vocab = (UNK, EOS) + tuple(w for w, _ in ranked[: options["vocab_size"] - 2])
    ids = {w: i for i, w in enumerate(vocab)}
    encoded = {split: [np.array([ids.get(w, 0) for w in words] + [1], dtype=np.int64)
                       for words in kept] for split, kept in tokens.items()}
    unk = sum(int((s == 0).sum()) for s in encoded["train"])
    total = sum(len(s) for s in encoded["train"])
    info = DataInfo(name=dataset, emission="categorical", dim=len(vocab), unit="word",
                    vocab=vocab, extra={"sequence_unit": "sentence", "unk_id": 0, "eos_id": 1,
                                        "dropped": dropped, "train_unk_rate": unk / total, **extra})
    return SequenceSplits(info, encoded["train"], encoded["valid"], encoded["test"], skipped=skipped)


# -------------------------------------------------------------------------- text

def _file_sentences(text: str, fmt: str) -> List[str]:
    lines = text.splitlines()
    if fmt == "fortune" or (fmt == "auto" and any(line.strip() == "%" for line in lines)):
        entries, current = [], []
        for line in lines:
            if line.strip() == "%":
                entries.append(current)
                current = []
            else:
                current.append(line)
        entries.append(current)
        return [s for entry in entries for s in split_sentences(" ".join(entry))]
    return [" ".join(line.split()) for line in lines if line.strip()]


def load_text(config) -> SequenceSplits:
    """A UTF-8 text file or folder as word sequences (see the module docstring)."""
    options = _options("text", config, TEXT_OPTIONS)
    path = corpus_path(config, dataset="text", description="a text corpus of your own",
                       source="any UTF-8 text (e.g. Debian's fortunes package: "
                              "/usr/share/games/fortunes)", layout=TEXT_LAYOUT, allow_file=True)
    files = [path] if path.is_file() else walk_files(path, lambda p: p.suffix != ".dat")
    if not files:
        raise wrong_layout("text", path, TEXT_LAYOUT, "no files found")

    def build() -> SequenceSplits:
        bad = BadFiles("text", config.skip_bad_files)
        sentences = []
        for file in files:
            text = bad.read(file, read_utf8)
            if text is not None:
                sentences += _file_sentences(text, options["format"])
        if not sentences:
            raise DataError(f"text: no sentences in {path}")
        train, valid, test = split_items(range(len(sentences)), valid_fraction=options["valid_fraction"],
                                         test_fraction=options["test_fraction"], seed=config.seed,
                                         dataset="text", what="sentences")
        pick = lambda idx: [sentences[i] for i in idx]  # noqa: E731
        splits = encode_splits(dataset="text", sentences={"train": pick(train), "valid": pick(valid),
                                                          "test": pick(test)},
                               options=options, skipped=bad.skipped, extra={"files": len(files)})
        bad.report()
        return splits

    return cached(config, dataset="text", root=path, files=files, options=options, build=build)


# -------------------------------------------------------------------------- IMDB

def _imdb_root(data_dir: Path) -> Path:
    for root in (data_dir, child_ci(data_dir, "aclImdb")):
        if root is not None and child_ci(root, "train") and child_ci(root, "test"):
            return root
    raise wrong_layout("imdb", data_dir, IMDB_LAYOUT, "no train/ and test/ folders")


def _reviews(root: Path, split: str, labels: Sequence[str]) -> List[Path]:
    files = []
    for label in labels:
        folder = root / split / label
        if not folder.is_dir():
            raise wrong_layout("imdb", root, IMDB_LAYOUT, f"missing {split}/{label}/")
        files += sorted(p for p in folder.iterdir() if p.suffix == ".txt" and not p.name.startswith("."))
    if not files:
        raise wrong_layout("imdb", root / split, IMDB_LAYOUT, "no .txt reviews")
    return files


def load_imdb(config) -> SequenceSplits:
    """IMDB review sentences (aclImdb) as word sequences (see the module docstring)."""
    options = _options("imdb", config, IMDB_OPTIONS)
    data_dir = corpus_path(config, dataset="imdb", description="the IMDB Large Movie Review Dataset",
                           source="the aclImdb_v1.tar.gz tarball on Stanford's Large Movie Review "
                                  "Dataset page, https://ai.stanford.edu/~amaas/data/sentiment/",
                           layout=IMDB_LAYOUT)
    root = _imdb_root(data_dir)
    train_files = _reviews(root, "train", ("pos", "neg", "unsup") if options["use_unsup"] else ("pos", "neg"))
    test_files = _reviews(root, "test", ("pos", "neg"))
    train, valid, _ = split_items(train_files, valid_fraction=options["valid_fraction"], test_fraction=0.0,
                                  seed=config.seed, dataset="imdb", what="training reviews")
    files = {"train": train, "valid": valid, "test": test_files}

    def build() -> SequenceSplits:
        bad = BadFiles("imdb", config.skip_bad_files)
        sentences = {}
        for split, paths in files.items():
            sentences[split] = []
            for review in progress(paths, desc=f"imdb read {split}"):
                text = bad.read(review, read_utf8)
                if text is not None:
                    sentences[split] += split_sentences(_HTML_BREAK.sub(" ", text))
        splits = encode_splits(dataset="imdb", sentences=sentences, options=options,
                               skipped=bad.skipped,
                               extra={"reviews": {k: len(v) for k, v in files.items()}})
        bad.report()
        return splits

    return cached(config, dataset="imdb", root=root, files=train_files + test_files,
                  options=options, build=build)
