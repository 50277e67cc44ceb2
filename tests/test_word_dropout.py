"""Word dropout (``--word-dropout P``): the rate, the untouched targets, every model reading the
dropped inputs, and bounds and samples that do not depend on the flag."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_zforcing.build import build_objective, load_trained
from pyro_zforcing.config import DataConfig, ModelConfig, TrainConfig
from pyro_zforcing.data import collate_sequences, load_dataset
from pyro_zforcing.data.base import drop_words, word_dropout_id
from pyro_zforcing.evaluation.bounds import evaluate_split
from pyro_zforcing.evaluation.samples import interpolate
from pyro_zforcing.infer import sequence_terms
from pyro_zforcing.training.trainer import Trainer

SIZES = dict(emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)
SENTENCES = ["the cat sat on the mat .", "a dog ran far away !", "the dog sat .", "cats and dogs ran .",
             "a cat is on a mat .", "the mat is red .", "dogs sat on the red mat .", "the cat ran away ."]


@pytest.fixture
def text_splits(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    config = DataConfig(dataset="text", data_dir=str(corpus), cache_dir=str(tmp_path / "cache"),
                        options={"valid_fraction": 0.2, "test_fraction": 0.2})
    return config, load_dataset(config)


def test_replacement_rate_is_p_within_three_standard_errors_and_targets_are_untouched():
    torch.manual_seed(3)
    lengths = torch.randint(5, 60, (400,))
    sequences = [np.random.default_rng(i).integers(2, 50, int(n)) for i, n in enumerate(lengths)]
    batch = collate_sequences(sequences)
    p = 0.3
    dropped = drop_words(batch, p, unk_id=0)
    assert torch.equal(dropped.x, batch.x)  # the targets
    real = batch.mask
    assert torch.equal(dropped.inputs[~real], batch.x[~real])  # padding is never touched
    changed = dropped.inputs[real] != batch.x[real]
    assert torch.all(dropped.inputs[real][changed] == 0)  # a changed input is <unk>
    n = int(real.sum())
    rate = float(changed.double().mean())
    assert abs(rate - p) < 3 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("model", ["zforcing", "rnn", "vrnn", "srnn", "storn"])
def test_every_model_reads_the_dropped_inputs_and_observes_the_clean_targets(model, text_splits):
    _, splits = text_splits
    info = splits.info
    objective = build_objective(ModelConfig(input_dim=info.dim, emission="categorical", model=model, **SIZES))
    batch = collate_sequences(splits.train[:6]).to("cpu", torch.float32)
    same = replace(batch, inputs=batch.x.clone())
    dropped = replace(batch, inputs=torch.zeros_like(batch.x))  # every input word <unk>
    results = []
    for b in (batch, same, dropped):
        torch.manual_seed(0)
        results.append(sequence_terms(objective.model, objective.guide, b)["rec"])
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], results[2])
    inputs, targets = objective.model.embedded(dropped)
    assert torch.equal(targets, objective.model.embed(batch.x))
    assert torch.equal(inputs[:, 1:], objective.model.embed(dropped.inputs)[:, :-1])


def test_training_with_word_dropout_is_seeded_and_changes_the_updates(tmp_path, text_splits):
    data, splits = text_splits
    weights = {}
    for name, p in (("a", 0.5), ("b", 0.5), ("c", 0.0)):
        trainer = Trainer.create(data_config=data, train_config=TrainConfig(batch_size=4, max_steps=2, word_dropout=p),
                                 out_dir=tmp_path / name, model_sizes=SIZES, quiet=True, splits=splits)
        trainer.fit()
        weights[name] = torch.cat([q.detach().flatten() for q in trainer.objective.parameters()])
    assert torch.equal(weights["a"], weights["b"])
    assert not torch.equal(weights["a"], weights["c"])
    assert '"word_dropout": 0.5' in (tmp_path / "a" / "config.json").read_text()


def test_bounds_and_samples_of_a_trained_model_do_not_depend_on_the_flag(tmp_path, text_splits):
    data, splits = text_splits
    trainer = Trainer.create(data_config=data, train_config=TrainConfig(batch_size=4, max_steps=3, word_dropout=0.5),
                             out_dir=tmp_path / "run", model_sizes=SIZES, quiet=True, splits=splits)
    trainer.fit()
    trained, _, state = load_trained(tmp_path / "run" / "checkpoints" / "last.pt", need_data=False)
    assert state["train_config"].word_dropout == 0.5
    plain = build_objective(state["model_config"], state["train_config"].guide)
    plain.load_state_dict(trained.state_dict())
    outputs = []
    for objective in (trainer.objective, plain):  # the trainer's own (train mode) and a flagless copy
        torch.manual_seed(1)
        result = evaluate_split(objective, splits.valid, splits.info, num_samples=3)
        samples = objective.model.generate(3, 7)
        _, decoded = interpolate(objective, splits.valid[0], splits.valid[1], num=3)
        outputs.append((result.elbo, result.iwae, result.kl, samples, decoded))
    for a, b in zip(*outputs):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_word_dropout_is_refused_where_there_is_no_word_to_drop(tmp_path, digits, text_splits):
    with pytest.raises(ValueError, match="--word-dropout replaces input tokens: digits has bernoulli frames"):
        word_dropout_id(digits.info)
    tokens = replace(digits.info, emission="categorical", extra={})
    with pytest.raises(ValueError, match="--word-dropout needs an <unk> token"):
        word_dropout_id(tokens)
    data, splits = text_splits
    with pytest.raises(ValueError, match="--word-dropout: the dmm model reads no past word"):
        Trainer.create(data_config=data, train_config=TrainConfig(guide="combiner", word_dropout=0.1),
                       out_dir=tmp_path / "dmm", model_sizes={**SIZES, "model": "dmm"}, quiet=True, splits=splits)
    with pytest.raises(ValueError, match="word_dropout must be in"):
        TrainConfig(word_dropout=1.0)
