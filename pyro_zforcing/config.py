"""Frozen configuration dataclasses, saved inside every checkpoint.

A checkpoint alone rebuilds its model: ``ModelConfig`` fixes the networks, ``DataConfig``
fixes how the data was read, ``TrainConfig`` fixes the objective and optimiser.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

EMISSIONS = ("gaussian", "bernoulli", "categorical", "gmm", "nade", "ar-gmm", "ar-rnn")  # pyro_zforcing.emissions.EMISSIONS
# the data each emission models (a dataset's DataInfo.emission): binary frames, real frames or tokens
EMISSION_DATA = {"bernoulli": "bernoulli", "nade": "bernoulli", "gaussian": "gaussian", "gmm": "gaussian",
                 "ar-gmm": "gaussian", "ar-rnn": "gaussian", "categorical": "categorical"}
MIXTURE_EMISSIONS = ("gmm", "ar-gmm", "ar-rnn")
EMISSION_SIZES = ("nade_hidden", "made_hidden", "frame_rnn_hidden")  # the autoregressive emissions' hidden units
LAYER_SIZES = ("emb_dim", "rnn_dim", "z_dim", "mlp_dim") + EMISSION_SIZES  # ModelConfig's widths, each >= 1
MODEL_NAMES = ("zforcing", "rnn", "vrnn", "srnn", "dmm", "storn")  # pyro_zforcing.models.MODELS, checked by a test
PRIORS = ("conditional", "standard")
FIRST_PRIORS = ("transition", "standard")  # the DMM's p(z_1)
AUX_INPUTS = ("hz", "z")
AUX_LOSSES = ("gaussian", "l2")
Z_CONDITIONINGS = ("concat", "cond-ln")
EMBEDDINGS = ("linear", "leaky")
INITS = ("orthogonal", "torch")
KL_ESTIMATORS = ("analytic", "sampled")
DEFAULT_KL = "analytic"  # the one default KL estimator: TrainConfig.kl, Objective, build_objective, --kl


def check_finite(config) -> None:
    """Every number of a config dataclass (options included) must be a finite number of its
    field's type: NaN passes every range check (``nan < 0`` is False) and would silently switch
    a term off."""
    for f in dataclasses.fields(config):
        values = getattr(config, f.name)
        if f.type in ("int", "float", "Optional[int]") and not (values is None and f.type.startswith("Optional")):
            wanted = (int,) if "int" in f.type else (int, float)
            if isinstance(values, bool) or not isinstance(values, wanted):
                raise ValueError(f"{f.name} must be {'a whole' if 'int' in f.type else 'a'} number, got {values!r}")
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            if isinstance(value, float) and not math.isfinite(value):
                name = f.name if key is None else f"option {key}"
                raise ValueError(f"{name} must be a finite number, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Which model (``model``: a name of ``pyro_zforcing.models.MODELS``), its sizes and options.

    ``emission="gmm"`` is a mixture of ``mixtures`` diagonal Gaussians; ``"nade"`` an RNN-NADE
    frame of ``nade_hidden`` hidden units (binary frames); ``"ar-gmm"`` a MADE of ``made_hidden``
    hidden units giving each dimension a mixture of ``mixtures`` 1-D Gaussians (real frames),
    ``"ar-rnn"`` the same mixtures from a GRU of ``frame_rnn_hidden`` units run across the frame
    (:mod:`pyro_zforcing.emissions`); ``prior="standard"`` is VRNN-I's N(0, I) prior (vrnn only).
    ``first_prior`` is the DMM's p(z_1) (dmm only):
    ``"transition"`` pushes a learned z_0 through the transition (Pyro's ``examples/dmm.py``),
    ``"standard"`` is N(0, I) (the authors' code, clinicalml/structuredinference).

    ``input_dim`` is the frame size (gaussian/bernoulli) or the vocabulary size (categorical).
    Defaults follow the authors' code (``model.py``) where it is explicit: prior, posterior and
    aux parameters clamped to +-``logvar_clamp`` (8), the Gaussian emission unclamped
    (``emission_clamp=None``; a float clamps its mean and log-variance to +-value), leaky slope
    1/3, aux from [h_{t-1}, z_t], frames embedded by a Linear layer only (``embedding="leaky"``
    adds a bounded leaky ReLU), orthogonal recurrent weights and zero LSTM biases
    (``init="torch"``: PyTorch's defaults). ``z_conditioning="concat"`` feeds W z_t + c to the
    forward LSTM with its input; ``"cond-ln"`` is the authors' ``cond_ln``: a layer-normalised
    LSTM whose recurrent gains and biases come from an MLP of z_t. Sizes are small enough for
    the embedded default dataset.
    """

    input_dim: int
    emission: str = "bernoulli"
    emb_dim: int = 64
    rnn_dim: int = 128
    z_dim: int = 16
    mlp_dim: int = 128
    aux_input: str = "hz"
    aux_loss: str = "gaussian"
    logvar_clamp: float = 8.0
    emission_clamp: Optional[float] = None
    z_conditioning: str = "concat"
    embedding: str = "linear"
    init: str = "orthogonal"
    model: str = "zforcing"
    mixtures: int = 1
    prior: str = "conditional"
    nade_hidden: int = 150
    made_hidden: int = 256
    frame_rnn_hidden: int = 64
    first_prior: str = "transition"

    def __post_init__(self):
        check_finite(self)
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        if self.mixtures < 1:
            raise ValueError(f"mixtures must be >= 1, got {self.mixtures}")
        if self.mixtures > 1 and self.emission not in MIXTURE_EMISSIONS:
            raise ValueError(f"mixtures={self.mixtures} needs the {', '.join(MIXTURE_EMISSIONS[:-1])} or "
                             f"{MIXTURE_EMISSIONS[-1]} emission, got {self.emission!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior == "standard" and self.model != "vrnn":
            raise ValueError(f"prior='standard' (VRNN-I) is an option of the vrnn model, not {self.model!r}")
        if self.first_prior not in FIRST_PRIORS:
            raise ValueError(f"first_prior must be one of {FIRST_PRIORS}, got {self.first_prior!r}")
        if self.first_prior != "transition" and self.model != "dmm":
            raise ValueError(f"first_prior={self.first_prior!r} is an option of the dmm model, not {self.model!r}")
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {self.input_dim}")
        if self.emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {EMISSIONS}, got {self.emission!r}")
        if self.aux_input not in AUX_INPUTS:
            raise ValueError(f"aux_input must be one of {AUX_INPUTS}, got {self.aux_input!r}")
        if self.aux_loss not in AUX_LOSSES:
            raise ValueError(f"aux_loss must be one of {AUX_LOSSES}, got {self.aux_loss!r}")
        for name in LAYER_SIZES:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.logvar_clamp <= 0:
            raise ValueError(f"logvar_clamp must be > 0, got {self.logvar_clamp}")
        if self.emission_clamp is not None and not self.emission_clamp > 0:
            raise ValueError(f"emission_clamp must be > 0 or None, got {self.emission_clamp}")
        for name, known in (("z_conditioning", Z_CONDITIONINGS), ("embedding", EMBEDDINGS), ("init", INITS)):
            if getattr(self, name) not in known:
                raise ValueError(f"{name} must be one of {known}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and how (see ``pyro_zforcing.data`` for each dataset's protocol).

    ``options`` holds dataset-specific settings (frame size, chunk length, vocabulary size...);
    each loader validates the keys it accepts and documents its defaults.
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    seed: int = 0
    skip_bad_files: bool = False
    cache_dir: Optional[str] = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        check_finite(self)


@dataclass(frozen=True)
class TrainConfig:
    """Objective, optimiser and loop settings.

    KL annealing: the latent site's weight starts at ``kl_start`` and grows by ``kl_step`` per
    update up to 1 (``kl_start=1`` disables it). Aux annealing: beta moves from ``aux_start``
    to ``aux_end`` by ``aux_step`` per update (``aux_step=0`` keeps ``aux_start``); with
    ``aux_anneal_epochs`` set, a new run sets ``aux_step`` to cover the distance in that many
    epochs of its own batches (the authors' Blizzard script: two epochs). The backward
    language-model cost (``bwd_weight``) applies only while the aux weight is > 0, as the authors'.
    The default beta (5e-4) is small because the Gaussian aux score sums over rnn_dim
    dimensions and every step: it is thousands of nats per sequence, and beta >= 0.01 swamps
    the ELBO on the default digits (measured in docs/results.md).
    ``word_dropout`` (Bowman et al., 2016, "Generating sentences from a continuous space"): on
    token data, each training update replaces every input token u_{t+1} = y_t by ``<unk>`` with
    this probability, drawn from the run's seeded RNG; the targets y_t, the guide's view of y and
    every bound, validation and sample are untouched (:func:`pyro_zforcing.data.base.drop_words`).
    ``clip_norm`` clips the global gradient norm as the authors do (``clip_grad_norm_``),
    not Pyro's per-element ``ClippedAdam`` clamp.
    ``kl`` is the training estimator of the KL term along one trajectory z ~ q: ``"analytic"``
    (the default, ``DEFAULT_KL``; the authors': the closed-form Gaussian KL of every step given
    the sampled z_{<t}) or
    ``"sampled"`` (``Trace_ELBO``'s log q(z) - log p(z)); the same expectation, and reported
    bounds do not depend on it (``pyro_zforcing.infer``).

    Schedule: the learning rate is multiplied by ``lr_decay`` after ``lr_patience`` epochs
    without a better validation bound, and training stops after ``early_stop_patience`` such
    epochs; neither happens before epoch ``min_epochs``. The defaults (50, 10, 20) outlast the
    marginal plateau a model can sit on for tens of epochs before it learns to use the past
    (Z-Forcing on JSB Chorales: 40-50 epochs at -11.0 nats per step; docs/polyphonic.md), which
    shorter patiences mistook for convergence.

    Speed only, the same numbers: ``compile`` compiles the per-step cell of the z-driven loop with
    ``torch.compile`` (:mod:`pyro_zforcing.steps`); ``cuda_graphs`` captures the whole update (and
    the validation bound) as CUDA graphs, one per batch size and length bucket: lengths are padded
    up to a multiple of ``length_bucket`` steps (:mod:`pyro_zforcing.graphs`). A resumed run may
    turn either on or off.
    """

    guide: str = "backward"
    batch_size: int = 32
    lr: float = 1e-3
    adam_eps: float = 1e-5
    clip_norm: float = 100.0
    epochs: int = 20
    max_steps: Optional[int] = None
    kl_start: float = 1.0
    kl_step: float = 0.0
    aux_start: float = 0.0005
    aux_end: float = 0.0005
    aux_step: float = 0.0
    bwd_weight: float = 0.0
    lr_decay: float = 0.5
    lr_patience: int = 10
    early_stop_patience: int = 20
    min_epochs: int = 50
    log_every: int = 20
    checkpoint_every: Optional[int] = None  # updates between mid-epoch last.pt writes
    seed: int = 0
    device: str = "cpu"
    validate: bool = False
    aux_anneal_epochs: Optional[float] = None
    kl: str = DEFAULT_KL
    compile: bool = False
    cuda_graphs: bool = False
    length_bucket: int = 16
    word_dropout: float = 0.0

    def __post_init__(self):
        check_finite(self)
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be one of {KL_ESTIMATORS}, got {self.kl!r}")
        positive = ("batch_size", "lr", "adam_eps", "clip_norm", "epochs", "log_every", "lr_patience",
                    "early_stop_patience", "length_bucket")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not 0.0 <= self.kl_start <= 1.0:
            raise ValueError(f"kl_start must be in [0, 1], got {self.kl_start}")
        for name in ("kl_step", "aux_start", "aux_end", "aux_step", "bwd_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.aux_anneal_epochs is not None and self.aux_anneal_epochs <= 0:
            raise ValueError(f"aux_anneal_epochs must be > 0, got {self.aux_anneal_epochs}")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {self.min_epochs}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


# TrainConfig fields that change how fast a run trains, never what it trains to
SPEED_ONLY_FIELDS = ("checkpoint_every", "compile", "cuda_graphs", "length_bucket")


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls, values: dict):
    """Rebuild ``cls`` from :func:`to_dict` output, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    return cls(**values)
