"""``evaluate --protocol paper`` against a hand computation of the authors' eval_timit.py on a
small TIMIT tree of sox-made SPHERE files: windows of 40 targets, the first frame of each
utterance only an input, states from zero in every window, the backward LSTM over the
window's padding, one sample, analytic KL, and their average total / (32 * (N // 32 + 1))."""

import json
import math

import numpy as np
import pytest
import torch

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.config import ModelConfig
from pyro_zforcing.data import load_dataset
from pyro_zforcing.evaluation.paper_protocol import evaluate_paper, paper_windows
from pyro_zforcing.build import build_objective
from test_data_builders import config
from test_recipes import TINY, requires_sox, sox_timit

EPS = 0.7  # the guide's standard-normal noise, fixed so that the hand computation can use it too


def hand_nll_kl(objective, frames: np.ndarray, padded: int) -> float:
    """NLL + KL of one utterance ``frames: (T, D)`` summed over its windows, step by step in float64."""
    model, guide = objective.model, objective.guide
    frames = torch.as_tensor(frames, dtype=torch.float64)
    inputs, targets = frames[:-1], frames[1:]  # timit_for_srnn.py create_test_set: u = vec[:-1], x = vec[1:]
    total = 0.0
    for start in range(0, padded, 40):  # eval_timit.py: for i in range(0, x.shape[0], length)
        length = min(40, padded - start)
        real = max(0, min(length, len(targets) - start))
        if real == 0:
            continue
        y = torch.zeros(length, frames.shape[1], dtype=torch.float64)
        y[:real] = targets[start:start + real]
        # backward LSTM from zero over the reversed window, zero padding first (no packing)
        reversed_states, _ = model.bwd.lstm(model.embed(y.flip(0))[None])
        b = reversed_states[0].flip(0)
        u = model.embed(inputs[start:start + real])
        zs, h = [], torch.zeros(1, model.config.rnn_dim, dtype=torch.float64)
        for t in range(real):
            p_loc, p_scale = model.prior(h)
            q_loc, q_scale = guide.posterior(h, b[t][None])
            z = q_loc + EPS * q_scale
            kl = (torch.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5).sum()
            zs.append(z)
            h = model.fwd.states(u[None, :t + 1], torch.cat(zs)[None])[:, -1]  # h_t from h_0 = 0
            out = model.emission.step_dist(h)
            loc, scale = out.loc[0], out.scale[0]
            nll = (0.5 * math.log(2 * math.pi) + torch.log(scale) + (y[t] - loc) ** 2 / (2 * scale ** 2)).sum()
            total += float(nll + kl)
    return total


@pytest.fixture
def timit_and_model(tmp_path, monkeypatch):
    root = sox_timit(tmp_path / "timit")  # test utterances of 24, 44 and 93 frames
    splits = load_dataset(config("timit", root, tmp_path))
    torch.manual_seed(0)
    objective = build_objective(ModelConfig(input_dim=200, emission="gaussian", emb_dim=5, rnn_dim=6, z_dim=3,
                                            mlp_dim=4), "backward").double()
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: real_randn(*a, **k).fill_(EPS))
    return splits, objective


@requires_sox
def test_paper_protocol_equals_a_hand_computation_of_eval_timit(timit_and_model):
    splits, objective = timit_and_model
    test = splits.test
    assert sorted(len(s) for s in test) == [24, 44, 93]
    with torch.no_grad():
        expected = np.array([hand_nll_kl(objective, s, max(len(s) for s in test) - 1) for s in test])
    result = evaluate_paper(objective, test, splits.info, dtype=torch.float64, rows=2)
    np.testing.assert_allclose(result.nll_kl, expected, rtol=1e-10)
    assert result.padded_count == 32  # load.py: ((3 // 32) + 1) * 32 rows
    assert result.script_value() == pytest.approx(expected.sum() / 32, rel=1e-12)
    report = result.to_dict()
    assert report["table_bound"] == -report["script_nll"]
    assert report["mean_bound"] == pytest.approx(-expected.mean(), rel=1e-12)


def test_windows_cover_every_target_once_and_start_from_the_frame_before():
    sequences = [np.arange(n, dtype=np.float32)[:, None] for n in (1, 5, 44, 93)]
    windows = paper_windows(sequences, window=40)
    lengths = sorted({w.length for w in windows})
    assert lengths == [12, 40]  # padded length 92 = 40 + 40 + 12
    for i, frames in enumerate(sequences):
        mine = [w for w in windows if w.sequence == i]
        covered = np.concatenate([w.targets[:, 0] for w in mine]) if mine else np.zeros(0)
        assert covered.tolist() == list(range(1, len(frames)))  # every frame but the first, once
        for w in mine:
            assert w.first[0] == w.targets[0, 0] - 1


@requires_sox
def test_evaluate_protocol_both_writes_both_reports(tmp_path):
    root = sox_timit(tmp_path / "timit")
    out = tmp_path / "run"
    common = ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]
    assert zforcing(["--preset", "timit", *common, *TINY, "--max-steps", "1", "--out", str(out), "--quiet"]) == 0
    assert zforcing(["evaluate", "--protocol", "both", "--checkpoint", str(out / "checkpoints" / "last.pt"),
                     "--iwae-samples", "2", "--no-plots", "--quiet"]) == 0
    paper = json.loads((out / "eval_paper-test.json").read_text())
    ours = json.loads((out / "eval-test.json").read_text())
    assert paper["num_sequences"] == ours["num_sequences"] == 3
    assert paper["padded_sequences"] == 32 and math.isfinite(paper["table_bound"])
    assert (out / "eval_paper-test.md").read_text().startswith("timit test split, paper protocol")


def test_a_given_first_input_travels_with_the_batch_and_replaces_the_start_frame():
    from pyro_zforcing.data import collate_sequences

    batch = collate_sequences([np.ones((3, 2), np.float32), np.full((2, 2), 2, np.float32)])
    batch.first = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    copies = batch.repeat(3).to("cpu", torch.float64)
    assert copies.first.dtype == torch.float64 and copies.first[:, 0].tolist() == [5, 7] * 3
    objective = build_objective(ModelConfig(input_dim=2, emission="gaussian", emb_dim=3, rnn_dim=4, z_dim=2,
                                            mlp_dim=3), "backward")
    inputs, targets = objective.model.embedded(batch)
    torch.testing.assert_close(inputs[:, 0], objective.model.embed(batch.first))
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])
