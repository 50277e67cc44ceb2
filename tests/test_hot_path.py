"""The speed-ups of the sampling loop compute what the plain formulas compute."""

import torch

from pyro_zforcing.nets import GaussianHead


def test_stepwise_head_equals_the_head_on_concatenated_inputs(float64):
    torch.manual_seed(0)
    head = GaussianHead(7, 5, 3, clamp=8.0)
    h, context = torch.randn(4, 7 - 2), torch.randn(4, 6, 2)
    params = head.stepwise(context)
    for t in range(context.shape[1]):
        loc, scale = params(t, h)
        expected_loc, expected_scale = head(h, context[:, t])
        assert torch.allclose(loc, expected_loc, atol=1e-12)
        assert torch.allclose(scale, expected_scale, atol=1e-12)


def test_stepwise_of_a_head_subclass_uses_the_subclass_forward(float64):
    class Shifted(GaussianHead):
        def forward(self, h_prev, context):
            loc, scale = super().forward(h_prev, context)
            return loc + 1.0, scale

    torch.manual_seed(0)
    head = Shifted(4, 5, 3, clamp=8.0)
    h, context = torch.randn(2, 2), torch.randn(2, 3, 2)
    loc, _ = head.stepwise(context)(1, h)
    assert torch.allclose(loc, head(h, context[:, 1])[0])


def test_the_same_batch_twice_without_an_update_accumulates_gradients(float64, digits):
    """Gradient accumulation / LBFGS closures: the guide->model memo never outlives one loss."""
    from pyro_zforcing.infer import Weights
    from test_objective import make_case

    objective, batch = make_case("bernoulli", digits)
    weights = Weights(aux=0.5)
    torch.manual_seed(1)
    objective(batch, weights).backward()
    once = {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}
    torch.manual_seed(1)
    objective(batch, weights).backward()
    for name, p in objective.named_parameters():
        if name in once:
            assert torch.allclose(p.grad, 2 * once[name], atol=1e-10), name
