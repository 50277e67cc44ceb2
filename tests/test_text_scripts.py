"""The text study's scripts, run on a small study of a generated corpus: the table's perplexities
are exp(-bound per word) of each run's result, and the interpolations pair short with long test
sentences and report the length correlations."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_zforcing.cli.main import main as zforcing

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
WORDS = "the cat dog sat ran on a mat far away red is and".split()


@pytest.fixture(scope="module")
def text_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-study")
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=int(n))) + " ." for n in rng.integers(1, 15, 1200)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "study.json").write_text(json.dumps({"variants": {"elbo": {"aux_weight": 0.0}, "aux": {}}}))
    code = zforcing(["ablate", "--study", str(root / "study.json"), "--dataset", "text", "--data-dir",
                     str(root / "corpus.txt"), "--cache-dir", str(root / "cache"), "--seeds", "1", "--emb-dim", "4",
                     "--rnn-dim", "6", "--z-dim", "2", "--mlp-dim", "6", "--batch-size", "16", "--max-steps", "5",
                     "--iwae-samples", "2", "--jobs", "1", "--study-dir", str(root / "study"), "--quiet"])
    assert code == 0
    return root


def run_script(name: str, args, capsys) -> str:
    saved = sys.argv
    sys.argv = [name, *map(str, args)]
    try:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    finally:
        sys.argv = saved
    return capsys.readouterr().out


def test_study_table_reads_every_run_and_its_perplexities_are_exp_of_minus_the_bounds(text_study, capsys):
    out = run_script("text_study_table.py", [text_study / "study"], capsys)
    rows = {line.split(" | ")[0].strip("| "): line.strip("|").split(" | ") for line in out.splitlines()
            if line.startswith(("| elbo ", "| aux "))}
    assert set(rows) == {"elbo", "aux"}
    for variant, cells in rows.items():
        result = json.loads((text_study / "study" / f"{variant}-seed0" / "result.json").read_text())
        assert float(cells[1]) == pytest.approx(result["test_elbo"], abs=0.005)
        assert float(cells[3]) == pytest.approx(math.exp(-result["test_elbo_per_unit"]), abs=0.05)
        assert float(cells[4]) == pytest.approx(math.exp(-result["test_iwae_per_unit"]), abs=0.05)
        assert float(cells[4]) <= float(cells[3]) + 0.05  # IWAE >= ELBO: its perplexity is no higher
        assert cells[-1].strip() == "max_steps 1/1"


@pytest.mark.parametrize("decode", ["greedy", "sample"])
def test_interpolations_pair_short_with_long_sentences_and_report_the_length_correlations(text_study, capsys, decode):
    out = run_script("text_interpolations.py", [text_study / "study" / "aux-seed0" / "checkpoints" / "best.pt",
                                                "--cache-dir", text_study / "cache", "--decode", decode,
                                                "--repeats", "2"], capsys)
    pairs = [line for line in out.splitlines() if line.startswith("pair ")]
    assert len(pairs) == 10
    for line in pairs:
        short, long = line.split(": real #", 1)[1].split(" || real #")
        assert len(short.split(": ", 1)[1].split()) + 1 <= 6 and len(long.split(": ", 1)[1].split()) + 1 >= 12
    assert sum(line.startswith("  a=") for line in out.splitlines()) == 10 * 5  # the first repeat is printed
    correlations = [line for line in out.splitlines() if line.startswith("Spearman rho")]
    assert len(correlations) == 2
    assert all("over 100 decodings" in line or "undefined" in line for line in correlations)
