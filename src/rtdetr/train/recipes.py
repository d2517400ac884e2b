"""Named training recipes: the settings a kind of run needs, selectable with ``rtdetr train --recipe``.

``reference`` is the paper's COCO recipe of each preset (``RTDETRConfig.train``: 6x
schedule, lr 1e-4 with a 10x smaller backbone lr, 2000 warm-up steps, EMA 0.9999,
strong augmentation and multi-scale): right for fine-tuning released weights on
a GPU. ``scratch`` trains from random weights on a few CPU (or GPU) minutes: what
``rtdetr demo`` and ``benchmarks/train_synthetic.py`` run. Flags given on the command
line win over the recipe's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError

__all__ = ["Recipe", "RECIPES", "get_recipe", "list_recipes"]


@dataclass(frozen=True)
class Recipe:
    """A named set of :class:`~rtdetr.train.TrainConfig` fields and model overrides.

    Attributes:
        name: what ``--recipe`` takes.
        summary: one line for ``--help``.
        train: TrainConfig fields (empty: the preset's reference recipe).
        model: model config overrides (``get_config`` keywords, e.g. ``num_queries``).
        default_model: the preset ``rtdetr train --recipe NAME`` trains when ``--model``
            is omitted (None: the CLI's usual default).
    """

    name: str
    summary: str
    train: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    default_model: str | None = None

    def model_overrides_for(self, model_name: str) -> dict[str, Any]:
        """The recipe's model overrides that ``model_name`` has fields for (e.g. ``use_lab``
        only for HGNetv2 backbones); the others do not apply to it and are left out."""
        return {k: v for k, v in self.model.items() if _applies(model_name, k, v)}


# From scratch on a few CPU minutes, measured in docs/recipe_sweep.md and docs/benchmarks.md:
# no pretrained backbone, so the backbone trains at the full lr; short warm-ups; cosine
# decay to make the most of the budget; EMA over ~100 steps (0.9999 would average in the
# first, untrained weights); no strong augmentation and no multi-scale (ten epochs are too
# few to gain from them: AP50 0.09 vs 0.57 in 15 minutes); batch 4 (twice the optimizer
# steps of batch 8 for ~0.85x its images/s; at a slow CPU's speed the 4-minute demo scored AP50
# 0.28 at batch 16 and 0.18 at batch 2, against 0.52 / 0.54 at batch 4 in the same pairs: too
# few steps, too noisy a gradient); loading in the training process on a small
# CPU (num_workers None); one evaluation, at the end; 100 queries (a few objects per image);
# 2 decoder layers: about 13% less CPU per step than 3 at 320 px, and no worse AP after the
# same number of steps (docs/convergence.md); 1 layer fell far behind, and removing the
# denoising groups (16% cheaper) halved AP. lr (without dense supervision): after 1000 steps 8e-4 beat 4e-4 in all
# four pairs (set a, seeds 0-2: AP 0.29/0.31/0.26 vs 0.20/0.23/0.23; set b: 0.23 vs 0.14), but
# one fair 10-minute run at 8e-4 stalled for its first ~800 steps (AP 0.25 vs 0.44 at 4e-4)
# and 1.2e-3 collapsed: 6e-4 (AP 0.42 after 1300 steps) keeps a margin from that cliff
# (docs/convergence.md). Dense task-aligned supervision of every encoder token
# (dense_enc_outputs, training only): after 650 steps AP 0.183 / 0.205 vs 0.111 / 0.108
# (seeds 0 / 1), after 1300 steps 0.443 vs 0.415, for ~2% of a step. With it the higher lr
# no longer collapses: after 1300 steps lr 6e-4 / 8e-4 / 1e-3 gave AP 0.443 / 0.492 / 0.553,
# so the recipe uses 1e-3 (docs/convergence.md). D-FINE's distribution refinement of the box
# edges (dfine_hgnetv2_n) gave AP 0.558 / 0.617 vs 0.479 / 0.541 (seeds 0 / 1) after 1300 steps
# for the same CPU per step (seventh round). The preset: dfine_cspdarknet_n, the same detector
# on a CSPDarknet (C2f) backbone, which trains 1.36x the images per second of HGNetv2-B0's and
# after 13 minutes on one thread gave AP 0.670 vs 0.499 (docs/convergence.md, eighth round).
# The EMA's horizon is capped at 5% of a budgeted run's steps: after 500 steps the raw weights
# scored AP50 0.026-0.045 above an EMA over ~100 steps and 0.007-0.011 above one over ~33
# (same checkpoints); after 10 and 20 minutes the two were level (ninth round).
# The lr holds its peak for the first half of the run before the cosine (D-FINE / DEIM's
# flat-cosine) and Adam's second moment averages over ~100 steps (beta2 0.99, not 0.999):
# after 400 steps on the demo's data AP50 0.59-0.66 with both (two seeds), 0.51-0.69 with the
# flat half alone and 0.43-0.49 with neither (three seeds; sixteenth round). A short run from random
# weights spends too many of its steps at a decayed lr, and a 1000-step second moment
# outlasts it, still averaging how its first steps' gradients were spread over the weights.
_SCRATCH_TRAIN: dict[str, Any] = dict(
    batch_size=4,
    lr=1e-3,
    backbone_lr=1e-3,
    warmup_iters=30,
    ema_warmup=30,
    ema_decay=0.99,
    ema_max_share=0.05,
    lr_schedule="cosine",
    lr_flat_share=0.5,
    betas=(0.9, 0.99),
    multi_scale=False,
    stop_epoch=0,
    eval_every=10**6,
    num_workers=None,
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("reference", "the paper's COCO recipe of the preset (fine-tuning, long GPU runs)"),
        Recipe(
            "scratch",
            "from random weights in minutes: full lr everywhere, flat-cosine, short warm-up and EMA, no strong aug, "
            "100 queries, 2 decoder layers, dense supervision of the encoder tokens; "
            "preset dfine_cspdarknet_n unless --model names another",
            train=_SCRATCH_TRAIN,
            model={"num_queries": 100, "num_layers": 2, "dense_enc_outputs": True},
            default_model="dfine_cspdarknet_n",
        ),
    )
}


def _applies(model_name: str, key: str, value: Any) -> bool:
    from ..config import get_config

    try:
        get_config(model_name, **{key: value})
    except ConfigError:
        return False
    return True


def list_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown training recipe {name!r}; known: {', '.join(RECIPES)}") from None
