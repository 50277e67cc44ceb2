"""The guide contract: any nn.Module with the model's signature whose only sample site is "z"
trains, evaluates, samples and is ablated; ``--guide FILE.py:Class`` is recorded and reloaded."""

import json
import shutil

import numpy as np
import pytest
import torch

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.evaluation.latents import active_units
from pyro_zforcing.guides import PriorGuide, make_guide
from pyro_zforcing.infer import Objective
from pyro_zforcing.models import ZForcing

from conftest import small_config

GUIDE_FILE = '''
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn


class MeanField(nn.Module):
    """q(z_t | b_t) = N(W b_t, diag(exp(s))): no proposal(), no per-step loc_scale."""

    def __init__(self, model):
        super().__init__()
        self.model = (model,)  # held, not registered: its parameters belong to the model
        self.loc = nn.Linear(model.config.rnn_dim, model.config.z_dim)
        self.log_scale = nn.Parameter(torch.full((model.config.z_dim,), -1.0))

    def forward(self, batch, **weights):
        b = self.model[0].backward_states(batch)
        with pyro.plate("sequences", batch.batch_size):
            q = dist.Normal(self.loc(b), self.log_scale.exp()).mask(batch.mask[..., None]).to_event(2)
            return pyro.sample("z", q)
'''

SIZES = ["--emb-dim", "6", "--rnn-dim", "7", "--z-dim", "3", "--mlp-dim", "5", "--batch-size", "64"]


def test_a_guide_from_a_file_trains_evaluates_samples_and_is_found_again_by_its_recorded_path(tmp_path, capsys):
    guide_file = tmp_path / "my_guides.py"
    guide_file.write_text(GUIDE_FILE)
    out = tmp_path / "run"
    assert zforcing(["--guide", f"{guide_file}:MeanField", "--max-steps", "2", "--out", str(out), "--quiet",
                     *SIZES]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["guide"] == f"{guide_file.resolve()}:MeanField"
    checkpoint = str(out / "checkpoints" / "last.pt")
    spec = f"{guide_file}:MeanField"
    assert zforcing(["evaluate", "--checkpoint", checkpoint, "--guide", spec, "--iwae-samples", "3", "--quiet",
                     "--no-plots"]) == 0
    report = json.loads((out / "eval-test.json").read_text())
    assert report["kl_per_step"] is None  # a plain Normal has no per-step loc_scale: no analytic KL per step
    elbo, iwae = (np.array(report["per_sequence"][k]) for k in ("elbo", "iwae"))
    assert np.all(iwae >= elbo - 1e-6)  # log-mean-exp of the K log-weights >= their mean
    assert zforcing(["sample", "--checkpoint", checkpoint, "--trust-guide", "-n", "2", "--interpolate", "3",
                     "--quiet", "--out", str(tmp_path / "samples")]) == 0
    assert {p.name for p in (tmp_path / "samples").iterdir()} == {"samples.png", "primed.png", "interpolation.png"}
    shutil.move(str(guide_file), str(tmp_path / "elsewhere.py"))
    capsys.readouterr()
    assert zforcing(["evaluate", "--checkpoint", checkpoint, "--guide", spec, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"last.pt: --guide {guide_file.resolve()}:MeanField: file {guide_file.resolve()} not found" in err
    moved = f"{tmp_path / 'elsewhere.py'}:MeanField"  # the same class named in its new place
    assert zforcing(["evaluate", "--checkpoint", checkpoint, "--guide", moved, "--iwae-samples", "2", "--quiet",
                     "--no-plots"]) == 0


def test_a_guide_class_is_found_by_module_name_and_bad_specs_are_one_line_errors(tmp_path, capsys):
    model = ZForcing(small_config())
    assert isinstance(make_guide("pyro_zforcing.guides.prior:PriorGuide", model), PriorGuide)
    for spec, message in (("pyro_zforcing.guides.prior:Nope", "defines no class Nope"),
                          ("no_such_module_xyz:Guide", "cannot import no_such_module_xyz"),
                          (f"{tmp_path / 'absent.py'}:Guide", "not found")):
        with pytest.raises(ValueError, match=message):
            make_guide(spec, model)
    assert zforcing(["--guide", "backwrd", "--max-steps", "1"]) == 2
    assert "unknown guide 'backwrd'" in capsys.readouterr().err


def test_active_units_of_a_guide_without_means_are_monte_carlo_means_of_traced_z(float64, digits, tmp_path):
    namespace = {}
    exec(GUIDE_FILE, namespace)
    torch.manual_seed(0)
    model = ZForcing(small_config())
    guide = namespace["MeanField"](model)
    with torch.no_grad():  # a narrow q: the Monte Carlo error of each mean (scale^2 / particles) is negligible
        guide.log_scale.fill_(-4.0)
    objective = Objective(model, guide)
    sequences = digits.test[:6]
    torch.manual_seed(1)
    estimated = active_units(objective, sequences, particles=400)
    assert estimated["method"] == "monte carlo"
    # the same statistic from the guide's exact means W b_t (a second computation)
    from pyro_zforcing.data import collate_sequences

    batch = collate_sequences(list(sequences)).to("cpu", torch.float64)
    with torch.no_grad():
        q_loc = guide.loc(model.backward_states(batch))
        prior_at_mean = []  # E_q[mu^p] by Monte Carlo over the prior's dependence on z
        for _ in range(400):
            z = q_loc + guide.log_scale.exp() * torch.randn_like(q_loc)
            prior_at_mean.append(model.prior_trajectory(batch).loc_scale(z)[0])
        delta = (q_loc - torch.stack(prior_at_mean).mean(0))[batch.mask]
    exact = delta.var(0, unbiased=False)
    assert exact.min() > 1e-4  # the statistic is not trivially zero
    assert np.allclose(estimated["variance"], exact.numpy(), rtol=0.03, atol=1e-6), (estimated["variance"], exact)
    assert np.allclose(estimated["raw_variance"], q_loc[batch.mask].var(0, unbiased=False).numpy(), rtol=0.03)
