"""Seeds, a clean Pyro state and validation on for every test; helpers to build small models."""

import pyro
import pytest
import torch

from pyro_zforcing.config import DataConfig, ModelConfig
from pyro_zforcing.data import collate_sequences, load_dataset


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.enable_validation(False)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataConfig())


def small_config(**overrides) -> ModelConfig:
    values = dict(input_dim=1, emission="bernoulli", emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)
    values.update(overrides)
    return ModelConfig(**values)


def ragged_digit_batch(digits, lengths=(64, 40, 17), dtype=torch.float64):
    """Digits cut to different lengths, padded: a ragged batch of real data."""
    return collate_sequences([digits.train[i][:n] for i, n in enumerate(lengths)]).to("cpu", dtype)
