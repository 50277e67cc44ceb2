"""Recipes: an experiment's settings as a TOML file (``--preset NAME`` or ``--config FILE``).

A recipe names its dataset and sets fields of the config dataclasses by their names::

    dataset = "timit"          # top level: the dataset the recipe is for (required)
    [model]                    # ModelConfig fields (input_dim and emission come from the data)
    rnn_dim = 1024
    [train]                    # TrainConfig fields
    kl_start = 0.2
    [data]                     # DataConfig fields (data_dir, cache_dir, skip_bad_files) and,
    stream = true              # under any other name, the dataset's options (--data-option)

The shipped recipes live in ``pyro_zforcing/training/presets/`` (one file per experiment, every value
commented with its source). Precedence: dataclass defaults < recipe < flags typed on the
command line. Unknown keys are refused here by name; dataset options are checked by the
dataset's loader, which names the option and the ones it knows.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from ..config import DataConfig, ModelConfig, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the backport has the same interface
    import tomli as tomllib

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SECTIONS = ("model", "train", "data")
# Fields a recipe may not set: the data decide the model's input, the run's seed is one flag.
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("input_dim", "emission"))
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name not in ("dataset", "seed", "options"))


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: where it came from and the values of each section."""

    name: str
    path: str
    dataset: str
    model: Dict = field(default_factory=dict)
    train: Dict = field(default_factory=dict)
    data: Dict = field(default_factory=dict)
    options: Dict = field(default_factory=dict)

    def describe(self) -> Dict:
        """What ``config.json`` records about the recipe."""
        return {"name": self.name, "file": self.path, "dataset": self.dataset}


def preset_names():
    """The recipes shipped with the package, by name."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"--preset: unknown recipe {name!r}; known: {', '.join(preset_names())}")
    return path


def load_recipe(path, *, name: Optional[str] = None) -> Recipe:
    """Read and check the recipe file ``path``; errors name the file and the offending key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config: no such file {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable TOML recipe ({error})") from None
    unknown = sorted(set(values) - {"dataset", *SECTIONS})
    if unknown:
        raise ValueError(f"{path}: unknown recipe key {unknown[0]!r} (a recipe has 'dataset' and the "
                         f"sections {', '.join(f'[{s}]' for s in SECTIONS)})")
    dataset = values.get("dataset")
    if not isinstance(dataset, str):
        raise ValueError(f"{path}: 'dataset' must name the recipe's dataset, got {dataset!r}")
    sections = {}
    for section in SECTIONS:
        table = values.get(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{section}] must be a table, got {table!r}")
        sections[section] = dict(table)
    for section, known in (("model", MODEL_FIELDS), ("train", TRAIN_FIELDS)):
        unknown = sorted(set(sections[section]) - set(known))
        if unknown:
            raise ValueError(f"{path}: unknown recipe key [{section}] {unknown[0]!r}; known: {', '.join(known)}")
    data = {k: v for k, v in sections["data"].items() if k in DATA_FIELDS}
    options = {k: v for k, v in sections["data"].items() if k not in DATA_FIELDS}
    return Recipe(name=name or path.stem, path=str(path.resolve()), dataset=dataset,
                  model=sections["model"], train=sections["train"], data=data, options=options)


def find_recipe(*, preset: Optional[str], config: Optional[str]) -> Optional[Recipe]:
    """The recipe named by ``--preset`` or ``--config`` (not both), or None."""
    if preset and config:
        raise ValueError("--preset and --config are exclusive: give one recipe")
    if preset:
        return load_recipe(preset_path(preset), name=preset)
    if config:
        return load_recipe(config)
    return None


def check_dataset(recipe: Recipe, dataset: Optional[str]) -> str:
    """The dataset to use: the recipe's, unless ``--dataset`` names another, which is an error."""
    if dataset is not None and dataset != recipe.dataset:
        raise ValueError(f"recipe {recipe.name!r} ({recipe.path}) is for dataset {recipe.dataset!r}, "
                         f"not --dataset {dataset}")
    return recipe.dataset


def apply_recipe(recipe: Recipe, *, model: Dict, train: TrainConfig, data: DataConfig, given: set):
    """``(model sizes, train config, data config)`` with the recipe's values set wherever the
    field in ``given`` (set by a flag typed on the command line) does not already decide it.

    Dataset options merge per key: a ``--data-option`` typed for a key beats the recipe's.
    """
    model = {**model, **{k: v for k, v in recipe.model.items() if k not in given}}
    train_values = {k: v for k, v in recipe.train.items() if k not in given}
    data_values = {k: v for k, v in recipe.data.items() if k not in given}
    options = {**recipe.options, **data.options}
    try:
        train = dataclasses.replace(train, **train_values)
        data = dataclasses.replace(data, **data_values, options=options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{recipe.path}: {error}") from None
    return model, train, data
