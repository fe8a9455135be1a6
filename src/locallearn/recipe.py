"""Training recipes: the optimisation settings (and model settings) a rule is known to train
with, and the resolution of a run's configuration from them.

Precedence, field by field: what the user set (flag, config file, API keyword) > the rule's
recipe > the global default (``GLOBAL``). A RunConfig field left at ``None`` is "not set";
``resolve`` fills it, so the configuration written into a run directory holds the resolved
values and a resumed run trains exactly as the original did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from locallearn.config import RunConfig

# The RunConfig fields a recipe sets; every one defaults to None in RunConfig.
TRAINING_FIELDS = ("optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "batch_size")


@dataclass(frozen=True)
class Recipe:
    """A rule's published (or validated) training settings, with where they come from.

    A field left at None falls through to ``GLOBAL``. ``model`` holds model options the rule
    needs (``{"activation": "tanh"}``); they apply only to models that take the option.
    """

    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr_schedule: str | None = None
    batch_size: int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def settings(self) -> dict[str, Any]:
        """The fields this recipe sets (training and model), for listings."""
        out = {k: getattr(self, k) for k in TRAINING_FIELDS if getattr(self, k) is not None}
        return {**out, **self.model}

    def text(self) -> str:
        """One line: ``adam lr 0.001 batch 100 activation tanh``; 'global default' if empty."""
        s = self.settings()
        if not s:
            return f"global default ({GLOBAL.optimizer} lr {GLOBAL.lr:g} batch {GLOBAL.batch_size})"
        parts = []
        for key, value in s.items():
            name = {"optimizer": "", "lr_schedule": "schedule", "batch_size": "batch"}.get(
                key, key.replace("_", " ")
            )
            parts.append(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")
        return " ".join(p.strip() for p in parts)


# The MNIST-1D reference recipe (Greydanus 2020: Adam lr 1e-2, batch 100), the project's
# default since its first run: a rule with no recipe of its own trains with it.
GLOBAL = Recipe(
    optimizer="adam",
    lr=1e-2,
    momentum=0.9,  # SGD only
    weight_decay=0.0,
    lr_schedule="constant",
    batch_size=100,
    source="MNIST-1D reference CNN (Greydanus 2020): Adam lr 1e-2, batch 100",
)


def resolve(cfg: RunConfig, recipe: Recipe | None, model_options: Iterable[str] = ()) -> RunConfig:
    """``cfg`` with every unset training field taken from ``recipe``, then from ``GLOBAL``,
    and the recipe's model settings applied where the model takes them and the user did not
    set them. ``recipe_from`` records which recipe filled the gaps."""
    recipe = recipe or Recipe()
    changes: dict[str, Any] = {}
    used = False
    for key in TRAINING_FIELDS:
        if getattr(cfg, key) is not None:
            continue
        value = getattr(recipe, key)
        used = used or value is not None
        changes[key] = value if value is not None else getattr(GLOBAL, key)
    # A config resolved before (a resumed run, --same-recipe) takes no model settings.
    takes = set(model_options) if cfg.recipe_from is None else set()
    for key, value in recipe.model.items():
        if key in takes and getattr(cfg, key) is None:
            changes[key] = value
            used = True
    if cfg.recipe_from is None and changes:
        changes["recipe_from"] = f"{cfg.rule} recipe" if used else "global default"
    return cfg.replace(**changes) if changes else cfg


def same_recipe(cfg: RunConfig) -> RunConfig:
    """``compare --same-recipe``: every unset training field from ``GLOBAL`` for all rules."""
    changes: dict[str, Any] = {
        k: getattr(GLOBAL, k) for k in TRAINING_FIELDS if getattr(cfg, k) is None
    }
    return cfg.replace(**changes, recipe_from="same recipe (--same-recipe)")


def settings_used(cfg: RunConfig) -> dict[str, Any]:
    """The resolved training settings of a run, for its summary and the compare table."""
    out = {k: getattr(cfg, k) for k in TRAINING_FIELDS}
    if cfg.activation is not None:
        out["activation"] = cfg.activation
    return out
