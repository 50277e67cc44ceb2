"""Samples (WAV, PNG, text), generation with given latents and primes, figures, and the CLI."""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile
import torch

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.cli.train import write_training_plots
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import SequenceSplits, collate_sequences
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.evaluation.plots import GAP_VS_KL, KL_PER_STEP, LEARNING_CURVES, plot_run
from pyro_zforcing.evaluation.samples import (decoded_length, interpolate, interpolation_steps, primed_continuations,
                                              sample_all, waveform, words, write_wav)
from pyro_zforcing.models.base import PartialLatents
from pyro_zforcing.build import build_objective
from pyro_zforcing.training.trainer import Trainer

from conftest import small_config

SPEECH = DataInfo(name="toy-speech", emission="gaussian", dim=5, unit="sample", units_per_step=5,
                  sample_rate=8000, mean=0.01, std=0.2, extra={"sequence_unit": "utterance"})
TEXT = DataInfo(name="toy-text", emission="categorical", dim=6, unit="word",
                vocab=("<unk>", "<eos>", "the", "cat", "sat", "down"), extra={"eos_id": 1, "sequence_unit": "sentence"})


def test_wav_is_denormalised_at_the_data_sample_rate(tmp_path):
    frames = np.random.RandomState(0).randn(12, 5).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", frames, SPEECH)
    audio, rate = soundfile.read(str(path))
    assert rate == 8000 and audio.shape == (60,)
    expected = np.clip(frames.reshape(-1) * 0.2 + 0.01, -1, 1)
    assert np.allclose(audio, expected, atol=1.0 / 32768 + 1e-6)
    assert np.allclose(waveform(frames, SPEECH)[:5], frames[0] * 0.2 + 0.01)


def test_words_stop_at_end_of_sentence():
    assert words([2, 3, 4, 1, 5, 5], TEXT) == "the cat sat"
    assert words([5, 0], TEXT) == "down <unk>"


@pytest.mark.parametrize("z_conditioning", ["concat", "cond-ln"])
def test_mean_decoding_of_given_latents_matches_the_fused_forward_pass(float64, digits, z_conditioning):
    torch.manual_seed(1)
    objective = build_objective(small_config(input_dim=5, emission="gaussian", z_conditioning=z_conditioning), "backward")
    model = objective.model
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    batch = collate_sequences([x[0].numpy(), x[1].numpy()]).to("cpu", torch.float64)
    h = model.forward_states(batch, z)  # h_{0:T} over the real inputs, one fused LSTM call
    out = model.generate(2, 6, prime=x[:, :5], z=z, mean=True)
    assert torch.equal(out[:, :5], x[:, :5])  # the prime is kept as is
    assert torch.allclose(out[:, 5], model.emission.step_dist(h[:, 6]).mean, atol=1e-10)
    again = model.generate(2, 6, prime=x[:, :5], z=z, mean=True)
    assert torch.equal(out, again)  # decoding a given z is deterministic


def test_interpolation_encodes_whole_sequences_and_its_end_points_decode_their_own_trajectories(float64, digits):
    torch.manual_seed(2)
    objective = build_objective(small_config(), "backward")
    first, second = digits.test[0], digits.test[1][:40]
    assert len(first) == 64
    encoded = []
    proposal = objective.guide.proposal
    objective.guide.proposal = lambda batch: encoded.append(batch.lengths.tolist()) or proposal(batch)
    torch.manual_seed(7)
    alphas, decoded = interpolate(objective, first, second, num=3)
    assert encoded == [[64, 40]]  # both encoded whole, in one batch
    assert alphas.tolist() == [0.0, 0.5, 1.0] and decoded.shape == (3, 64, 1)  # longer than the shorter input
    torch.manual_seed(7)
    z = proposal(collate_sequences([first, second]).to("cpu", torch.float64)).sample()
    # a = 0: the first sequence's own trajectory, decoded as any given z is
    assert torch.allclose(decoded[0], objective.model.generate(1, 64, z=z[:1], mean=True)[0], atol=1e-12)
    # a = 1: the second's own 40 steps (decoding is causal: these steps read z_{1:40} only) ...
    assert torch.allclose(decoded[2, :40], objective.model.generate(1, 40, z=z[1:2, :40], mean=True)[0], atol=1e-12)
    # ... then the prior's mean, as the second decoded alone past its end
    alone = objective.model.generate(1, 64, z=PartialLatents(z[1:2, :40], torch.ones(1, 40)), mean=True)
    assert torch.allclose(decoded[2], alone[0], atol=1e-12)
    assert not torch.allclose(decoded[0], decoded[2])
    assert torch.all((decoded >= 0) & (decoded <= 1))  # pixel probabilities


def test_partial_latents_fill_what_they_do_not_give_with_the_prior_mean(float64):
    torch.manual_seed(0)
    objective = build_objective(small_config(), "backward")
    given = torch.randn(2, 3, 3)
    weight = torch.tensor([[1.0, 0.0, 0.25], [1.0, 1.0, 1.0]])
    loc = torch.randn(2, 3)
    partial = PartialLatents(given, weight)
    assert torch.equal(partial.at(0, lambda: (loc, None)), given[:, 0])
    assert torch.allclose(partial.at(1, lambda: (loc, None))[0], given[0, 1] + loc[0])
    assert torch.allclose(partial.at(2, lambda: (loc, None))[0], given[0, 2] + 0.75 * loc[0])
    assert torch.equal(partial.at(5, lambda: (loc, None)), loc)
    # given whole (weight 1 everywhere) it decodes as the plain tensor does
    z = torch.randn(2, 6, 3)
    plain = objective.model.generate(2, 6, z=z, mean=True)
    assert torch.equal(objective.model.generate(2, 6, z=PartialLatents(z, torch.ones(2, 6)), mean=True), plain)
    with pytest.raises(ValueError, match="weight"):
        PartialLatents(given, torch.ones(2, 4))


def test_text_interpolation_decodes_past_the_longer_sentence_and_reads_to_eos(tmp_path):
    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=6, emission="categorical"), "backward")
    short, long = np.array([2, 3, 1]), np.array([2, 5, 5, 3, 4, 1])
    assert interpolation_steps(TEXT, [3, 6]) == 12
    _, decoded = interpolate(objective, short, long, num=3, steps=12)
    assert decoded.shape == (3, 12)
    assert decoded_length([2, 3, 1, 4], TEXT) == 3 and decoded_length([2, 3], TEXT) == 2
    written = sample_all(objective, TEXT, [short, long], tmp_path, num=1, steps=4, prime_steps=1, interpolation=3)
    lines = written["interpolation"][0].read_text().splitlines()
    assert lines[0] == "real #0: the cat" and lines[-1] == "real #1: the down down cat sat"


def test_primed_continuation_keeps_the_prime_and_checks_its_length(digits):
    objective = build_objective(small_config(), "backward")
    out = primed_continuations(objective, digits.test[:3], prime_steps=20, steps=64)
    assert out.shape == (3, 64, 1)
    for i in range(3):
        assert torch.equal(out[i, :20], torch.as_tensor(digits.test[i][:20]))
    assert set(out[:, 20:].unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="--prime-steps"):
        primed_continuations(objective, digits.test[:1], prime_steps=64, steps=64)


@pytest.mark.parametrize("kind", ["image", "speech", "text"])
def test_sample_all_writes_what_the_data_is_heard_or_seen_as(tmp_path, digits, kind):
    torch.manual_seed(0)
    if kind == "image":
        info, sequences, config = digits.info, digits.test[:4], small_config()
    elif kind == "speech":
        info, config = SPEECH, small_config(input_dim=5, emission="gaussian")
        sequences = [np.random.RandomState(i).randn(n, 5).astype(np.float32) for i, n in enumerate((30, 25, 40))]
    else:
        info, config = TEXT, small_config(input_dim=6, emission="categorical")
        sequences = [np.array([2, 3, 4, 5, 1]), np.array([3, 4, 2, 1]), np.array([2, 5, 5, 3, 4, 1])]
    objective = build_objective(config, "backward")
    written = sample_all(objective, info, sequences, tmp_path, num=2, steps=10 if kind != "image" else None,
                         prime_steps=3, interpolation=3)
    assert set(written) == {"samples", "primed", "interpolation"}
    paths = [p for group in written.values() for p in group]
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    if kind == "image":
        assert {p.name for p in paths} == {"samples.png", "primed.png", "interpolation.png"}
        assert mpimg.imread(paths[0]).ndim == 3
    elif kind == "speech":
        wavs = [p for p in paths if p.suffix == ".wav"]
        assert len(wavs) == 2 + 2 + 5  # samples, primed, interpolation (3 points + 2 real ends)
        assert soundfile.info(str(wavs[0])).samplerate == 8000
        assert soundfile.info(str(wavs[0])).frames == 10 * 5
    else:
        lines = (tmp_path / "samples.txt").read_text().splitlines()
        assert len(lines) == 2 and all(set(line.split(": ", 1)[1].split()) <= set(TEXT.vocab) for line in lines)
        primed = (tmp_path / "primed.txt").read_text().splitlines()
        assert primed[0].startswith("continued 0: the cat sat ||") and primed[1].strip().startswith("real:")


def write_fake_run(run_dir):
    run_dir.mkdir()
    records = [{"kind": "epoch", "step": 0, "epoch": 0, "valid_elbo": -50.0, "valid_kl": 1.0}]
    for step in range(1, 21):
        records.append({"kind": "step", "step": step, "epoch": step // 10, "elbo": -50 + step, "kl": 1 + 0.1 * step,
                        "aux": 100.0 * step, "kl_weight": min(1.0, 0.2 + 0.05 * step), "aux_weight": 5e-4})
        if step % 10 == 0:
            records.append({"kind": "epoch", "step": step, "epoch": step // 10, "valid_elbo": -45.0 + step / 2,
                            "valid_kl": 1.5})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_plot_run_draws_learning_curves_and_the_evaluation_figures(tmp_path):
    run_dir = tmp_path / "run"
    write_fake_run(run_dir)
    assert [p.name for p in plot_run(run_dir)] == [LEARNING_CURVES]
    gen = np.random.RandomState(0)
    kl = gen.gamma(2.0, size=30)
    report = {"dataset": "toy", "split": "test", "num_sequences": 30, "iwae_samples": 25,
              "units": {"sequence": "image", "step": "pixel", "unit": "pixel", "units_per_step": 1},
              "kl_per_step": {"mean": list(gen.rand(8)), "std": list(gen.rand(8) / 4), "count": [30] * 8},
              "per_sequence": {"elbo": list(-40 - kl), "iwae": list(-40 - kl / 2), "kl": list(kl),
                               "kl_analytic": list(kl), "rec": list(-40 + 0 * kl)}}
    (run_dir / "eval-test.json").write_text(json.dumps(report))
    written = plot_run(run_dir)
    assert [p.name for p in written] == [LEARNING_CURVES, f"{KL_PER_STEP}-test.png", f"{GAP_VS_KL}-test.png"]
    for path in written:
        image = mpimg.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 500
    with pytest.raises(FileNotFoundError, match="nothing to plot"):
        plot_run(tmp_path)


def test_cli_trains_evaluates_samples_and_plots_a_run(tmp_path, digits, capsys):
    splits = SequenceSplits(digits.info, digits.train[:24], digits.valid[:8], digits.test[:8])
    config = TrainConfig(batch_size=8, epochs=1, log_every=1)
    trainer = Trainer.create(data_config=DataConfig(), train_config=config, out_dir=tmp_path / "run",
                             model_sizes=dict(emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5), quiet=True, splits=splits)
    trainer.fit()
    write_training_plots(trainer.out_dir)
    assert (tmp_path / "run" / LEARNING_CURVES).exists()
    checkpoint = str(tmp_path / "run" / "checkpoints" / "last.pt")
    assert zforcing(["evaluate", "--checkpoint", checkpoint, "--iwae-samples", "3", "--quiet",
                     "--split", "valid", "--batch-size", "100"]) == 0
    assert zforcing(["evaluate", "--checkpoint", checkpoint, "--iwae-samples", "2", "--quiet", "--no-plots"]) == 0
    report = json.loads((tmp_path / "run" / "eval-valid.json").read_text())
    assert report["split"] == "valid" and report["num_sequences"] == len(digits.valid)
    test_report = json.loads((tmp_path / "run" / "eval-test.json").read_text())
    assert test_report["split"] == "test" and test_report["iwae_samples"] == 2
    assert "valid split" in (tmp_path / "run" / "eval-valid.md").read_text()
    assert "test split" in (tmp_path / "run" / "eval-test.md").read_text()
    assert report["per_sequence_mean"]["iwae"] >= report["per_sequence_mean"]["elbo"]
    assert "| IWAE (K=3) |" in capsys.readouterr().out
    assert zforcing(["sample", "--checkpoint", checkpoint, "-n", "2", "--interpolate", "3", "--quiet",
                     "--out", str(tmp_path / "samples")]) == 0
    assert (tmp_path / "samples" / "primed.png").exists()
    assert zforcing(["plot", str(tmp_path / "run"), "--quiet"]) == 0
    assert (tmp_path / "run" / f"{GAP_VS_KL}-valid.png").exists()
    assert (tmp_path / "run" / f"{GAP_VS_KL}-test.png").exists()
    assert zforcing(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
