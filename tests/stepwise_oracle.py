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


def _observe(name, step, mask_t, value):
    """A masked per-step observation whether the step's batch shape is (B,) or (B, D)."""
    if len(step.batch_shape) == 1:
        return pyro.sample(name, step.mask(mask_t), obs=value)
    return pyro.sample(name, step.mask(mask_t[:, None]).to_event(1), obs=value)


def _lstm_weights(lstm):
    return (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)


def stepwise_vrnn(model, batch, z):
    """The VRNN one step at a time: z_t ~ p(z_t | h_{t-1}), y_t ~ p(y_t | z_t, h_{t-1}),
    h_t = LSTM([phi_x(y_t), phi_z(z_t)], h_{t-1}); ``z: (B, T, Z)`` observed."""
    phi_x = model.embedded(batch)[1]
    h = phi_x.new_zeros(batch.batch_size, model.config.rnn_dim)
    state = (h, h)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            loc, scale = model.prior(state[0])
            pyro.sample(f"z_{t}", dist.Normal(loc, scale).mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            phi_z = model.phi_z(z[:, t])
            _observe(f"x_{t}", model.emission.step_dist(phi_z, state[0]), mask_t, batch.x[:, t])
            state = torch.lstm_cell(torch.cat([phi_x[:, t], phi_z], -1), state, *_lstm_weights(model.lstm))


def stepwise_srnn(model, batch, z):
    """The SRNN one step at a time: d_t = LSTM(e(u_t), d_{t-1}), z_t ~ p(z_t | z_{t-1}, d_t),
    y_t ~ p(y_t | z_t, d_t); ``z: (B, T, Z)`` observed."""
    inputs = model.embedded(batch)[0]
    d = inputs.new_zeros(batch.batch_size, model.config.rnn_dim)
    state = (d, d)
    z_prev = inputs.new_zeros(batch.batch_size, model.config.z_dim)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            state = torch.lstm_cell(inputs[:, t], state, *_lstm_weights(model.rnn))
            loc, scale = model.prior(z_prev, state[0])
            pyro.sample(f"z_{t}", dist.Normal(loc, scale).mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            _observe(f"x_{t}", model.emission.step_dist(z[:, t], state[0]), mask_t, batch.x[:, t])
            z_prev = z[:, t]


def stepwise_dmm(model, batch, z):
    """The DMM one step at a time (Pyro's examples/dmm.py): z_t ~ p(z_t | z_{t-1}) from z_0,
    y_t ~ p(y_t | z_t); ``z: (B, T, Z)`` observed."""
    z_prev = model.z_0.expand(batch.batch_size, -1)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            loc, scale = model.transition(z_prev)
            pyro.sample(f"z_{t}", dist.Normal(loc, scale).mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            _observe(f"x_{t}", model.emitter.step_dist(z[:, t]), mask_t, batch.x[:, t])
            z_prev = z[:, t]


def stepwise_storn(model, batch, z):
    """STORN one step at a time: z_t ~ N(0, I), h_t = LSTM([e(u_t), W z_t], h_{t-1}),
    y_t ~ p(y_t | h_t); ``z: (B, T, Z)`` observed."""
    inputs = model.embedded(batch)[0]
    state = model.fwd.initial(batch.batch_size, inputs)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            standard = dist.Normal(torch.zeros_like(z[:, t]), torch.ones_like(z[:, t]))
            pyro.sample(f"z_{t}", standard.mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            step_input = torch.cat([inputs[:, t], model.fwd.z_proj(z[:, t])], -1)
            state = torch.lstm_cell(step_input, state, *_lstm_weights(model.fwd.lstm))
            _observe(f"x_{t}", model.emission.step_dist(state[0]), mask_t, batch.x[:, t])


def stepwise_joint(oracle, model, batch, z) -> torch.Tensor:
    """sum over the sites of a per-step ``oracle`` of log p per sequence ``(B,)``."""
    trace = pyro.poutine.trace(oracle).get_trace(model, batch, z)
    trace.compute_log_prob()
    return sum(node["log_prob"] for node in trace.nodes.values() if node["type"] == "sample")
