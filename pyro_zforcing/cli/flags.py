"""The data, model and objective flags that ``train``, ``ablate`` and ``compare`` share, and their
resolution into configs: the dataclass defaults, then a recipe (``--preset``/``--config``), then
the flags typed on the command line."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Dict, List

from ..config import (AUX_INPUTS, AUX_LOSSES, EMBEDDINGS, EMISSIONS, FIRST_PRIORS, INITS, KL_ESTIMATORS, PRIORS,
                      Z_CONDITIONINGS, DataConfig, ModelConfig, TrainConfig)
from ..data import DATASETS
from ..guides import GUIDES
from ..models import MODELS, default_guide
from ..training.recipes import apply_recipe, check_dataset, find_recipe, preset_names
from .common import finite_float, guide_name, non_negative_int, parse_option, path_text, positive_int, seed_int

MODEL_DEFAULTS = ModelConfig(input_dim=1)


TRAIN_DEFAULTS = TrainConfig()


DEFAULT_DATASET = DataConfig().dataset


# Flags whose destination is not the config field of the same name.
FIELDS_OF_FLAG = {"patience": ("early_stop_patience",), "aux_weight": ("aux_start", "aux_end")}


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS),
                       help="dataset to train on (default: %(default)s, embedded; with a recipe, the recipe's)")
    group.add_argument("--preset", default=None, metavar="NAME",
                       help="a shipped recipe of the authors' settings: " + ", ".join(preset_names())
                            + "; typed flags override it (see docs/training.md)")
    group.add_argument("--config", default=None, type=path_text, metavar="FILE.toml",
                       help="a recipe file of the same form as the presets")
    group.add_argument("--data-dir", default=None, type=path_text, help="where the dataset's files are (default: none)")
    group.add_argument("--data-option", dest="data_options", action="append", default=[], type=parse_option,
                       metavar="KEY=VALUE", help="a dataset-specific option, repeatable (see docs/datasets.md)")
    group.add_argument("--skip-bad-files", action="store_true",
                       help="skip unreadable files and list them at the end instead of stopping")
    group.add_argument("--cache-dir", default=None, type=path_text, help="preprocessing cache folder (default: ~/.cache/pyro-zforcing)")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    m, t = MODEL_DEFAULTS, TRAIN_DEFAULTS
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(MODELS), default=m.model,
                       help="zforcing (the paper's), rnn (no latents), vrnn (Chung et al. 2015), srnn "
                            "(Fraccaro et al. 2016), dmm (Krishnan et al. 2017), storn (Bayer and Osendorfer 2014) "
                            "(default: %(default)s)")
    model.add_argument("--emission", choices=EMISSIONS, default=None,
                       help="output distribution (default: the dataset's; nade can replace bernoulli, gmm, ar-gmm or "
                            "ar-rnn gaussian; docs/emissions.md)")
    model.add_argument("--mixtures", type=positive_int, default=m.mixtures,
                       help="components of the gmm, ar-gmm and ar-rnn emissions (default: %(default)s)")
    model.add_argument("--nade-hidden", type=positive_int, default=m.nade_hidden,
                       help="hidden units of the nade emission (default: %(default)s)")
    model.add_argument("--made-hidden", type=positive_int, default=m.made_hidden,
                       help="hidden units of the ar-gmm emission's MADE (default: %(default)s)")
    model.add_argument("--frame-rnn-hidden", type=positive_int, default=m.frame_rnn_hidden,
                       help="units of the ar-rnn emission's GRU across a frame's dimensions (default: %(default)s)")
    model.add_argument("--prior", choices=PRIORS, default=m.prior,
                       help="vrnn: conditional p(z_t | h_{t-1}) or standard N(0, I) (VRNN-I) (default: %(default)s)")
    model.add_argument("--first-prior", choices=FIRST_PRIORS, default=m.first_prior,
                       help="dmm: p(z_1) from a learned z_0 through the transition (Pyro's) or N(0, I) (the "
                            "authors' code) (default: %(default)s)")
    model.add_argument("--emb-dim", type=positive_int, default=m.emb_dim, help="input embedding size (default: %(default)s)")
    model.add_argument("--rnn-dim", type=positive_int, default=m.rnn_dim, help="LSTM state size (default: %(default)s)")
    model.add_argument("--z-dim", type=positive_int, default=m.z_dim, help="latent size per step (default: %(default)s)")
    model.add_argument("--mlp-dim", type=positive_int, default=m.mlp_dim, help="hidden size of the MLP heads (default: %(default)s)")
    model.add_argument("--aux-input", choices=AUX_INPUTS, default=m.aux_input,
                       help="aux cost reconstructs b_t from [h_{t-1}, z_t] (hz, authors' code) or z_t (z, paper text) (default: %(default)s)")
    model.add_argument("--aux-loss", choices=AUX_LOSSES, default=m.aux_loss,
                       help="aux cost as a Gaussian log-density or a negative squared error (default: %(default)s)")
    model.add_argument("--z-conditioning", choices=Z_CONDITIONINGS, default=m.z_conditioning,
                       help="z_t enters the forward LSTM concatenated to its input, or as the gains and biases of "
                            "a layer-normalised LSTM (cond-ln, the authors' cond_ln) (default: %(default)s)")
    model.add_argument("--embedding", choices=EMBEDDINGS, default=m.embedding,
                       help="frame embedding: Linear (the authors') or Linear + bounded leaky ReLU (default: %(default)s)")
    model.add_argument("--init", choices=INITS, default=m.init,
                       help="orthogonal recurrent weights and zero forward-LSTM biases (the authors') or "
                            "PyTorch's defaults (default: %(default)s)")
    model.add_argument("--emission-clamp", type=finite_float, default=m.emission_clamp, metavar="FLOAT",
                       help="clamp the Gaussian emission's mean and log-variance to +-FLOAT (default: none, as the "
                            "authors; 8 was this project's earlier setting)")

    obj = parser.add_argument_group("objective")
    obj.add_argument("--guide", type=guide_name, default=None, metavar="NAME|FILE.py:CLASS|MODULE:CLASS",
                     help=f"inference network: {', '.join(sorted(GUIDES))}, or your own class, built as "
                          "CLASS(model) and recorded in the run's config (default: the model's: " + ", ".join(
                              f"{name} {default_guide(name)}" for name in MODELS) + ")")
    obj.add_argument("--aux-weight", type=finite_float, default=None,
                     help="constant aux weight beta, 0 disables the aux cost (sets --aux-start and --aux-end)")
    obj.add_argument("--aux-start", type=finite_float, default=t.aux_start, help="initial aux weight (default: %(default)s)")
    obj.add_argument("--aux-end", type=finite_float, default=t.aux_end, help="final aux weight (default: %(default)s)")
    obj.add_argument("--aux-step", type=finite_float, default=t.aux_step, help="aux weight change per update (default: %(default)s)")
    obj.add_argument("--kl-start", type=finite_float, default=t.kl_start, help="initial KL weight, 1 disables annealing (default: %(default)s)")
    obj.add_argument("--kl-step", type=finite_float, default=t.kl_step, help="KL weight increase per update (default: %(default)s)")
    obj.add_argument("--kl", choices=KL_ESTIMATORS, default=t.kl,
                     help="training estimator of the KL along the sampled z: the closed-form Gaussian KL of each step "
                          "(analytic, the authors') or log q(z) - log p(z) (sampled, Trace_ELBO's); reported bounds "
                          "do not depend on it (default: %(default)s)")
    obj.add_argument("--bwd-weight", type=finite_float, default=t.bwd_weight,
                     help="weight of the backward language-model cost on b, applied while the aux weight is > 0 (default: %(default)s)")

    obj.add_argument("--word-dropout", type=finite_float, default=t.word_dropout, metavar="P",
                     help="token data: replace each input word (never a target) by <unk> with probability P during "
                          "training only (Bowman et al., 2016; default: %(default)s)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=positive_int, default=t.batch_size, help="sequences per update (default: %(default)s)")
    opt.add_argument("--lr", type=finite_float, default=t.lr, help="Adam learning rate (default: %(default)s)")
    opt.add_argument("--clip-norm", type=finite_float, default=t.clip_norm, help="global gradient-norm clip (default: %(default)s)")
    opt.add_argument("--epochs", type=positive_int, default=t.epochs, help="passes over the training set (default: %(default)s)")
    opt.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many updates (default: no limit)")
    opt.add_argument("--patience", type=positive_int, default=t.early_stop_patience,
                     help="epochs without validation improvement before stopping (default: %(default)s)")
    opt.add_argument("--lr-patience", type=positive_int, default=t.lr_patience,
                     help="epochs without validation improvement before the rate is multiplied by --lr-decay "
                          "(default: %(default)s)")
    opt.add_argument("--lr-decay", type=finite_float, default=t.lr_decay,
                     help="factor applied to the rate on a validation plateau, 1 keeps it (default: %(default)s)")
    opt.add_argument("--min-epochs", type=non_negative_int, default=t.min_epochs,
                     help="epochs before the rate may drop or training may stop early (default: %(default)s)")
    opt.add_argument("--log-every", type=positive_int, default=t.log_every, help="updates between metric records (default: %(default)s)")
    opt.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                     help="also write checkpoints/last.pt every N updates within an epoch (default: at epoch ends)")
    opt.add_argument("--seed", type=seed_int, default=t.seed, help="seed for everything (default: %(default)s)")
    opt.add_argument("--device", default=t.device, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    opt.add_argument("--validate", action="store_true", help="turn on Pyro's argument and shape validation (about 10%% slower)")
    speed = parser.add_argument_group("speed (the same numbers; docs/performance-compiled.md)")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=t.compile,
                       help="compile the per-step cell of the z-driven loop with torch.compile (inductor needs a C++ "
                            "compiler on CPU, Triton on CUDA; off by default: 1.10-1.17x measured on one CPU core, "
                            "not measured on a GPU; see docs/performance.md)")
    speed.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=t.cuda_graphs,
                       help="capture the whole update and the validation bound as CUDA graphs, one per batch size "
                            "and length bucket, and replay them (--device cuda only; default: off)")
    speed.add_argument("--length-bucket", type=positive_int, default=t.length_bucket, metavar="STEPS",
                       help="with --cuda-graphs, pad batch lengths up to a multiple of STEPS (default: %(default)s)")


def data_config_from(args) -> DataConfig:
    return DataConfig(dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                      skip_bad_files=args.skip_bad_files, cache_dir=args.cache_dir,
                      options=dict(args.data_options))


def train_config_from(args) -> TrainConfig:
    aux_start, aux_end = args.aux_start, args.aux_end
    if args.aux_weight is not None:
        aux_start = aux_end = args.aux_weight
    return TrainConfig(guide=args.guide or default_guide(args.model), batch_size=args.batch_size, lr=args.lr, clip_norm=args.clip_norm,
                       epochs=args.epochs, max_steps=args.max_steps, kl_start=args.kl_start, kl_step=args.kl_step,
                       aux_start=aux_start, aux_end=aux_end, aux_step=args.aux_step, bwd_weight=args.bwd_weight,
                       early_stop_patience=args.patience, lr_patience=args.lr_patience, lr_decay=args.lr_decay,
                       min_epochs=args.min_epochs, log_every=args.log_every,
                       checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, validate=args.validate,
                       kl=args.kl, compile=args.compile, cuda_graphs=args.cuda_graphs,
                       length_bucket=args.length_bucket, word_dropout=args.word_dropout)


def model_sizes_from(args) -> Dict:
    sizes = {"emb_dim": args.emb_dim, "rnn_dim": args.rnn_dim, "z_dim": args.z_dim, "mlp_dim": args.mlp_dim,
             "aux_input": args.aux_input, "aux_loss": args.aux_loss, "z_conditioning": args.z_conditioning,
             "embedding": args.embedding, "init": args.init, "emission_clamp": args.emission_clamp,
             "model": args.model, "mixtures": args.mixtures, "prior": args.prior,
             "nade_hidden": args.nade_hidden, "made_hidden": args.made_hidden,
             "frame_rnn_hidden": args.frame_rnn_hidden, "first_prior": args.first_prior}
    if args.emission is not None:
        sizes["emission"] = args.emission
    return sizes


def typed_fields(parser: argparse.ArgumentParser, argv: List[str]) -> set:
    """The config fields set by flags typed in ``argv`` (or by ``parser.set_defaults``, as a study
    file does): ``argv`` parsed again with every flag's default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        given = set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default
    return {name for dest in given for name in FIELDS_OF_FLAG.get(dest, (dest,))}


def resolve_settings(parser: argparse.ArgumentParser, argv: List[str], args):
    """(data config, train config, model sizes, recipe description or None): the dataclass
    defaults, then the recipe of ``--preset``/``--config``, then the flags typed in ``argv``."""
    data, train, model = data_config_from(args), train_config_from(args), model_sizes_from(args)
    recipe = find_recipe(preset=args.preset, config=args.config)
    if recipe is None:
        return data, train, model, None
    given = typed_fields(parser, argv)
    dataset = check_dataset(recipe, args.dataset if "dataset" in given else None)
    model, train, data = apply_recipe(recipe, model=model, train=train, data=replace(data, dataset=dataset),
                                      given=given)
    if "guide" not in given and "guide" not in recipe.train:  # a recipe's model trains with its own guide
        train = replace(train, guide=default_guide(model["model"]))
    return replace(data, seed=train.seed), train, model, recipe.describe()  # one seed, as --seed sets both

