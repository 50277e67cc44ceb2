"""A fair comparison of models: parameters counted by role (and only those a run trains), sizes
matched on the generative model, every recurrence initialised by --init, every embedding by
--embedding, and VRNN reading the frame before a window like every other model."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pyro_zforcing.build import build_objective, model_config_for
from pyro_zforcing.config import DataConfig, ModelConfig, TrainConfig
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.evaluation.paper_protocol import window_nll_kl
from pyro_zforcing.infer import (GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED, active_factors,
                                 parameter_counts, parameter_roles, weights_at)
from pyro_zforcing.nets import BoundedLeakyReLU, CondLayerNormRNN
from pyro_zforcing.studies.ablation import MODEL_VARIANTS, Study
from pyro_zforcing.studies.compare import match_parameters

from conftest import small_config

MODELS = {"zforcing": {}, "rnn": {"model": "rnn"}, "vrnn": {"model": "vrnn"},
          "vrnn-i": {"model": "vrnn", "prior": "standard"}, "srnn": {"model": "srnn"}, "dmm": {"model": "dmm"},
          "storn": {"model": "storn"}}
# p(y, z) by module, written from each model's generative story (docstrings), not from the code's roles
GENERATIVE_MODULES = {"zforcing": ("embed", "fwd", "prior", "emission"), "rnn": ("embed", "lstm", "emission"),
                      "vrnn": ("embed", "phi_z", "lstm", "prior", "emission"), "srnn": ("embed", "rnn", "prior", "emission")}


def numel(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def frames_batch(dim=5, lengths=(7, 3, 5), seed=0):
    rng = np.random.default_rng(seed)
    return collate_sequences([rng.standard_normal((n, dim)).astype(np.float32) for n in lengths])


# ----------------------------------------------------------------------------- parameter roles

def lstm_count(inputs: int, hidden: int) -> int:
    return 4 * hidden * (inputs + hidden) + 8 * hidden  # W_ih, W_hh and two bias vectors


def linear_count(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def test_zforcing_roles_at_the_speech_sizes_are_the_counts_worked_out_by_hand():
    """The issue's figures at the speech study's sizes (frames of 200, emb 64, LSTM 64, z 16, MLP 64):
    p(y, z) 95,856; inference 43,616; aux head 13,504; the backward LM head 26,000, never trained."""
    d, e, h, z, m = 200, 64, 64, 16, 64
    generative = (linear_count(d, e) + linear_count(z, m) + lstm_count(e + m, h)
                  + linear_count(h, m) + linear_count(m, 2 * z) + linear_count(h, 2 * d))
    inference = lstm_count(e, h) + linear_count(2 * h, m) + linear_count(m, 2 * z)
    aux = linear_count(z + h, m) + linear_count(m, 2 * h)
    assert (generative, inference, aux, linear_count(h, 2 * d)) == (95856, 43616, 13504, 26000)
    objective = build_objective(ModelConfig(input_dim=d, emission="gaussian", emb_dim=e, rnn_dim=h, z_dim=z, mlp_dim=m))
    counts = parameter_counts(objective.model, objective.guide, factors=active_factors(TrainConfig()))
    assert counts == {GENERATIVE: generative, INFERENCE: inference, TRAINING_ONLY: aux, UNTRAINED: 26000}
    with_bwd = active_factors(TrainConfig(bwd_weight=0.5))
    assert parameter_counts(objective.model, objective.guide, factors=with_bwd)[TRAINING_ONLY] == aux + 26000


@pytest.mark.parametrize("train,expected", [
    (TrainConfig(), {"aux"}), (TrainConfig(aux_start=0.0, aux_end=0.0), set()),
    (TrainConfig(aux_start=0.0, aux_end=0.1, aux_step=1e-3), {"aux"}),
    (TrainConfig(aux_start=0.0, aux_end=0.1, aux_step=0.0), set()),  # a step of 0 keeps aux_start
    (TrainConfig(aux_start=0.0, aux_end=0.1, aux_anneal_epochs=2.0), {"aux"}),
    (TrainConfig(bwd_weight=0.3), {"aux", "bwd"}), (TrainConfig(aux_start=0.0, aux_end=0.0, bwd_weight=0.3), set()),
])
def test_active_factors_are_those_whose_weight_is_positive_at_some_update(train, expected):
    assert active_factors(train) == expected
    weights = [weights_at(train, n) for n in (0, 1, 10, 10_000)]
    assert ("aux" in expected) == (train.aux_anneal_epochs is not None or any(w.aux > 0 for w in weights))
    assert ("bwd" in expected) == any(w.bwd > 0 for w in weights)


CASES = [(name, {}, {}) for name in MODELS] + [
    ("zforcing", {}, {"aux_start": 0.0, "aux_end": 0.0}),
    ("zforcing", {}, {"bwd_weight": 0.5}),
    ("zforcing", {}, {"guide": "filtering"}),
    ("zforcing", {}, {"guide": "filtering", "bwd_weight": 0.5}),
    ("zforcing", {}, {"guide": "prior", "aux_start": 0.0, "aux_end": 0.0}),
    ("zforcing", {}, {"guide": "future-only"}),
    ("zforcing", {"z_conditioning": "cond-ln"}, {}),
    ("srnn", {}, {"guide": "filtering"}),
    ("vrnn", {}, {"guide": "prior"}),
]


@pytest.mark.parametrize("name,model_options,train_options", CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in {**c[1], **c[2]}.items()) or 'default'}"
                              for c in CASES])
def test_every_counted_parameter_gets_a_gradient_in_one_training_step_and_no_other(name, model_options,
                                                                                   train_options):
    torch.manual_seed(0)
    overrides = {**MODELS[name], **model_options}
    train = TrainConfig(**{"guide": build_objective(small_config(input_dim=5, emission="gaussian", **overrides))
                           .model.default_guide, **train_options})
    objective = build_objective(small_config(input_dim=5, emission="gaussian", **overrides), train.guide)
    roles = parameter_roles(objective.model, objective.guide, factors=active_factors(train))
    assert sum(len(v) for v in roles.values()) == len(list(objective.parameters()))  # each parameter once
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-3)
    optimizer.zero_grad()
    objective(frames_batch(), weights_at(train, 0)).backward()
    optimizer.step()
    for role, params in roles.items():
        for p in params:
            assert (p.grad is None) == (role == UNTRAINED), (role, p.shape)


ROLE_CASES = CASES + [("dmm", {}, {"guide": "prior"}), ("storn", {}, {"guide": "prior"}),
                      ("dmm", {"emission": "categorical", "input_dim": 6}, {}),
                      ("vrnn", {}, {"guide": "filtering"}), ("srnn", {}, {"guide": "prior"}),
                      ("dmm", {"first_prior": "standard"}, {}), ("dmm", {"first_prior": "standard"}, {"guide": "prior"})]


@pytest.mark.parametrize("name,model_options,train_options", ROLE_CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in {**c[1], **c[2]}.items()) or 'default'}"
                              for c in ROLE_CASES])
def test_generative_parameters_are_exactly_those_log_p_of_y_and_a_fixed_z_differentiates(
        float64, name, model_options, train_options):
    """Never count a parameter that cannot get a gradient: with z drawn by the guide and then held
    fixed, log p(y, z) (training-only factors off) reaches every generative parameter and no other
    (the DMM's input embedding is read by its guide alone: inference, not p(y, z))."""
    from pyro import poutine

    torch.manual_seed(1)
    overrides = {"input_dim": 5, "emission": "gaussian", **MODELS[name], **model_options}
    config = small_config(**overrides)
    guide_name = train_options.get("guide") or build_objective(config).model.default_guide
    train = TrainConfig(**{**train_options, "guide": guide_name})
    objective = build_objective(config, guide_name).double()
    roles = parameter_roles(objective.model, objective.guide, factors=active_factors(train))
    if overrides["emission"] == "categorical":
        rng = np.random.default_rng(0)
        batch = collate_sequences([rng.integers(0, 6, n) for n in (7, 3, 5)])
    else:
        batch = frames_batch().to("cpu", torch.float64)
    traced = poutine.trace(objective.guide).get_trace(batch)
    fixed = {site: traced.nodes[site]["value"].detach().clone() for site in objective.model.latent_sites}
    objective.zero_grad(set_to_none=True)
    objective.model.forget()
    log_joint = poutine.trace(poutine.condition(objective.model, data=fixed)).get_trace(batch).log_prob_sum()
    log_joint.backward()
    reached = {id(p) for p in objective.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    for role, params in roles.items():
        for p in params:
            assert (id(p) in reached) == (role == GENERATIVE), (role, tuple(p.shape))


def test_the_dmm_embedding_is_counted_with_its_inference_network_at_the_jsb_compare_sizes():
    """JSB's compare run (88 keys, emb 64, z 16; the DMM trained at rnn = mlp = 342,
    docs/studies/tables/jsb-long/sizes.json): the embedding's 88 * 64 + 64 = 5,696 parameters move
    from p(y, z) to the inference network, 204,736 -> 199,040 and 156,684 -> 162,380."""
    config = ModelConfig(input_dim=88, emission="bernoulli", model="dmm", emb_dim=64, rnn_dim=342, z_dim=16, mlp_dim=342)
    objective = build_objective(config)
    counts = parameter_counts(objective.model, objective.guide, factors=active_factors(TrainConfig(guide="combiner")))
    model = objective.model
    assert numel(model.embed) == linear_count(88, 64) == 5696
    assert counts[GENERATIVE] == numel(model.transition, model.emitter) + 16 == numel(model) - 5696
    assert counts[INFERENCE] == numel(objective.guide) + 5696
    assert (counts[GENERATIVE], counts[INFERENCE]) == (204736 - 5696, 156684 + 5696) == (199040, 162380)
    prior_only = parameter_counts(model, build_objective(config, "prior").guide, factors=frozenset())
    assert prior_only[UNTRAINED] == 5696 and prior_only[GENERATIVE] == counts[GENERATIVE]


@pytest.mark.parametrize("match", ["generative", "all"])
def test_match_params_picks_sizes_whose_counts_are_the_references_counted_by_module(digits, match):
    sizes = {"emb_dim": 8, "rnn_dim": 32, "z_dim": 4, "mlp_dim": 24}
    study = Study(data=DataConfig(), train=TrainConfig(), model=sizes,
                  variants={name: MODEL_VARIANTS[name] for name in ("rnn", "vrnn", "vrnn-i", "srnn", "zforcing")})
    _, chosen = match_parameters(study, digits.info, reference="zforcing", match=match)

    def by_module(variant):
        """(p(y, z), every trained parameter) of the variant at its chosen size, by module."""
        config = model_config_for(digits.info, **{**sizes, **MODEL_VARIANTS[variant], **{
            k: chosen[variant][k] for k in ("rnn_dim", "mlp_dim")}})
        objective = build_objective(config)  # the model's own guide
        model = objective.model
        generative = numel(*(getattr(model, name) for name in GENERATIVE_MODULES[config.model]))
        outside = (model.bwd, model.aux, model.bwd_head) if config.model == "zforcing" else ()
        assert numel(model) == generative + numel(*outside)  # the listing covers the model
        unused = numel(model.bwd_head) if config.model == "zforcing" else 0  # the backward LM is off by default
        return generative, numel(model) - unused + numel(objective.guide)

    target = by_module("zforcing")[0 if match == "generative" else 1]
    for variant in chosen:
        generative, trained = by_module(variant)
        counted = generative if match == "generative" else trained
        assert abs(counted - target) <= 0.05 * target, (variant, counted, target)
        assert chosen[variant][GENERATIVE] == generative
    assert chosen["zforcing"]["rnn_dim"] == 32  # the reference keeps its size
    if match == "generative":  # VRNN's p(y, z) is the larger at one width: it must get narrower than with "all"
        _, everything = match_parameters(study, digits.info, reference="zforcing", match="all")
        assert chosen["vrnn"]["rnn_dim"] < everything["vrnn"]["rnn_dim"]


# ----------------------------------------------------------------------------- --init and --embedding

# every recurrence of every model (and of its default guide), generative or inference
RECURRENCES = {"zforcing": {"model.fwd.lstm": GENERATIVE, "model.bwd.lstm": INFERENCE},
               "rnn": {"model.lstm": GENERATIVE}, "vrnn": {"model.lstm": GENERATIVE},
               "srnn": {"model.rnn": GENERATIVE, "guide.backward.lstm": INFERENCE},
               "dmm": {"guide.rnn.rnn": INFERENCE}, "storn": {"model.fwd.lstm": GENERATIVE, "guide.rnn": INFERENCE}}


@pytest.mark.parametrize("name", list(RECURRENCES))
@pytest.mark.parametrize("init", ["orthogonal", "torch"])
def test_every_recurrence_of_every_model_follows_init(name, init):
    torch.manual_seed(0)
    hidden = 9
    objective = build_objective(small_config(rnn_dim=hidden, init=init, **MODELS[name]))
    found = {f"{owner}.{path}" for owner in ("model", "guide") for path, m in getattr(objective, owner).named_modules()
             if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN, CondLayerNormRNN))}
    assert found == set(RECURRENCES[name])  # the listing misses none
    bound = 1.0 / math.sqrt(hidden)
    for path, role in RECURRENCES[name].items():
        lstm = objective.get_submodule(path)
        w = lstm.weight_hh_l0  # (4H, H), (H, H) for a plain RNN
        gram = w.t() @ w
        biases = torch.cat([lstm.bias_ih_l0, lstm.bias_hh_l0])
        if init == "orthogonal":  # the authors': orthonormal columns of the stacked gates, W^T W = I_H
            torch.testing.assert_close(gram, torch.eye(hidden), atol=1e-5, rtol=0)
            assert (biases == 0).all() == (role == GENERATIVE)  # zero biases in the generative cells only
        else:  # PyTorch's: every weight and bias U(-1/sqrt(H), 1/sqrt(H)), not orthogonal
            assert (gram - torch.eye(hidden)).abs().max() > 0.3
            for p in (w, lstm.weight_ih_l0, biases):
                assert p.abs().max() <= bound and p.abs().max() > 0.5 * bound
        if init == "orthogonal" or role == INFERENCE:
            assert lstm.weight_ih_l0.abs().max() <= bound  # input weights keep U(+-1/sqrt(H)) under both


def test_cond_ln_recurrent_weight_follows_init():
    torch.manual_seed(0)
    for init in ("orthogonal", "torch"):
        w = build_objective(small_config(rnn_dim=6, init=init, z_conditioning="cond-ln")).model.fwd.weight_hh
        orthogonal = torch.allclose(w.t() @ w, torch.eye(6), atol=1e-5)
        assert orthogonal == (init == "orthogonal")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("embedding", ["linear", "leaky"])
def test_every_model_embeds_its_frames_as_embedding_says(name, embedding):
    """phi_x of VRNN, e(.) of the others: one Linear layer, or Linear + the bounded leaky ReLU."""
    torch.manual_seed(0)
    model = build_objective(small_config(input_dim=5, emission="gaussian", embedding=embedding, **MODELS[name])).model
    x = 40.0 * torch.randn(50, 5)
    linear = x @ model.embed.linear.weight.t() + model.embed.linear.bias
    expected = linear if embedding == "linear" else torch.clamp(torch.where(linear > 0, linear, linear / 3), -3, 3)
    torch.testing.assert_close(model.embed(x), expected)
    assert isinstance(model.embed.act, BoundedLeakyReLU) == (embedding == "leaky")
    batch = frames_batch()
    torch.testing.assert_close(model.embedded(batch)[1], model.embed(batch.x))  # what the model reads


# ----------------------------------------------------------------------------- VRNN and the frame before a window

EPS = 0.4


def vrnn_by_hand(model, guide, batch, b: int):
    """NLL + analytic KL of row ``b`` under the paper protocol, step by step in float64: h_0 reads the
    frame before the window with z_0 = 0, then z_t = q_loc + EPS q_scale, y_t ~ p(y_t | z_t, h_{t-1})."""
    lstm = model.lstm

    def step(x, z, h, c):
        gates = lstm.weight_ih_l0 @ torch.cat([x, model.phi_z(z)]) + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h \
            + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    hidden, z_dim = model.config.rnn_dim, model.config.z_dim
    h, c = step(model.embed(batch.first[b]), torch.zeros(z_dim), torch.zeros(hidden), torch.zeros(hidden))
    total = 0.0
    for t in range(int(batch.lengths[b])):
        y = batch.x[b, t]
        q_loc, q_scale = guide.posterior(h, model.embed(y))
        p_loc, p_scale = model.prior(h)
        z = q_loc + EPS * q_scale
        total += float((torch.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2)
                        - 0.5).sum())
        out = model.emission.step_dist(model.phi_z(z), h)
        total -= float(out.log_prob(y).sum())
        h, c = step(model.embed(y), z, h, c)
    return total


@pytest.mark.parametrize("prior", ["conditional", "standard"])
def test_vrnn_reads_the_frame_before_a_window_under_the_paper_protocol(monkeypatch, float64, prior):
    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=4, emission="gaussian", model="vrnn", prior=prior))
    batch = frames_batch(dim=4, lengths=(6, 6, 4)).to("cpu", torch.float64)
    batch.first = torch.randn(3, 4)
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: real_randn(*a, **k).fill_(EPS))
    ours = window_nll_kl(objective, batch)
    with torch.no_grad():
        expected = [vrnn_by_hand(objective.model, objective.guide, batch, b) for b in range(3)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)
    batch.first = None  # without it the recurrence starts from h_0 = 0: another number
    assert not torch.allclose(window_nll_kl(objective, batch), ours)


def test_vrnn_fused_states_equal_the_sampling_loop_with_a_first_frame(float64):
    torch.manual_seed(1)
    objective = build_objective(small_config(input_dim=4, emission="gaussian", model="vrnn"))
    batch = frames_batch(dim=4).to("cpu", torch.float64)
    batch.first = torch.randn(3, 4)
    z = objective.guide.proposal(batch).rsample()
    drawn = objective.model.forward_states(batch, z)  # remembered from the loop
    objective.model.forget()
    torch.testing.assert_close(objective.model.forward_states(batch, z.clone()), drawn, atol=1e-12, rtol=0)
    assert drawn[:, 0].abs().sum() > 0  # h_0 has read the first frame


def test_gate_saturation_measures_the_forward_lstms_own_gate_preactivations(float64, monkeypatch):
    """benchmarks/gate_saturation.py against a step-by-step torch.nn.LSTMCell with the same weights and z."""
    from benchmarks.gate_saturation import preactivations

    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=4, emission="gaussian"))
    sequences = [np.random.default_rng(i).standard_normal((n, 4)).astype(np.float32) for i, n in enumerate((5, 3))]
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: real_randn(*a, **k).fill_(EPS))
    a, rms, _ = preactivations(objective, sequences, batch_size=2)
    model, guide = objective.model, objective.guide
    lstm = model.fwd.lstm
    cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size).double()
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    expected, loudness = [], []
    for frames in sorted(sequences, key=len, reverse=True):  # eval_batches: longest first
        y = torch.as_tensor(frames, dtype=torch.float64)
        b = model.bwd(model.embed(y)[None], torch.tensor([len(y)]))[0]
        h = c = torch.zeros(1, lstm.hidden_size)
        for t in range(len(y)):
            u = torch.zeros(4) if t == 0 else y[t - 1]
            q_loc, q_scale = guide.posterior(h, b[t][None])
            x = torch.cat([model.embed(u)[None], model.fwd.z_proj(q_loc + EPS * q_scale)], dim=-1)
            expected.append(x @ cell.weight_ih.t() + cell.bias_ih + h @ cell.weight_hh.t() + cell.bias_hh)
            loudness.append(u.pow(2).mean().sqrt())
            h, c = cell(x, (h, c))
    torch.testing.assert_close(a, torch.cat(expected), atol=1e-10, rtol=0)  # real steps, row by row
    torch.testing.assert_close(rms, torch.stack(loudness), atol=1e-12, rtol=0)


def test_the_comparison_page_prints_the_counts_it_states(capsys):
    """docs/comparison.md's Python block runs as written and prints the role counts its text gives."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "comparison.md"
    (code,) = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    exec(compile(code, str(page), "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.strip() == \
        "{'generative': 95856, 'inference': 43616, 'training_only': 13504, 'untrained': 26000}"
    for figure in ("95,856", "43,616", "13,504", "26,000"):
        assert figure in page.read_text()
