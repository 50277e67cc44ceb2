"""The benchmarks' plain-PyTorch baselines compute exactly what the library computes."""

import pytest
import torch

from benchmarks.fast_reference import FastPlainZForcing, plain_iwae_bound
from benchmarks.reference import PlainZForcing
from pyro_zforcing.infer import iwae_bound

from test_objective import CASES, make_case


@pytest.mark.parametrize("emission", sorted(CASES))
@pytest.mark.parametrize("aux_input,aux_loss", [("hz", "gaussian"), ("z", "l2")])
def test_fast_plain_loss_and_gradients_equal_the_authors_style_plain_ones(float64, digits, emission,
                                                                         aux_input, aux_loss):
    objective, batch = make_case(emission, digits, aux_input=aux_input, aux_loss=aux_loss)
    plain, fast = PlainZForcing.like(objective), FastPlainZForcing.like(objective)
    weights = dict(aux_weight=0.7, bwd_weight=0.2, kl_weight=0.3)
    torch.manual_seed(11)
    expected = plain.loss(batch.x, batch.mask, batch.lengths, **weights)
    torch.manual_seed(11)
    got = fast.loss(batch.x, batch.mask, batch.lengths, **weights)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10), (got, expected)
    expected.backward()
    got.backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-9), name


@pytest.mark.parametrize("emission", sorted(CASES))
def test_vectorised_plain_iwae_equals_library_iwae_from_same_noise(float64, digits, emission):
    objective, batch = make_case(emission, digits)
    fast = FastPlainZForcing.like(objective)
    torch.manual_seed(3)
    library = iwae_bound(objective.model, objective.guide, batch, num_samples=7)
    torch.manual_seed(3)
    plain = plain_iwae_bound(fast, batch.x, batch.mask, batch.lengths, num_samples=7)
    assert library.shape == (batch.batch_size,)
    assert torch.allclose(library, plain, atol=1e-9), (library, plain)


def test_plain_iwae_is_the_log_mean_exp_of_single_particle_weights(float64, digits):
    objective, batch = make_case("gaussian", digits)
    fast = FastPlainZForcing.like(objective)
    k = 4
    torch.manual_seed(5)
    eps = torch.randn(k * batch.batch_size, batch.num_steps, objective.model.config.z_dim)
    torch.manual_seed(5)
    bound = plain_iwae_bound(fast, batch.x, batch.mask, batch.lengths, num_samples=k)
    per_particle = torch.stack([
        fast.log_weights(batch.x, batch.mask, batch.lengths, eps=eps[i * batch.batch_size:(i + 1) * batch.batch_size])
        for i in range(k)]).detach()
    expected = torch.log(torch.exp(per_particle).mean(0))
    assert torch.allclose(bound, expected, atol=1e-9)
