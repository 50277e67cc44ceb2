"""Plain text / fortune files and the aclImdb folder: tokenisation, vocabulary, splits, errors."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_zforcing.data import DataError, collate_sequences, load_dataset
from pyro_zforcing.data.common import split_items
from pyro_zforcing.data.text import split_sentences, tokenize
from test_data_builders import config

FORTUNES = Path("/usr/share/games/fortunes")


def _decode(info, seq):
    return " ".join(info.vocab[i] for i in seq)


def test_tokeniser_lower_cases_keeps_apostrophes_and_splits_punctuation():
    assert tokenize("Don't PANIC, it's 42!\x08") == ["don't", "panic", ",", "it's", "42", "!"]
    assert split_sentences("One. Two!  Three?\nFour 3.5 five") == ["One.", "Two!", "Three?", "Four 3.5 five"]


def test_text_lines_vocabulary_and_ids_match_hand_computation(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\nthe dog sat\n\nthe cat ran\na b\n", encoding="utf-8")
    splits = load_dataset(config("text", corpus, tmp_path,
                                 options={"vocab_size": 5, "valid_fraction": 0.0, "test_fraction": 0.25}))
    info = splits.info
    assert (info.emission, info.unit, info.units_per_step) == ("categorical", "word", 1)
    train_text = sorted(_decode(info, s) for s in splits.train)
    test_text = [_decode(info, s) for s in splits.test]
    assert len(train_text) == 3 and len(test_text) == 1 and splits.valid == []
    # counts over the 3 training sentences decide the vocabulary; ties alphabetical
    raw = ["the cat sat", "the dog sat", "the cat ran", "a b"]
    train_idx, _, (test_idx,) = split_items(range(4), valid_fraction=0.0, test_fraction=0.25,
                                            seed=0, dataset="t")
    assert test_text[0].replace("<unk>", "").split()[:1] == raw[test_idx].split()[:1]
    train_words = [w for i in train_idx for w in raw[i].split()]
    counts = {w: train_words.count(w) for w in set(train_words)}
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:3]
    assert info.vocab == ("<unk>", "<eos>", *ranked) and info.dim == 5
    for seq in splits.train + splits.test:
        assert seq.dtype == np.int64 and seq[-1] == 1 and (seq[:-1] != 1).all()
        assert seq.min() >= 0 and seq.max() < info.dim
    batch = collate_sequences(splits.train)
    assert batch.x.dtype.is_floating_point is False and batch.x.shape[0] == 3
    assert batch.lengths.tolist() == [len(s) for s in splits.train]


def test_fortune_format_splits_entries_into_sentences(tmp_path):
    corpus = tmp_path / "fortunes"
    corpus.write_text("First one. Second\none!\n%\nThird?\n%\n", encoding="utf-8")
    splits = load_dataset(config("text", corpus, tmp_path,
                                 options={"valid_fraction": 0.0, "test_fraction": 0.0}))
    got = sorted(_decode(splits.info, s) for s in splits.train)
    assert got == ["first one . <eos>", "second one ! <eos>", "third ? <eos>"]


def test_length_limits_drop_sentences_and_count_them(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a\nb c\nd e f\ng h i j k\n", encoding="utf-8")
    splits = load_dataset(config("text", corpus, tmp_path, options={
        "min_length": 2, "max_length": 3, "valid_fraction": 0.0, "test_fraction": 0.0}))
    assert sorted(len(s) for s in splits.train) == [3, 4]  # tokens + <eos>
    assert splits.info.extra["dropped"]["train"] == {"short": 1, "long": 1}


def test_folder_skips_fortune_indexes_hidden_files_and_second_names(tmp_path):
    (tmp_path / "art").write_text("Art is long.\n%\nLife is short.\n", encoding="utf-8")
    (tmp_path / "art.dat").write_bytes(b"\x00\x00\x00\x02\xff\xfe binary strfile index")
    os.symlink(tmp_path / "art", tmp_path / "art.u8")
    (tmp_path / ".hidden").write_bytes(b"\xff\xfe")
    splits = load_dataset(config("text", tmp_path, tmp_path / "x",
                                 options={"valid_fraction": 0.0, "test_fraction": 0.0}))
    assert len(splits.train) == 2 and splits.info.extra["files"] == 1


def test_non_utf8_file_is_named_or_skipped_and_reported(tmp_path, caplog):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "good.txt").write_text("one two\nthree four\nfive six\n", encoding="utf-8")
    bad = folder / "latin1.txt"
    bad.write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    empty = folder / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=rf"{empty}: empty text file|{bad}: not UTF-8"):
        load_dataset(config("text", folder, tmp_path))
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(config("text", folder, tmp_path, skip_bad_files=True))
    assert [s.split(":")[0] for s in splits.skipped] == [str(empty), str(bad)]
    assert "skipped 2 bad file(s)" in caplog.text and str(bad) in caplog.text


def test_missing_text_corpus_says_what_to_provide(tmp_path):
    with pytest.raises(DataError, match=r"text: .*nope does not exist.*fortunes.*one sentence per line"):
        load_dataset(config("text", tmp_path / "nope", tmp_path))


def _aclimdb(root: Path, n=4):
    reviews = {}
    for split, labels in (("train", ("pos", "neg", "unsup")), ("test", ("pos", "neg"))):
        for label in labels:
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                text = (f"Review {i} of {label} {split}.<br /><br />A GREAT film, isn't it? "
                        f"I liked it{'!' * (i % 2)}")
                path = folder / f"{i}_{7 + i % 3}.txt"
                path.write_text(text, encoding="utf-8")
                reviews[path] = text
    (root / "aclImdb" / "imdb.vocab").write_text("the\n")
    return reviews


def test_imdb_removes_html_breaks_and_splits_reviews_into_sentences(tmp_path):
    _aclimdb(tmp_path)
    splits = load_dataset(config("imdb", tmp_path, tmp_path, options={"valid_fraction": 0.25}))
    info = splits.info
    assert info.extra["reviews"] == {"train": 9, "valid": 3, "test": 8}
    sentences = [_decode(info, s) for s in splits.train]
    assert len(sentences) == 9 * 3 and "<" not in " ".join(info.vocab[2:])
    assert "a great film , isn't it ? <eos>" in sentences
    assert any(s.startswith("review 0 of unsup train . <eos>") for s in sentences)
    assert [_decode(info, s) for s in splits.test][:3] == [
        "review 0 of pos <unk> . <eos>", "a great film , isn't it ? <eos>", "i liked it <eos>"]
    no_unsup = load_dataset(config("imdb", tmp_path / "aclImdb", tmp_path,
                                   options={"use_unsup": False, "valid_fraction": 0.25}))
    assert no_unsup.info.extra["reviews"] == {"train": 6, "valid": 2, "test": 8}


def test_imdb_cache_restores_vocabulary_and_sequences(tmp_path):
    _aclimdb(tmp_path)
    first = load_dataset(config("imdb", tmp_path, tmp_path))
    again = load_dataset(config("imdb", tmp_path, tmp_path))
    assert again.info == first.info and isinstance(again.info.vocab, tuple)
    for a, b in zip(first.train, again.train):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.int64


def test_imdb_missing_or_misshapen_folder_names_stanford_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"imdb: .*does not exist.*ai\.stanford\.edu.*train/\{pos,neg,unsup\}"):
        load_dataset(config("imdb", tmp_path / "none", tmp_path))
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    (tmp_path / "aclImdb" / "test").mkdir()
    with pytest.raises(DataError, match=r"missing train/neg/.*expected: aclImdb/"):
        load_dataset(config("imdb", tmp_path, tmp_path))


def test_text_options_are_validated(tmp_path):
    (tmp_path / "c.txt").write_text("a b\n")
    with pytest.raises(DataError, match=r"vocab_sise.*known: format, max_length"):
        load_dataset(config("text", tmp_path / "c.txt", tmp_path, options={"vocab_sise": 3}))
    with pytest.raises(DataError, match=r"max_length must be an integer >= 5"):
        load_dataset(config("text", tmp_path / "c.txt", tmp_path, options={"min_length": 5, "max_length": 2}))


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), imdb=st.booleans())
def test_fuzzed_text_files_load_or_give_a_clean_data_error(body, imdb):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if imdb:
            reviews = _aclimdb(root, n=2)
            target = sorted(reviews)[0]
        else:
            target = root / "corpus.txt"
        target.write_bytes(body)
        try:
            splits = load_dataset(config("imdb" if imdb else "text", root if imdb else target, root,
                                         options={"valid_fraction": 0.0}))
        except DataError as err:
            assert "\n" not in str(err)
        else:
            assert all(s.max() < splits.info.dim for s in splits.train)


@pytest.mark.skipif(not (FORTUNES / "fortunes").is_file() and not os.environ.get("CI"),
                    reason=f"real text corpus not installed: {FORTUNES} (apt-get install fortunes; "
                           "CI installs it and never skips)")
def test_real_fortunes_corpus_tokenises_into_sentences(tmp_path):
    splits = load_dataset(config("text", FORTUNES, tmp_path))
    info = splits.info
    assert len(splits.train) > 10000 and len(splits.valid) > 500 and splits.skipped == []
    assert info.dim == 10000 and info.vocab[:2] == ("<unk>", "<eos>") and "the" in info.vocab[:10]
    assert info.extra["train_unk_rate"] < 0.1
