"""Released weights per preset, in the style of torchvision's weights enums.

Each :class:`WeightsEntry` is one published checkpoint: where to download it (the
authors' GitHub release, reference layout) and its Hugging Face Hub mirror
(``PekingU/*``, transformers naming), the classes it predicts (the 80 COCO classes
with their original category ids) and its published accuracy.

``metrics``: ``"ap"`` is the paper's COCO val2017 box AP at 640x640;
``"ap_checkpoint"`` / ``"ap50_checkpoint"`` are the numbers the authors list for these
PyTorch files (converted from Paddle; "may have slight differences" from the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import torch

from ..data.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES

__all__ = ["WeightsEntry", "WEIGHTS", "TAGS", "list_weights", "get_weights", "normalize_tag"]

_RELEASE = "https://github.com/lyuwenyu/storage/releases/download/v0.1/"

TAGS: tuple[str, ...] = ("coco", "coco+o365")
_TAG_ALIASES = {"coco_o365": "coco+o365", "coco+objects365": "coco+o365", "o365": "coco+o365"}


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint for one preset.

    Attributes:
        model_name: preset it belongs to (``rtdetr.build_model`` name).
        tag: short name used to ask for it (``"coco"``, ``"coco+o365"``).
        url: release file (reference layout: ``{"ema": {"module": ...}, ...}``).
        hub_repo: the same weights on the Hugging Face Hub (transformers naming).
        dataset: training data, e.g. ``"COCO"`` or ``"COCO+Objects365"`` (Objects365
            pre-training, COCO fine-tuning).
        num_classes: classes of the score heads.
        class_names: name of each contiguous label 0..num_classes-1.
        category_ids: original dataset id of each label (COCO ids 1..90 with gaps).
        input_size: (h, w) the model was trained and evaluated at.
        metrics: published accuracy (see the module docstring).
    """

    model_name: str
    tag: str
    url: str
    hub_repo: str
    dataset: str
    num_classes: int = 80
    class_names: tuple[str, ...] = tuple(COCO_CLASS_NAMES)
    category_ids: tuple[int, ...] = tuple(COCO_CATEGORY_IDS)
    input_size: tuple[int, int] = (640, 640)
    metrics: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes or len(self.category_ids) != self.num_classes:
            raise ValueError(f"{self.name}: class_names / category_ids must have {self.num_classes} entries")
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def name(self) -> str:
        """``"<model_name>:<tag>"``, e.g. ``"rtdetr_r18vd:coco"``."""
        return f"{self.model_name}:{self.tag}"

    @property
    def file_name(self) -> str:
        """Base name of the release file."""
        return Path(urlparse(self.url).path).name

    @property
    def cache_path(self) -> Path:
        """Where the download is kept: ``<torch hub dir>/checkpoints/<file_name>``.

        Placing the file there by hand makes loading work offline. The torch hub dir
        follows ``TORCH_HOME`` (default ``~/.cache/torch/hub``).
        """
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name

    def __str__(self) -> str:
        ap = self.metrics.get("ap")
        return f"{self.name} ({self.dataset}{f', {ap} AP' if ap is not None else ''}) {self.url}"


def _entry(model: str, tag: str, file: str, hub: str, ap: float, ap_ckpt: float, ap50_ckpt: float) -> WeightsEntry:
    return WeightsEntry(
        model_name=model,
        tag=tag,
        url=_RELEASE + file,
        hub_repo=hub,
        dataset="COCO" if tag == "coco" else "COCO+Objects365",
        metrics={"ap": ap, "ap_checkpoint": ap_ckpt, "ap50_checkpoint": ap50_ckpt},
    )


_ENTRIES = [
    _entry(
        "rtdetr_r18vd", "coco", "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth", "PekingU/rtdetr_r18vd", 46.5, 46.4, 63.7
    ),
    _entry(
        "rtdetr_r34vd", "coco", "rtdetr_r34vd_dec4_6x_coco_from_paddle.pth", "PekingU/rtdetr_r34vd", 48.9, 48.9, 66.8
    ),
    _entry(
        "rtdetr_r50vd_m", "coco", "rtdetr_r50vd_m_6x_coco_from_paddle.pth", "PekingU/rtdetr_r50vd_m", 51.3, 51.3, 69.5
    ),
    _entry("rtdetr_r50vd", "coco", "rtdetr_r50vd_6x_coco_from_paddle.pth", "PekingU/rtdetr_r50vd", 53.1, 53.1, 71.2),
    _entry("rtdetr_r101vd", "coco", "rtdetr_r101vd_6x_coco_from_paddle.pth", "PekingU/rtdetr_r101vd", 54.3, 54.3, 72.8),
    _entry(
        "rtdetr_r18vd",
        "coco+o365",
        "rtdetr_r18vd_5x_coco_objects365_from_paddle.pth",
        "PekingU/rtdetr_r18vd_coco_o365",
        49.2,
        49.0,
        66.5,
    ),
    _entry(
        "rtdetr_r50vd",
        "coco+o365",
        "rtdetr_r50vd_2x_coco_objects365_from_paddle.pth",
        "PekingU/rtdetr_r50vd_coco_o365",
        55.3,
        55.2,
        73.4,
    ),
    _entry(
        "rtdetr_r101vd",
        "coco+o365",
        "rtdetr_r101vd_2x_coco_objects365_from_paddle.pth",
        "PekingU/rtdetr_r101vd_coco_o365",
        56.2,
        56.2,
        74.5,
    ),
]

WEIGHTS: Mapping[tuple[str, str], WeightsEntry] = MappingProxyType({(e.model_name, e.tag): e for e in _ENTRIES})


def normalize_tag(tag: str) -> str:
    """Canonical tag: lower case, aliases such as ``"coco_o365"`` -> ``"coco+o365"``."""
    t = tag.strip().lower()
    return _TAG_ALIASES.get(t, t)


def list_weights(model_name: str | None = None) -> list[WeightsEntry]:
    """Published weights, for one preset or (``None``) for all, in registry order."""
    return [e for e in _ENTRIES if model_name is None or e.model_name == model_name]


def get_weights(model_name: str, tag: str) -> WeightsEntry:
    """The entry for a preset and tag; ValueError naming the available tags otherwise."""
    entry = WEIGHTS.get((model_name, normalize_tag(tag)))
    if entry is None:
        avail = [e.tag for e in list_weights(model_name)]
        have = f"available for {model_name}: {', '.join(avail)}" if avail else f"no published weights for {model_name}"
        raise ValueError(f"no weights tagged {tag!r} for {model_name!r} ({have})")
    return entry
