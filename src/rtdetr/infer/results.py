"""Per-image detections, as ``predict`` returns them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .defaults import DEFAULT_CONF
from .draw import draw_detections

__all__ = ["Detections", "DEFAULT_CONF"]


@dataclass
class Detections:
    """The detections of one image (or video frame), sorted by score.

    Attributes:
        boxes: float32 [N, 4] xyxy in pixels of the original image.
        scores: float32 [N] in [0, 1].
        labels: int64 [N] contiguous class indices (0 .. num_classes - 1).
        class_names: the model's names, indexed by label (None when unknown).
        image_size: original (width, height).
        source: the file it came from (None for in-memory inputs).
        frame: frame number within a video (None for still images).
        fps: the video's frame rate (None for still images).
        index: position in the predicted stream.
        category_ids: dataset id per label (e.g. COCO's 1..90), for ``to_coco_json``.
        image: the decoded uint8 [3, H, W] RGB image when it was kept (see
            ``Detector.predict``); ``plot`` uses it.
        speed: milliseconds per stage for the batch this image was in, per image.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    image_size: tuple[int, int]
    class_names: list[str] | None = None
    source: str | None = None
    frame: int | None = None
    fps: float | None = None
    index: int = 0
    category_ids: list[int] | None = None
    image: Tensor | None = field(default=None, repr=False)
    speed: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def names(self) -> list[str]:
        """The class name of each detection (the label number when names are unknown)."""
        cn = self.class_names
        return [cn[i] if cn and 0 <= i < len(cn) else str(i) for i in self.labels.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: boxes (xyxy pixels), scores, labels, names, image size, source."""
        return {
            "boxes": [[round(v, 2) for v in b] for b in self.boxes.tolist()],
            "scores": [round(s, 4) for s in self.scores.tolist()],
            "labels": self.labels.tolist(),
            "names": self.names,
            "image_size": list(self.image_size),
            "source": self.source,
            "frame": self.frame,
        }

    def to_coco_json(self, image_id: int, category_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO results entries: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

        Labels map through ``category_ids`` (argument, else the model's, else the label itself).
        """
        ids = category_ids if category_ids is not None else self.category_ids
        out = []
        for (x0, y0, x1, y1), score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(ids[label]) if ids is not None else int(label),
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(score), 5),
                }
            )
        return out

    def plot(self, image: Tensor | None = None, *, width: int = 2) -> Tensor:
        """The image with boxes, names and scores drawn: uint8 [3, H, W] RGB.

        Uses ``image`` if given, else the kept image, else re-reads ``source`` (still images only).
        """
        if image is None:
            image = self.image
        if image is None and self.source is not None and self.frame is None:
            from ..data.image_io import load_image

            image = load_image(self.source).as_subclass(Tensor)
        if image is None:
            raise ValueError(
                "no image to draw on: pass plot(image=...), or predict with keep_images=True "
                "(video frames and in-memory inputs are not re-readable)"
            )
        h, w = image.shape[-2:]
        if (w, h) != tuple(self.image_size):
            raise ValueError(f"image is {w}x{h} but the detections are for {self.image_size[0]}x{self.image_size[1]}")
        return draw_detections(image, self.boxes, self.labels, self.scores, class_names=self.class_names, width=width)

    def save(self, path: str | Path, image: Tensor | None = None) -> Path:
        """Write the annotated image (format from the suffix, e.g. ``.jpg``, ``.png``)."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        array = self.plot(image).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(array).save(path)
        return path

    def filter(self, keep: Tensor) -> Detections:
        """A copy holding only the detections selected by the bool or index tensor ``keep``."""
        return Detections(
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            labels=self.labels[keep],
            image_size=self.image_size,
            class_names=self.class_names,
            source=self.source,
            frame=self.frame,
            fps=self.fps,
            index=self.index,
            category_ids=self.category_ids,
            image=self.image,
            speed=dict(self.speed),
        )

    @staticmethod
    def empty(image_size: tuple[int, int]) -> Detections:
        return Detections(
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            labels=torch.zeros(0, dtype=torch.int64),
            image_size=image_size,
        )
