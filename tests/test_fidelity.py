"""The library against the authors' own formulas (tests/authors_reference.py), and the uncapped emission."""

import math

import numpy as np
import pytest
import soundfile
import torch

from pyro_zforcing.checkpoint import config_payload, load_checkpoint, save_checkpoint
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import collate_sequences, load_dataset
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.models import ZForcing
from pyro_zforcing.infer import Weights, step_kl, trace_pair, weights_at
from pyro_zforcing.emissions import FactorisedEmission
from pyro_zforcing.build import build_objective, model_config_for
from pyro_zforcing.evaluation.bounds import evaluate_elbo

from authors_reference import AuthorsZForcing
from conftest import small_config

# (z_conditioning, aux_input, aux_loss): their cond_ln, z_force and use_l2 in both states
VARIANTS = [("concat", "hz", "gaussian"), ("concat", "z", "l2"), ("cond-ln", "hz", "gaussian"),
            ("cond-ln", "z", "l2")]


def frames_batch(batch_size=3, steps=7, dim=5):
    """Equal-length real-valued sequences, as the authors' fixed-length chunks."""
    gen = torch.Generator().manual_seed(4)
    x = 2.0 * torch.randn(batch_size, steps, dim, generator=gen, dtype=torch.float64)
    return collate_sequences(list(x.numpy())).to("cpu", torch.float64)


def tokens_batch(batch_size=3, steps=6, vocab=11):
    gen = torch.Generator().manual_seed(3)
    return collate_sequences(list(torch.randint(0, vocab, (batch_size, steps), generator=gen).numpy()))


@torch.no_grad()
def authors_like(objective) -> AuthorsZForcing:
    """Their module with the library's weights, mapped by hand onto their layout."""
    m, g, c = objective.model, objective.guide, objective.model.config
    tokens = c.emission == "categorical"
    # tokens: their output layer also covers the start id, with a logit of -1e30 (probability 0
    # exactly, so the same softmax), since their backward LM scores every input (ours masks it)
    out_dim = 2 * c.input_dim if c.emission == "gaussian" else c.input_dim + 1
    theirs = AuthorsZForcing(c.input_dim + tokens, c.emb_dim, c.rnn_dim, c.z_dim, c.mlp_dim, out_dim,
                             out_type="softmax" if tokens else "gaussian", cond_ln=c.z_conditioning == "cond-ln",
                             z_force=c.aux_input == "z", use_l2=c.aux_loss == "l2").double()
    theirs.emb_mod.load_state_dict((m.embed.lookup if tokens else m.embed.linear).state_dict())
    theirs.bwd_mod.load_state_dict(m.bwd.lstm.state_dict())
    cell = theirs.fwd_mod
    if c.z_conditioning == "cond-ln":
        cell.weight_ih.copy_(m.fwd.weight_ih.t())
        cell.weight_hh.copy_(m.fwd.weight_hh.t())
        cell.ln_ih.gain.copy_(m.fwd.ln_ih_gain[None])
        cell.ln_ih.bias.copy_(m.fwd.ln_ih_bias[None])
        theirs.gen_mod.load_state_dict(m.fwd.z_gates.state_dict())
    else:
        w_ih = m.fwd.lstm.weight_ih_l0  # ours takes [e(u), W z]; theirs [W z, e(u)]
        cell.weight_ih.copy_(torch.cat([w_ih[:, c.emb_dim:], w_ih[:, :c.emb_dim]], 1).t())
        cell.weight_hh.copy_(m.fwd.lstm.weight_hh_l0.t())
        cell.bias_ih.copy_(m.fwd.lstm.bias_ih_l0)
        cell.bias_hh.copy_(m.fwd.lstm.bias_hh_l0)
        theirs.gen_mod.load_state_dict(m.fwd.z_proj.state_dict())
    theirs.pri_mod.load_state_dict(m.prior.net.state_dict())
    theirs.inf_mod.load_state_dict(g.posterior.net.state_dict())
    aux = m.aux.net.state_dict()
    if c.aux_input == "z":  # z_force: their first layer also sees h * 0; our MLP sees z alone
        aux["0.weight"] = torch.cat([torch.randn(c.mlp_dim, c.rnn_dim, dtype=torch.float64), aux["0.weight"]], 1)
    theirs.aux_mod.load_state_dict(aux)
    for mine, their in ((m.emission.linear, theirs.fwd_out_mod), (m.bwd_head.linear, theirs.bwd_out_mod)):
        their.weight.zero_()
        their.bias.fill_(-1e30)
        their.weight[:mine.out_features] = mine.weight
        their.bias[:mine.out_features] = mine.bias
    return theirs


def their_terms(theirs, batch, eps):
    """Their per-sequence stats for our batch: x = [start, y_1..y_{T-1}], y = targets, time-major."""
    y = batch.x.transpose(0, 1)
    start = torch.full_like(y[:1], theirs.emb_mod.num_embeddings - 1) if y.dim() == 2 else torch.zeros_like(y[:1])
    x = torch.cat([start, y[:-1]], 0)
    mask = batch.mask.t().to(torch.float64)
    bwd_mask = mask.clone()
    bwd_mask[0] = 0  # our x_0 is the start input, which the backward LM does not score (theirs is a real frame)
    hidden = (torch.zeros(1, batch.batch_size, theirs.bwd_mod.hidden_size, dtype=torch.float64),) * 2
    return theirs(x, y, mask, hidden, eps.transpose(0, 1), bwd_mask=bwd_mask)


def make(emission, variant):
    z_conditioning, aux_input, aux_loss = variant
    input_dim = 5 if emission == "gaussian" else 11
    objective = build_objective(small_config(input_dim=input_dim, emission=emission, z_conditioning=z_conditioning,
                                             aux_input=aux_input, aux_loss=aux_loss), "backward", kl="sampled")
    objective.double()
    return objective, frames_batch() if emission == "gaussian" else tokens_batch()


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
@pytest.mark.parametrize("variant", VARIANTS, ids="-".join)
@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_library_loss_and_gradients_equal_the_authors_code_from_the_same_noise(emission, variant, kl):
    torch.manual_seed(0)
    objective, batch = make(emission, variant)
    objective.kl = kl
    theirs = authors_like(objective)
    kl_weight, aux_weight, bwd = 0.3, 0.7, 0.2
    torch.manual_seed(11)
    eps = torch.randn(batch.batch_size, batch.num_steps, objective.model.config.z_dim, dtype=torch.float64)
    torch.manual_seed(11)  # the library's guide draws the same eps as its first random numbers
    ours = objective(batch, Weights(kl=kl_weight, aux=aux_weight, bwd=bwd))
    fwd_nll, bwd_nll, aux_nll, kld, log_pz, log_qz = their_terms(theirs, batch, eps)
    # their all_loss (analytic: their own kld, sum_t gaussian_kld; sampled: the one-sample estimate
    # log q - log p that Trace_ELBO differentiates)
    kl_term = kld if kl == "analytic" else log_qz - log_pz
    expected = (fwd_nll + (aux_weight > 0) * bwd * bwd_nll + aux_weight * aux_nll + kl_weight * kl_term).mean()
    assert torch.allclose(ours, expected, rtol=1e-6, atol=1e-6), (ours, expected)
    ours.backward()
    expected.backward()
    m, c = objective.model, objective.model.config
    t = theirs
    pairs = {"prior": (m.prior.net[0].weight.grad, t.pri_mod[0].weight.grad),
             "posterior": (objective.guide.posterior.net[0].weight.grad, t.inf_mod[0].weight.grad),
             "emission": (m.emission.linear.weight.grad, t.fwd_out_mod.weight.grad[:m.emission.linear.out_features]),
             "bwd head": (m.bwd_head.linear.weight.grad, t.bwd_out_mod.weight.grad[:m.bwd_head.linear.out_features]),
             "backward lstm": (m.bwd.lstm.weight_hh_l0.grad, t.bwd_mod.weight_hh_l0.grad),
             "aux out": (m.aux.net[2].weight.grad, t.aux_mod[2].weight.grad),
             "aux in": (m.aux.net[0].weight.grad, t.aux_mod[0].weight.grad[:, -m.aux.net[0].in_features:]),
             "embedding": ((m.embed.lookup if emission == "categorical" else m.embed.linear).weight.grad,
                           t.emb_mod.weight.grad)}
    if c.z_conditioning == "cond-ln":
        pairs.update({"W_hh": (m.fwd.weight_hh.grad, t.fwd_mod.weight_hh.grad.t()),
                      "W_ih": (m.fwd.weight_ih.grad, t.fwd_mod.weight_ih.grad.t()),
                      "ln gain": (m.fwd.ln_ih_gain.grad, t.fwd_mod.ln_ih.gain.grad[0]),
                      "ln bias": (m.fwd.ln_ih_bias.grad, t.fwd_mod.ln_ih.bias.grad[0]),
                      "z gates in": (m.fwd.z_gates[0].weight.grad, t.gen_mod[0].weight.grad),
                      "z gates out": (m.fwd.z_gates[2].bias.grad, t.gen_mod[2].bias.grad)})
    else:
        pairs.update({"W_hh": (m.fwd.lstm.weight_hh_l0.grad, t.fwd_mod.weight_hh.grad.t()),
                      "z proj": (m.fwd.z_proj.weight.grad, t.gen_mod.weight.grad),
                      "bias": (m.fwd.lstm.bias_hh_l0.grad, t.fwd_mod.bias_hh.grad)})
    for name, (mine, their) in pairs.items():
        assert torch.allclose(mine, their, rtol=1e-6, atol=1e-8), name
    if c.aux_input == "z":  # z_force: the h half of their aux input layer multiplies zeros
        assert torch.equal(t.aux_mod[0].weight.grad[:, :c.rnn_dim], torch.zeros(c.mlp_dim, c.rnn_dim, dtype=torch.float64))


@pytest.mark.parametrize("z_conditioning", ["concat", "cond-ln"])
def test_analytic_step_kl_equals_the_authors_gaussian_kld(z_conditioning):
    """Their training loss uses the analytic per-step KL along the sampled trajectory (``kld``)."""
    torch.manual_seed(0)
    objective, batch = make("gaussian", (z_conditioning, "hz", "gaussian"))
    theirs = authors_like(objective)
    torch.manual_seed(5)
    eps = torch.randn(batch.batch_size, batch.num_steps, objective.model.config.z_dim, dtype=torch.float64)
    torch.manual_seed(5)
    with torch.no_grad():
        ours = step_kl(*trace_pair(objective.model, objective.guide, batch)).sum(-1)
        kld = their_terms(theirs, batch, eps)[3]
    assert torch.allclose(ours, kld, rtol=1e-6, atol=1e-8), (ours, kld)


def near_silent_corpus(root, *, files=32, frame_size=4, quiet_frames=31):
    """WAV files written by soundfile: one frame of loud noise, then digital silence."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(files):
        loud = 0.3 * rng.standard_normal(frame_size)
        soundfile.write(str(root / f"u{i:02d}.wav"), np.concatenate([loud, np.zeros(frame_size * quiet_frames)]),
                        16000, subtype="PCM_16")
    return load_dataset(DataConfig(dataset="audio", data_dir=str(root), options={
        "frame_size": frame_size, "chunk_frames": quiet_frames + 1, "valid_fraction": 0.0, "test_fraction": 0.25}))


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from threads, and on a loaded machine they cost 10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_predictable_silence_trains_past_the_old_emission_cap(tmp_path, one_thread):
    """A clamp of the log-variance at -8 caps every value at -(log 2pi - 8)/2 = 3.079 nats (and the
    ELBO <= the reconstruction); the unclamped emission learns the silence to far better."""
    splits = near_silent_corpus(tmp_path / "corpus")
    torch.manual_seed(0)
    objective = build_objective(model_config_for(splits.info, emb_dim=8, rnn_dim=16, z_dim=1, mlp_dim=8), "backward")
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-2, eps=1e-5)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [150], gamma=0.3)
    batch = collate_sequences(splits.train)
    for _ in range(350):
        optimizer.zero_grad()
        objective(batch).backward()
        optimizer.step()
        schedule.step()
    cap = -0.5 * (math.log(2 * math.pi) - 8.0)
    test = evaluate_elbo(objective, splits.test, splits.info, batch_size=8, device=torch.device("cpu"),
                         dtype=torch.float32)
    assert test["elbo_per_unit"] > cap + 0.05, test  # 3.26 here


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emission_density_and_gradients_stay_finite_at_any_log_variance(dtype):
    """Exact-zero frames and a constant segment, scored with log-variances far outside the float
    range (as long training on digital silence would drive them): finite, never NaN."""
    head = FactorisedEmission(3, 2, "gaussian").to(dtype)
    state = torch.randn(4, 3, dtype=dtype)
    frames = torch.zeros(4, 2, dtype=dtype)
    frames[2:] = 0.25  # a constant segment
    for logvar_bias in (-1e4, -100.0, 0.0, 100.0, 1e4):
        head.zero_grad()
        with torch.no_grad():
            head.linear.bias[2:] = logvar_bias
        log_p = head.step_dist(state).log_prob(frames)
        log_p.sum().backward()
        assert torch.isfinite(log_p).all(), logvar_bias
        assert all(torch.isfinite(p.grad).all() for p in head.parameters()), logvar_bias
    limit = 0.5 * math.log(torch.finfo(dtype).max)
    with torch.no_grad():  # the guard is the float range only: inside it the log-variance is untouched
        head.linear.bias[2:] = -0.9 * limit
        head.linear.weight.zero_()
        assert torch.allclose(head.step_dist(state).logvar, torch.full((4, 2), -0.9 * limit, dtype=dtype))


def test_training_on_digital_silence_keeps_loss_and_gradients_finite():
    silence = collate_sequences([np.zeros((12, 3), dtype=np.float32)] * 4)
    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=3, emission="gaussian"), "backward")
    optimizer = torch.optim.Adam(objective.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = objective(silence, Weights(aux=5e-4))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in objective.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 50, losses  # and training makes progress on it


@pytest.mark.parametrize("guide_name", ZForcing.guides)
def test_cond_ln_trajectories_score_the_same_sampled_step_by_step_or_fused(float64, guide_name):
    """A drawn z is scored from the sampling loop's parameters; a copy of it runs the fused
    cond-ln recurrence (z-given gains for all steps at once): both must agree, for every guide."""
    torch.manual_seed(2)
    objective = build_objective(small_config(input_dim=5, emission="gaussian", z_conditioning="cond-ln"), guide_name)
    batch = collate_sequences([np.random.default_rng(i).standard_normal((n, 5)) for i, n in enumerate((7, 3, 5))])
    batch = batch.to("cpu", torch.float64)
    for proposal in (objective.guide.proposal(batch), objective.model.prior_trajectory(batch)):
        z = proposal.rsample()
        drawn_h = objective.model.forward_states(batch, z)  # remembered from the loop
        objective.model.forget()
        assert torch.allclose(proposal.log_prob(z), proposal.log_prob(z.clone()), atol=1e-10)
        assert torch.allclose(drawn_h, objective.model.forward_states(batch, z.clone()), atol=1e-12)


def test_authors_initialisation_is_orthogonal_recurrence_and_zero_forward_biases():
    torch.manual_seed(0)
    for z_conditioning in ("concat", "cond-ln"):
        model = build_objective(small_config(z_conditioning=z_conditioning, rnn_dim=6), "backward").model
        w_hh = model.fwd.lstm.weight_hh_l0 if z_conditioning == "concat" else model.fwd.weight_hh
        for w in (w_hh, model.bwd.lstm.weight_hh_l0):  # (4H, H): orthonormal columns
            assert torch.allclose(w.t() @ w, torch.eye(6), atol=1e-5)
        if z_conditioning == "concat":
            assert not model.fwd.lstm.bias_ih_l0.any() and not model.fwd.lstm.bias_hh_l0.any()
    torch_default = build_objective(small_config(init="torch", rnn_dim=6), "backward").model
    w = torch_default.fwd.lstm.weight_hh_l0
    assert not torch.allclose(w.t() @ w, torch.eye(6), atol=1e-2)
    assert torch_default.fwd.lstm.bias_hh_l0.abs().max() > 0


def test_checkpoints_from_before_these_options_load_with_what_they_were_trained_with(tmp_path):
    """A saved ModelConfig without the new fields had a leaky embedding, a clamp of 8 on the
    emission and PyTorch's init; loading it must not silently switch it to the new defaults."""
    objective = build_objective(small_config(input_dim=2, emission="gaussian"), "backward")
    config = small_config(input_dim=2, emission="gaussian", embedding="leaky", emission_clamp=8.0, init="torch")
    payload = config_payload(config, DataConfig(), TrainConfig(), DataInfo(name="audio", emission="gaussian", dim=2, unit="sample"))
    for name in ("emission_clamp", "z_conditioning", "embedding", "init"):
        del payload["model_config"][name]
    save_checkpoint(tmp_path / "old.pt", {**payload, "objective": objective.state_dict()})
    assert load_checkpoint(tmp_path / "old.pt")["model_config"] == config


def test_backward_lm_cost_is_on_only_while_the_aux_weight_is_positive():
    """train_timit.py: ``bwd_nll = (aux_weight > 0.) * (bwd * bwd_nll)``."""
    rising = TrainConfig(aux_start=0.0, aux_end=0.1, aux_step=0.05, bwd_weight=0.5)
    assert [weights_at(rising, n).bwd for n in (0, 1, 5)] == [0.0, 0.5, 0.5]
    falling = TrainConfig(aux_start=0.1, aux_end=0.0, aux_step=0.05, bwd_weight=0.5)
    assert [weights_at(falling, n).bwd for n in (0, 1, 2, 9)] == [0.5, 0.5, 0.0, 0.0]
