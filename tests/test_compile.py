"""``--compile``: the per-step cell compiled with torch.compile computes what eager computes.

Compiling is slow on a loaded CPU, so every test here compiles chunks of 2 steps (production: 8)
and uses the same tiny cell sizes (emb 6, rnn 7, z 3, mlp 5): a graph compiled for one test is
reused by the next (dynamo keys its cache on the cell's code and the shapes of its inputs, the
batch dimension marked dynamic). Tolerances are float32's: inductor fuses and reorders the
pointwise work of a step, so compiled and eager results differ by rounding (measured ~5e-7
relative), never by more than 1e-5 relative here.
"""

import json

import pytest
import torch
from torch._dynamo.utils import counters

from pyro_zforcing import steps
from pyro_zforcing.build import build_objective
from pyro_zforcing.checkpoint import load_checkpoint, save_checkpoint
from pyro_zforcing.cli.main import main
from pyro_zforcing.cli.train import resume_overrides, train_parser
from pyro_zforcing.config import DataConfig, TrainConfig, to_dict
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.data.base import Batch, DataInfo
from pyro_zforcing.distributions import LatentTrajectory
from pyro_zforcing.infer import Weights
from pyro_zforcing.training.trainer import Trainer

from conftest import small_config

CELL = dict(emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)
RTOL, ATOL = 1e-5, 1e-6


def ragged_batch(lengths, dim=5, seed=0, *, first=False):
    """A padded Gaussian batch; with ``first``, each sequence continues a signal (``Batch.first``)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    steps = int(lengths.max())
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    x = torch.randn(len(lengths), steps, dim, generator=gen) * mask[..., None]
    return Batch(x, mask, lengths, first=torch.randn(len(lengths), dim, generator=gen) if first else None)


def loss_and_grads(objective, batch, weights, *, compiled):
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same noise for both paths
    with steps.compiled_steps(compiled):
        loss = objective(batch, weights)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def validation_off_and_small_chunks(monkeypatch):
    import pyro
    pyro.enable_validation(False)  # as in training; validation's checks are host-side only anyway
    monkeypatch.setattr(steps, "STEPS_PER_CALL", 2)


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
@pytest.mark.parametrize("model,conditioning,first", [("zforcing", "concat", False), ("zforcing", "cond-ln", False),
                                                      ("zforcing", "concat", True), ("vrnn", "concat", False),
                                                      ("vrnn", "concat", True), ("srnn", "concat", False),
                                                      ("dmm", "concat", False)])
def test_compiled_cell_gives_eager_loss_and_gradients_from_the_same_noise(model, conditioning, first, kl):
    torch.manual_seed(0)
    config = small_config(input_dim=5, emission="gaussian", model=model, z_conditioning=conditioning, **CELL)
    objective = build_objective(config, kl=kl)
    batch = ragged_batch([9, 6, 3], first=first)
    weights = Weights(kl=0.7, aux=0.1)
    eager_loss, eager_grads = loss_and_grads(objective, batch, weights, compiled=False)
    loss, grads = loss_and_grads(objective, batch, weights, compiled=True)
    assert objective._analytic_fits is (True if kl == "analytic" else None)  # the estimator asked for, no fallback
    assert torch.allclose(loss, eager_loss, rtol=RTOL, atol=ATOL), (loss, eager_loss)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-5), name


def test_no_recompilation_across_batches_of_varying_length_and_size():
    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=5, emission="gaussian", **CELL))
    loss_and_grads(objective, ragged_batch([8, 5]), Weights(aux=0.1), compiled=True)  # compiled (or reused) here
    graphs = counters["stats"]["unique_graphs"]
    # lengths leave 0 or 1 eager steps after the chunks of 2; batch sizes 2 to 5
    for i, lengths in enumerate([[12, 3, 7], [4, 4], [17, 2, 9, 11], [6, 6, 6, 6, 6], [3, 2, 2]]):
        batch = ragged_batch(lengths, seed=i)
        loss, grads = loss_and_grads(objective, batch, Weights(aux=0.1), compiled=True)
        eager_loss, _ = loss_and_grads(objective, batch, Weights(aux=0.1), compiled=False)
        assert torch.allclose(loss, eager_loss, rtol=RTOL, atol=ATOL)
    assert counters["stats"]["unique_graphs"] == graphs, "a batch of another length or size recompiled the cell"


def test_a_cell_that_reads_values_on_the_host_is_a_one_line_compile_error():
    class HostHead(torch.nn.Module):
        def forward(self, h_prev):
            if float(h_prev.sum()) > 1e9:  # a graph break: not a pure function of tensors
                h_prev = h_prev * 0
            return h_prev[:, :2], torch.ones_like(h_prev[:, :2])

    hidden = torch.zeros(2, 4)
    recurrence = steps.Recurrence(steps.StepFunction(lambda z_t, h: (torch.cat([z_t, z_t], -1),)), (hidden,))
    trajectory = LatentTrajectory(head=HostHead(), context=None, mask=torch.ones(2, 3, dtype=torch.bool), z_dim=2,
                                  states=None, recurrence=lambda: recurrence, remember=lambda z, h: None)
    with steps.compiled_steps(), pytest.raises(steps.CompileUnavailable, match="run without --compile") as error:
        trajectory.rsample()
    assert "\n" not in str(error.value)


def test_compile_needs_a_cxx_compiler_on_cpu_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    code = main(["--compile", "--max-steps", "1", "--out", str(tmp_path / "run"), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--compile" in lines[0] and "C++ compiler" in lines[0] and "no-such-compiler" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before the run directory was claimed


@pytest.fixture
def tiny_digits(digits):
    return SequenceSplits(digits.info, digits.train[:24], digits.valid[:8], digits.test[:8])


def make_trainer(out_dir, splits, **train):
    config = TrainConfig(batch_size=8, log_every=1, aux_start=0.01, aux_end=0.01, **train)
    return Trainer.create(data_config=DataConfig(), train_config=config, out_dir=out_dir, model_sizes=CELL,
                          quiet=True, splits=splits)


def step_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "step"}


def test_compiled_training_overlaps_eager_and_resumes_with_compile_on_or_off(tmp_path, tiny_digits):
    # 24 sequences / batch 8 = 3 steps per epoch; the compiled run stops at step 4 and is resumed
    make_trainer(tmp_path / "eager", tiny_digits, epochs=2, max_steps=6).fit()
    make_trainer(tmp_path / "compiled", tiny_digits, epochs=2, max_steps=4, compile=True).fit()
    resumed = Trainer.resume(tmp_path / "compiled", quiet=True, splits=tiny_digits, max_steps=6)
    assert resumed.config.compile
    resumed.fit()
    eager, compiled = step_losses(tmp_path / "eager"), step_losses(tmp_path / "compiled")
    assert sorted(compiled) == list(range(1, 7))
    for step in eager:  # the same curve: float32 rounding only, never a different trajectory
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4), step
    state = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    assert state["train_config"].compile
    off = Trainer.resume(tmp_path / "compiled", quiet=True, splits=tiny_digits, epochs=3, max_steps=7, compile=False)
    assert not off.config.compile
    off.fit()
    assert step_losses(tmp_path / "compiled")[7] == pytest.approx(step_losses(tmp_path / "compiled")[6], rel=0.2)


def test_resume_may_turn_the_speed_flags_on_or_off():
    parser = train_parser()
    assert resume_overrides(parser, ["--resume", "RUN", "--compile"]) == {"compile": True}
    assert resume_overrides(parser, ["--resume", "RUN", "--no-compile", "--no-cuda-graphs"]) == \
        {"compile": False, "cuda_graphs": False}


def test_checkpoints_from_before_the_speed_flags_load_with_them_off(tmp_path):
    train = to_dict(TrainConfig())
    for key in ("compile", "cuda_graphs", "length_bucket"):
        del train[key]
    objective = build_objective(small_config(**CELL))
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"model_config": to_dict(small_config(**CELL)), "data_config": to_dict(DataConfig()),
                           "train_config": train, "data_info": DataInfo("digits", "bernoulli", 1, "pixel").to_dict(),
                           "objective": objective.state_dict()})
    loaded = load_checkpoint(path)["train_config"]
    assert not loaded.compile and not loaded.cuda_graphs and loaded.length_bucket == TrainConfig().length_bucket
