"""Which training image sizes a model can take: enough encoder tokens for its queries.

The decoder selects its ``num_queries`` queries from the encoder's tokens, one per
cell of each feature map; an image of side S gives ``sum(ceil(S / s) ** 2)`` over
the decoder's feature strides ``s`` (16 and 32 for ``rtdetrv2_hgnetv2_n``: 240 px
-> 15**2 + 8**2 = 289 tokens, fewer than the default 300 queries). Multi-scale
training draws sizes below ``imgsz``, so a size that works for evaluation can still
fail in the middle of an epoch; these checks run before training starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from torch import nn

from ..errors import UserError

__all__ = ["encoder_tokens", "min_image_size", "fit_multi_scales", "check_multi_scales"]

log = logging.getLogger(__name__)


def _decoder(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def encoder_tokens(model: nn.Module, size: int) -> int:
    """Encoder tokens (query candidates) of ``model`` for a ``size`` x ``size`` image."""
    strides = _decoder(model).decoder.feat_strides
    return sum(math.ceil(size / s) ** 2 for s in strides)


def _needs_tokens(model: nn.Module) -> bool:
    # "one2many" may pick one token once per class, so it never runs out of candidates.
    return getattr(_decoder(model).decoder, "query_select_method", "default") != "one2many"


def min_image_size(model: nn.Module) -> int:
    """The smallest square image side that gives ``model`` at least ``num_queries`` tokens."""
    queries = _decoder(model).decoder.num_queries
    size = 1
    while _needs_tokens(model) and encoder_tokens(model, size) < queries:
        size += 1
    return size


def fit_multi_scales(model: nn.Module, imgsz: int, multi_scales: Sequence[int] | None) -> list[int] | None:
    """``multi_scales`` without the sizes too small for ``model``'s query count.

    Raises :class:`UserError` when ``imgsz`` itself is too small (naming the flags
    that fix it). Dropped sizes are logged in one line; None stays None.
    """
    queries = _decoder(model).decoder.num_queries
    smallest = min_image_size(model)
    if imgsz < smallest:
        max_queries = encoder_tokens(model, imgsz)
        raise UserError(
            f"--imgsz {imgsz} gives {max_queries} encoder tokens, fewer than the model's {queries} queries; "
            f"use --imgsz {_round_up(smallest, 32)} or more, or --set num_queries={max_queries}"
        )
    if not multi_scales:
        return None if multi_scales is None else list(multi_scales)
    kept = [s for s in multi_scales if s >= smallest]
    dropped = sorted({s for s in multi_scales if s < smallest})
    if dropped:
        log.info(
            "multi-scale: dropped size(s) %s (fewer encoder tokens than %d queries below %d px); training at %s",
            ", ".join(map(str, dropped)),
            queries,
            smallest,
            ", ".join(map(str, sorted(set(kept)))),
        )
    return kept


def check_multi_scales(model: nn.Module, imgsz: int, multi_scales: Sequence[int] | None) -> None:
    """Raise :class:`UserError` if any training size gives ``model`` fewer tokens than queries."""
    queries = _decoder(model).decoder.num_queries
    sizes = [imgsz, *(multi_scales or ())]
    smallest = min_image_size(model)
    too_small = sorted({s for s in sizes if s < smallest})
    if not too_small:
        return
    low = too_small[0]
    fixes = [f"--set num_queries={encoder_tokens(model, low)}"]
    if imgsz >= smallest:  # only the multi-scale sizes are too small
        fixes.append("--no-multi-scale")
    fixes.append(f"--imgsz {_round_up(smallest, 32)} or more" if imgsz < smallest else "a larger --imgsz")
    raise UserError(
        f"training size {low} px gives {encoder_tokens(model, low)} encoder tokens, fewer than the model's "
        f"{queries} queries (too small: {', '.join(map(str, too_small))} px; the smallest that works is "
        f"{smallest}); use {', '.join(fixes[:-1])} or {fixes[-1]}"
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
