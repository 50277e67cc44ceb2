"""``--cuda-graphs``: a captured, replayed update computes what the eager update computes.

What can be checked without a GPU runs everywhere: the sync-free loss equals Trace_ELBO's, the
guarded update (the body that is captured) equals the trainer's eager update and skips a
non-finite one on the device, padding a batch to its length bucket leaves every sequence's terms
unchanged, and the flag is refused off CUDA. The capture itself needs a CUDA device: those tests
skip here and run with ``python -m pytest tests/test_cuda_graphs.py`` on a GPU machine.
"""

import copy
import json

import pyro.poutine as poutine
import pytest
import torch

from pyro_zforcing import distributions
from pyro_zforcing.build import build_objective
from pyro_zforcing.cli.main import main
from pyro_zforcing.config import KL_ESTIMATORS, DataConfig, TrainConfig
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.data.base import Batch
from pyro_zforcing.graphs import (GraphedBounds, GraphedUpdates, UpdateFlags, bucket_steps, guarded_update,
                                  padded)
from pyro_zforcing.infer import Weights, importance_terms, sequence_terms
from pyro_zforcing.models.base import LATENT_SITE, OBS_SITE
from pyro_zforcing.training.trainer import Trainer, optimizer_for_graphs

from conftest import small_config

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs are captured on a CUDA device and this machine has "
                                                 "none; run python -m pytest tests/test_cuda_graphs.py on a GPU")
MODELS = [("zforcing", "backward"), ("zforcing", "filtering"), ("vrnn", "filtering"), ("srnn", "smoothing"),
          ("srnn", "filtering"), ("dmm", "combiner"), ("storn", "recognition"), ("rnn", "exact")]
SIZES = dict(emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)


def ragged_batch(lengths, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    steps = int(lengths.max())
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    x = torch.randn(len(lengths), steps, dim, generator=gen) * mask[..., None]
    return Batch(x, mask, lengths)


def objective_for(model, guide, *, kl="analytic", **sizes):
    torch.manual_seed(0)
    return build_objective(small_config(input_dim=4, emission="gaussian", model=model, **{**SIZES, **sizes}), guide,
                           kl=kl)


@pytest.fixture(autouse=True)
def validation_off():
    import pyro
    pyro.enable_validation(False)  # as in training; --cuda-graphs refuses validation


@pytest.mark.parametrize("kl", KL_ESTIMATORS)
@pytest.mark.parametrize("model,guide", MODELS)
def test_the_sync_free_loss_equals_the_objective_in_value_and_gradients(float64, model, guide, kl):
    objective = objective_for(model, guide, kl=kl)
    batch = ragged_batch([9, 5, 2])
    grads = []
    for loss_of, weights in ((objective, Weights(kl=0.3, aux=0.2, bwd=0.1)),
                             (objective.reparameterised_loss,
                              Weights(kl=torch.tensor(0.3), aux=torch.tensor(0.2), bwd=torch.tensor(0.1)))):
        objective.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        loss = loss_of(batch, weights)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}))
    (expected, expected_grads), (got, got_grads) = grads
    assert objective._analytic_fits is (True if kl == "analytic" else None)  # the estimator asked for, no fallback
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-10), (got, expected)
    assert got_grads.keys() == expected_grads.keys()
    for name in got_grads:
        assert torch.allclose(got_grads[name], expected_grads[name], rtol=1e-10, atol=1e-12), name


def reached(objective, batch, weights):
    """The parameters a loss reaches (what Adam steps eagerly, where grad is not None)."""
    objective.zero_grad(set_to_none=True)
    objective.reparameterised_loss(batch, weights).backward()
    params = [p for p in objective.parameters() if p.grad is not None]
    objective.zero_grad(set_to_none=True)
    return params


def eager_update(objective, optimizer, batch, weights, clip_norm):
    """The trainer's eager update (Trainer._train_step without its host-side check)."""
    optimizer.zero_grad(set_to_none=True)
    loss = objective(batch, weights)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), clip_norm)
    optimizer.step()
    return loss.detach(), norm


@pytest.mark.parametrize("kl", KL_ESTIMATORS)
def test_the_guarded_update_is_the_eager_update_and_skips_a_non_finite_one_on_the_device(float64, kl):
    eager = objective_for("zforcing", "backward", kl=kl)
    guarded = copy.deepcopy(eager)
    eager_opt = torch.optim.Adam(eager.parameters(), lr=1e-2, eps=1e-5)
    guarded_opt = torch.optim.Adam(guarded.parameters(), lr=1e-2, eps=1e-5)
    weights = Weights(kl=0.5, aux=0.1)
    batches = [ragged_batch([7, 4], seed=1), ragged_batch([5, 5], seed=2)]
    params = reached(guarded, batches[0], weights)
    for p in params:
        p.grad = torch.zeros_like(p)
    flags = UpdateFlags(torch.device("cpu"), next_step=1)
    for batch in batches:
        torch.manual_seed(3)
        loss, norm = eager_update(eager, eager_opt, batch, weights, clip_norm=1.0)  # clipping engaged
        torch.manual_seed(3)
        got_loss, got_norm = guarded_update(guarded, guarded_opt, params, batch, weights, clip_norm=1.0, flags=flags)
        assert torch.allclose(got_loss, loss, atol=1e-10) and torch.allclose(got_norm, norm, atol=1e-10)
    for (name, a), b in zip(eager.named_parameters(), guarded.parameters()):
        assert torch.allclose(a, b, atol=1e-12), name
    assert flags.first_skipped() is None

    before = {name: p.detach().clone() for name, p in guarded.named_parameters()}
    state = copy.deepcopy(guarded_opt.state_dict()["state"])
    poisoned = ragged_batch([6, 3], seed=4)
    poisoned.x[0, 2, 1] = float("nan")
    guarded_update(guarded, guarded_opt, params, poisoned, weights, clip_norm=1.0, flags=flags)
    for name, p in guarded.named_parameters():
        assert torch.equal(p, before[name]), name
    for key, values in guarded_opt.state_dict()["state"].items():
        for field, value in values.items():
            assert torch.equal(value, state[key][field]), (key, field)
    assert flags.first_skipped() == (3, 1)  # the third update was skipped, the only one
    guarded_update(guarded, guarded_opt, params, batches[0], weights, clip_norm=1.0, flags=flags)
    assert flags.first_skipped() == (3, 1)
    assert not all(torch.equal(p, before[name]) for name, p in guarded.named_parameters())


@pytest.mark.parametrize("model,guide", MODELS)
def test_padding_to_a_length_bucket_leaves_every_sequence_terms_unchanged(float64, model, guide):
    objective = objective_for(model, guide)
    batch = ragged_batch([9, 5, 2])
    bucket = bucket_steps(batch.num_steps, 8)
    assert bucket == 16 and bucket_steps(9, 8, longest=12) == 12 and bucket_steps(40, 16, longest=40) == 40
    longer = padded(batch, steps=bucket)
    assert longer.num_steps == 16 and torch.equal(longer.lengths, batch.lengths)
    assert torch.equal(longer.mask.sum(1), batch.lengths)
    z_dim = objective.model.config.z_dim
    z = torch.randn(batch.batch_size, batch.num_steps, z_dim)
    z_longer = torch.cat([z, torch.randn(batch.batch_size, bucket - batch.num_steps, z_dim)], dim=1)
    terms = [scored(objective, batch, z), scored(objective, longer, z_longer)]
    for got, expected in zip(terms[1], terms[0]):
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-10)


def scored(objective, batch, z):
    """Per-sequence log p(y | z), log p(z) and log q(z | y) of a given trajectory ``z``."""
    objective.model.forget()
    model_trace = poutine.trace(poutine.condition(objective.model, data={LATENT_SITE: z})).get_trace(batch)
    model_trace.compute_log_prob()
    if not objective.model.latent_sites:
        return (model_trace.nodes[OBS_SITE]["log_prob"],)
    guide_trace = poutine.trace(poutine.condition(objective.guide, data={LATENT_SITE: z})).get_trace(batch)
    guide_trace.compute_log_prob()
    return (model_trace.nodes[OBS_SITE]["log_prob"], model_trace.nodes[LATENT_SITE]["log_prob"],
            guide_trace.nodes[LATENT_SITE]["log_prob"])


def test_rows_padded_for_a_graph_repeat_the_first_sequence():
    batch = ragged_batch([5, 3])
    grown = padded(batch, steps=8, rows=4)
    assert grown.x.shape[:2] == (4, 8)
    assert torch.equal(grown.lengths, torch.tensor([5, 3, 5, 5]))
    assert torch.equal(grown.x[2], grown.x[0]) and torch.equal(grown.mask[3], grown.mask[0])
    with pytest.raises(ValueError, match="cannot pad"):
        padded(batch, steps=4)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the refusal is for machines without it")
def test_cuda_graphs_off_cuda_is_a_one_line_error_before_anything_is_written(tmp_path, capsys):
    code = main(["--cuda-graphs", "--max-steps", "1", "--out", str(tmp_path / "run"), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--cuda-graphs" in lines[0] and "--device cuda" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_resumed_optimizer_takes_this_runs_layout():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=torch.tensor(0.01), capturable=False, foreach=False)
    param.grad = torch.ones(3)
    optimizer.param_groups[0]["capturable"] = True  # as saved by a --cuda-graphs run
    optimizer.state[param] = {"step": torch.tensor(4.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}
    optimizer_for_graphs(optimizer, False, torch.device("cpu"))
    group = optimizer.param_groups[0]
    assert group["capturable"] is False and isinstance(group["lr"], float) and group["lr"] == pytest.approx(0.01)
    assert optimizer.state[param]["step"].device.type == "cpu"
    optimizer.step()  # Adam accepts the layout
    assert float(optimizer.state[param]["step"]) == 5.0


# ----------------------------------------------------------------------------- on a CUDA device


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every trajectory's eps read from one device buffer: the eager and the replayed update then
    see the same noise, and a replay reads the buffer's current values (refill it to change them)."""
    buffer = torch.randn(64, 64, 8, device="cuda")

    def standard_normal(shape, *, like):
        return buffer[:shape[0], :shape[1], :shape[2]].to(like.dtype)

    monkeypatch.setattr(distributions, "standard_normal", standard_normal)
    return buffer


def graph_optimizer(objective, lr):
    return torch.optim.Adam(objective.parameters(), lr=torch.tensor(lr, device="cuda"), eps=1e-5, capturable=True)


@needs_cuda
@pytest.mark.parametrize("kl", KL_ESTIMATORS)
@pytest.mark.parametrize("model,guide", MODELS)
def test_replayed_updates_equal_eager_updates_from_the_same_noise(fixed_noise, model, guide, kl):
    eager = objective_for(model, guide, kl=kl).cuda()
    replayed = copy.deepcopy(eager)
    eager_opt = torch.optim.Adam(eager.parameters(), lr=1e-2, eps=1e-5)
    updates = GraphedUpdates(replayed, graph_optimizer(replayed, 1e-2), clip_norm=1.0, length_bucket=16,
                             device=torch.device("cuda"), dtype=torch.float32, next_step=1)
    weights = Weights(kl=0.5, aux=0.1, bwd=0.05)
    for i, lengths in enumerate([[9, 5, 2], [16, 3, 11], [4, 4, 1]]):  # one bucket (16), one batch size
        fixed_noise.normal_()
        batch = ragged_batch(lengths, seed=i)
        loss, norm = eager_update(eager, eager_opt, batch.to("cuda"), weights, clip_norm=1.0)
        got_loss, got_norm = updates(batch, weights)
        assert torch.allclose(got_loss, loss, rtol=1e-4, atol=1e-4), (i, got_loss, loss)
        assert torch.allclose(got_norm, norm, rtol=1e-4, atol=1e-4), (i, got_norm, norm)
        for (name, a), b in zip(eager.named_parameters(), replayed.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (i, name)
    assert updates.captured == 1
    assert updates.flags.first_skipped() is None


@needs_cuda
def test_a_non_finite_replay_is_skipped_and_flagged(fixed_noise):
    objective = objective_for("zforcing", "backward").cuda()
    updates = GraphedUpdates(objective, graph_optimizer(objective, 1e-2), clip_norm=1.0, length_bucket=16,
                             device=torch.device("cuda"), dtype=torch.float32, next_step=1)
    weights = Weights(aux=0.1)
    updates(ragged_batch([9, 5]), weights)
    before = [p.detach().clone() for p in objective.parameters()]
    poisoned = ragged_batch([9, 5])
    poisoned.x[1, 3, 0] = float("inf")
    updates(poisoned, weights)
    assert all(torch.equal(p, b) for p, b in zip(objective.parameters(), before))
    assert updates.flags.first_skipped() == (2, 1)


@needs_cuda
def test_each_replay_draws_new_noise_and_the_seed_fixes_the_sequence():
    objective = objective_for("zforcing", "backward").cuda().eval()
    bounds = GraphedBounds(lambda b: sequence_terms(objective.model, objective.guide, b), model=objective.model,
                           rows=4, length_bucket=8,
                           device=torch.device("cuda"), dtype=torch.float32)
    batch = ragged_batch([8, 6, 3])
    runs = []
    for _ in range(2):
        torch.cuda.manual_seed(5)
        runs.append([bounds(batch)["elbo"] for _ in range(3)])
    assert not torch.equal(runs[0][0], runs[0][1]), "a replay drew the same noise as the one before"
    for first, again in zip(*runs):
        assert torch.equal(first, again), "the same seed gave another sequence of noise"


@needs_cuda
def test_graphed_iwae_equals_eager_iwae_from_the_same_noise(fixed_noise):
    objective = objective_for("zforcing", "backward").cuda().eval()
    model, guide = objective.model, objective.guide

    def terms(b, *, chunk):
        return importance_terms(model, guide, b, num_samples=4, chunk=chunk, kl_per_step=True)

    bounds = GraphedBounds(terms, model=model, rows=3, length_bucket=8, device=torch.device("cuda"), dtype=torch.float32)
    batch = ragged_batch([8, 6, 3])  # rows and steps already at the bucket: the same noise layout as eager
    for _ in range(2):
        fixed_noise.normal_()
        with torch.no_grad():
            expected = terms(batch.to("cuda"), chunk=2)
        got = bounds(batch, chunk=2)
        for key in ("iwae", "elbo", "kl", "rec", "kl_steps"):
            assert torch.allclose(got[key], expected[key], rtol=1e-4, atol=1e-4), key


@needs_cuda
@pytest.mark.parametrize("kl", KL_ESTIMATORS)
def test_training_with_cuda_graphs_follows_eager_and_resumes_with_them_on_or_off(tmp_path, digits, fixed_noise, kl):
    splits = SequenceSplits(digits.info, digits.train[:24], digits.valid[:8], digits.test[:8])

    def run(name, **train):
        config = TrainConfig(batch_size=8, log_every=1, aux_start=0.01, aux_end=0.01, kl_start=0.5, kl_step=0.05,
                             kl=kl, device="cuda", **train)
        return Trainer.create(data_config=DataConfig(), train_config=config, out_dir=tmp_path / name,
                              model_sizes=SIZES, quiet=True, splits=splits)

    def losses(name):
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if r["kind"] == "step"}

    run("eager", epochs=2, max_steps=6).fit()
    run("graphs", epochs=2, max_steps=4, cuda_graphs=True, length_bucket=16).fit()
    resumed = Trainer.resume(tmp_path / "graphs", quiet=True, splits=splits, max_steps=6)
    assert resumed.config.cuda_graphs
    resumed.fit()
    eager, graphs = losses("eager"), losses("graphs")
    assert sorted(graphs) == list(range(1, 7))
    for step in eager:
        assert graphs[step] == pytest.approx(eager[step], rel=1e-4), step
    Trainer.resume(tmp_path / "graphs", quiet=True, splits=splits, epochs=3, max_steps=7, cuda_graphs=False).fit()
    assert 7 in losses("graphs")
