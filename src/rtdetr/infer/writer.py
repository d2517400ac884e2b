"""Writing predictions to disk: annotated images and videos, and one COCO-results JSON."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .results import Detections

__all__ = ["PredictionWriter"]

log = logging.getLogger(__name__)


class PredictionWriter:
    """Consumes :class:`Detections` in stream order and writes them under ``out``.

    * still images -> ``out/<name>`` annotated (same file name; a numeric prefix is
      added when two sources share a name);
    * video frames -> ``out/<video stem>.mp4`` annotated, at the source frame rate;
    * ``out/predictions.json``: a COCO results list (``image_id``, ``category_id``,
      ``bbox`` xywh pixels, ``score``), what ``COCO.loadRes`` and evaluation servers take;
    * ``out/images.json``: what each ``image_id`` is (``file_name``, ``frame``, ``width``,
      ``height``) and the ``categories`` (id, name). Both written by :meth:`close`.

    Use as a context manager so videos and the JSON are finalized on errors too. Nothing
    is created or replaced under ``out`` before the first image arrives: a run that fails
    before predicting anything (bad source, every file unreadable) leaves an earlier run's
    files as they were.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        save_images: bool = True,
        save_json: bool = True,
        reserved_names: Iterable[str] = (),
    ) -> None:
        """``reserved_names``: file names this writer must not give its media (e.g. those
        another process writing to the same ``out`` gives its own)."""
        self.out = Path(out)
        self.save_images = save_images
        self.save_json = save_json
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.class_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self._names_used: set[str] = set(reserved_names)
        self._video: Any = None
        self._video_source: str | None = None
        self.written: list[Path] = []

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and not self.images:
            self.save_json = False  # failed before any result: keep what ``out`` held
        self.close()

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._names_used:
            candidate, n = f"{n}_{name}", n + 1
        self._names_used.add(candidate)
        return candidate

    def add(self, det: Detections) -> None:
        image_id = len(self.images)
        self.class_names, self.category_ids = det.class_names, det.category_ids
        name = Path(det.source).name if det.source else f"image_{det.index:06d}.png"
        self.images.append(
            {
                "id": image_id,
                "file_name": det.source or name,
                "frame": det.frame,
                "width": det.image_size[0],
                "height": det.image_size[1],
            }
        )
        self.annotations.extend(det.to_coco_json(image_id))
        if not self.save_images:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if det.frame is not None:
            self._add_video_frame(det, det.fps or 30.0)
        else:
            self._close_video()
            path = self.out / self._unique(name)
            det.save(path)
            self.written.append(path)

    def _add_video_frame(self, det: Detections, fps: float) -> None:
        import cv2

        if self._video_source != det.source:
            self._close_video()
            path = self.out / self._unique(Path(det.source or "video").stem + ".mp4")
            w, h = det.image_size
            self._video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not self._video.isOpened():
                raise RuntimeError(f"OpenCV cannot write video {path} (no mp4v encoder?)")
            self._video_source = det.source
            self.written.append(path)
        rgb = det.plot().permute(1, 2, 0).numpy()
        self._video.write(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR

    def _close_video(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video, self._video_source = None, None

    def close(self) -> None:
        self._close_video()
        if self.save_json:
            names = self.class_names or []
            ids = self.category_ids or list(range(len(names)))
            self.out.mkdir(parents=True, exist_ok=True)
            index = {"images": self.images, "categories": [{"id": int(i), "name": n} for i, n in zip(ids, names)]}
            for name, data in (("predictions.json", self.annotations), ("images.json", index)):
                tmp = self.out / (name + ".tmp")
                tmp.write_text(json.dumps(data))
                tmp.replace(self.out / name)  # atomic: a reader never sees half a file
            self.save_json = False  # written once
