"""Draw detections on images with torchvision's ``draw_bounding_boxes``."""

from __future__ import annotations

import colorsys

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

__all__ = ["draw_detections", "class_colors"]


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct, stable RGB colours: hues spaced by the golden ratio."""
    colors = []
    for i in range(max(1, num_classes)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def draw_detections(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    *,
    class_names: list[str] | None = None,
    width: int = 2,
) -> Tensor:
    """Annotate one image.

    Args:
        image: uint8 [3, H, W] RGB (a float image in [0, 1] is converted).
        boxes: [N, 4] xyxy in pixels of this image.
        labels: int [N] contiguous class indices.
        scores: optional [N] in [0, 1], printed after the name.
        class_names: names indexed by label (falls back to the number).

    Returns:
        uint8 [3, H, W] with boxes and captions drawn.
    """
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if boxes.numel() == 0:
        return image.clone()
    labels = labels.tolist()
    names = [class_names[i] if class_names and 0 <= i < len(class_names) else str(i) for i in labels]
    captions = names if scores is None else [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    palette = class_colors(len(class_names) if class_names else max(labels) + 1)
    colors = [palette[i % len(palette)] for i in labels]
    return draw_bounding_boxes(image.cpu(), boxes.detach().float().cpu(), labels=captions, colors=colors, width=width)
