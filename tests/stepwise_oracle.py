"""The per-step formulation of the same model: one ``pyro.sample`` site per time step.

This is the Pyro DMM example's style (``pyro.markov`` over time, ``.mask`` per step). It is
slower, and kept only as an oracle: for the same z it must score exactly what the
sequence-level production model scores.
"""

import pyro
import pyro.distributions as dist
import torch


def stepwise_model(model, batch, z):
    """p(y, z) with sites ``z_t`` and ``x_t``, each step under ``pyro.markov``, given the
    trajectory ``z: (B, T, Z)`` as observations so the densities can be compared."""
    embedded_inputs = model.embedded(batch)[0]
    state = model.fwd.initial(batch.batch_size, embedded_inputs)
    lstm = model.fwd.lstm
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            loc, scale = model.prior(state[0])
            pyro.sample(f"z_{t}", dist.Normal(loc, scale).mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            step_input = torch.cat([embedded_inputs[:, t], model.fwd.z_proj(z[:, t])], dim=-1)
            state = torch.lstm_cell(step_input, state, *weights)
            emission = model.emission.step_dist(state[0])
            if model.config.emission == "categorical":
                pyro.sample(f"x_{t}", emission.mask(mask_t), obs=batch.x[:, t])
            else:
                pyro.sample(f"x_{t}", emission.mask(mask_t[:, None]).to_event(1), obs=batch.x[:, t])


def stepwise_log_joint(model, batch, z) -> torch.Tensor:
    """sum over sites of log p per sequence ``(B,)`` from the per-step model."""
    trace = pyro.poutine.trace(stepwise_model).get_trace(model, batch, z)
    trace.compute_log_prob()
    return sum(node["log_prob"] for node in trace.nodes.values() if node["type"] == "sample")
