"""Folder walks of the audio, blizzard and text loaders never loop and report unreadable folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

from pyro_zforcing.data.common import walk_files

LOADER = """
import json, sys
from pyro_zforcing.config import DataConfig
from pyro_zforcing.data import load_dataset
counts = {}
for root in sys.argv[1:3]:
    for dataset, folder in (("audio", "audio"), ("blizzard", "audio"), ("text", "text")):
        splits = load_dataset(DataConfig(dataset=dataset, data_dir=f"{root}/{folder}", cache_dir=sys.argv[3]))
        counts[f"{root} {dataset}"] = [[len(s) for s in split] for split in (splits.train, splits.valid, splits.test)]
print(json.dumps(counts))
"""


def data_folders(root: Path, *, loops: bool) -> Path:
    """``root/audio`` (ten utterances, half in a subfolder) and ``root/text`` (one corpus file);
    with ``loops``, each folder holds two symlinks to ``.`` and its subfolder one to ``..``."""
    rng = np.random.default_rng(0)
    for name in ("audio", "text"):
        (root / name / "deeper").mkdir(parents=True)
        if loops:
            os.symlink(".", root / name / "again")
            os.symlink(".", root / name / "and-again")
            os.symlink("..", root / name / "deeper" / "up")
    for i in range(10):
        folder = root / "audio" / ("deeper" if i % 2 else "")
        samples = (0.1 * rng.standard_normal(8000 + 400 * i)).astype(np.float32)
        soundfile.write(str(folder / f"utt{i}.wav"), samples, 16000, subtype="PCM_16")
    (root / "text" / "corpus.txt").write_text("".join(f"sentence number {i} is here\n" for i in range(40)))
    return root


def test_symlink_loops_in_data_folders_end_and_give_the_data_of_a_loop_free_copy(tmp_path):
    looping = data_folders(tmp_path / "looping", loops=True)
    plain = data_folders(tmp_path / "plain", loops=False)
    assert len(walk_files(looping / "audio", lambda p: p.suffix == ".wav")) == 10
    done = subprocess.run([sys.executable, "-c", LOADER, str(looping), str(plain), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    for dataset in ("audio", "blizzard", "text"):
        assert counts[f"{looping} {dataset}"] == counts[f"{plain} {dataset}"], dataset
    assert sum(len(split) for split in counts[f"{looping} text"]) == 40


def test_unreadable_folder_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch, caplog):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.txt").write_text("a\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "b.txt").write_text("b\n")
    scandir = os.scandir

    def refusing(path="."):
        if Path(path) == locked:  # what a folder without read permission does (root may read any)
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with caplog.at_level("WARNING"):
        found = walk_files(tmp_path, lambda p: True)
    assert found == [tmp_path / "ok" / "a.txt"]
    assert f"{locked}: cannot read folder, skipped (Permission denied)" in caplog.text
