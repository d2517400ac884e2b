"""Per-frame detections with track ids, as ``Detector.track`` returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_keypoints

from ..infer.draw import class_colors
from ..infer.results import Detections

__all__ = ["TrackedDetections"]


@dataclass
class TrackedDetections(Detections):
    """:class:`~rtdetr.infer.Detections` of one frame plus the track of each detection.

    Only detections that belong to a confirmed track are kept.

    Attributes:
        track_ids: int64 [N], >= 1, unique within a sequence (across classes too).
        trails: recent box centres per track id present in this frame, oldest first:
            ``{id: [(x, y), ...]}`` in pixels (what ``plot`` draws as a trail).
        sequence: what the tracker treated as one sequence (a video file, a folder of
            frames, a camera index or stream URL); ids restart with each sequence.
    """

    track_ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    trails: dict[int, list[tuple[float, float]]] = field(default_factory=dict, repr=False)
    sequence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["track_ids"] = self.track_ids.tolist()
        return out

    def plot(self, image: Tensor | None = None, *, width: int = 2) -> Tensor:
        """The frame with boxes captioned ``#id name score``, coloured by track, and trails: uint8 [3, H, W]."""
        base = Detections.plot(self.filter(torch.zeros(len(self), dtype=torch.bool)), image, width=width)
        if len(self) == 0:
            return base
        palette = class_colors(64)
        ids = self.track_ids.tolist()
        colors = [palette[i % len(palette)] for i in ids]
        for tid, color in zip(ids, colors):
            trail = self.trails.get(tid, [])
            if len(trail) >= 2:
                points = torch.tensor(trail, dtype=torch.float32)[None]  # [1, K, 2]
                links = [(k, k + 1) for k in range(len(trail) - 1)]
                base = draw_keypoints(base, points, connectivity=links, colors=color, radius=1, width=width)
        names = self.names
        captions = [f"#{i} {n} {s:.2f}" for i, n, s in zip(ids, names, self.scores.tolist())]
        return draw_bounding_boxes(base, self.boxes.detach().float().cpu(), labels=captions, colors=colors, width=width)
