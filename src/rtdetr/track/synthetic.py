"""Synthetic videos of moving shapes with ground-truth tracks, for testing and measuring trackers.

A clip is a pure function of its arguments (seed included). Objects are the shapes of
:mod:`rtdetr.data.synthetic` (same classes and COCO category ids), each with a fixed
colour, size and rotation, moving at constant velocity over a smooth static background.
Every clip has:

* **crossings**: pairs of objects of the *same* class move towards each other and pass
  one over the other (the case class-aware matching cannot help with);
* **occlusions**: the object drawn later hides the other while they overlap (drawing
  order is fixed per object);
* **entries and exits**: objects start outside the frame or leave it before the end.

Ground truth (``Clip.gt``) holds, per frame, the objects whose *visible* part is at
least ``min_visible`` of their full area: ``(frame, track_id, label, x0, y0, x1, y1)``
with the box tight around the visible pixels (pixels i span [i, i + 1), so x1/y1 are
exclusive edges, as in the image dataset). Mostly hidden objects are left out, so a
tracker is neither rewarded nor punished for boxes it cannot see.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.synthetic import SHAPES, shape_mask

__all__ = ["Clip", "GtBox", "make_clip", "write_clip_video", "write_frames_dataset"]

# (frame, track_id, label, x0, y0, x1, y1): frame 0-based, ids 1-based (MOTChallenge style), pixels.
GtBox = tuple[int, int, int, int, int, int, int]


@dataclass
class _Mover:
    label: int
    radius: float
    theta: float
    colour: np.ndarray
    start: tuple[float, float]
    velocity: tuple[float, float]
    first: int  # first frame it exists in (it may still be outside the image)

    def centre(self, t: int) -> tuple[float, float]:
        dt = t - self.first
        return self.start[0] + self.velocity[0] * dt, self.start[1] + self.velocity[1] * dt


@dataclass
class Clip:
    """A generated clip.

    Attributes:
        frames: uint8 [T, H, W, 3] RGB.
        gt: ground-truth boxes, see the module docstring.
        fps: nominal frame rate (what a written video says).
        class_names: names indexed by label (``SHAPES`` order).
        category_ids: COCO category id per label.
    """

    frames: np.ndarray
    gt: list[GtBox]
    fps: float
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)

    def gt_by_frame(self) -> dict[int, list[GtBox]]:
        out: dict[int, list[GtBox]] = {t: [] for t in range(len(self.frames))}
        for box in self.gt:
            out[box[0]].append(box)
        return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth two-colour gradient with faint blotches, float32 [H, W, 3]."""
    a, b = rng.uniform(40, 215, size=3), rng.uniform(40, 215, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    xx, yy = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size))
    t = (xx * math.cos(angle) + yy * math.sin(angle) + 1.5) / 3.0
    canvas = (a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]).astype(np.float32)
    cells = rng.normal(0, 12, size=(8, 8, 3)).astype(np.float32)
    blotch = np.asarray(
        Image.fromarray(np.clip(cells + 128, 0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
        dtype=np.float32,
    )
    return canvas + (blotch - 128)


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    colour = rng.uniform(0, 255, size=3)
    for _ in range(30):
        if np.linalg.norm(colour - avoid) > 110:
            break
        colour = rng.uniform(0, 255, size=3)
    return colour.astype(np.float32)


def _movers(
    rng: np.random.Generator,
    size: int,
    frames: int,
    num_classes: int,
    objects: int,
    crossings: int,
    bg: np.ndarray,
    radius_range: tuple[float, float],
) -> list[_Mover]:
    avoid = bg.reshape(-1, 3).mean(0)
    speed_hi = size / 40.0  # crosses the frame in ~40+ frames
    movers: list[_Mover] = []

    def radius() -> float:
        return float(rng.uniform(*radius_range) * size)

    for _ in range(crossings):
        # Two objects of one class meet near the middle of the clip, moving in opposite directions.
        label = int(rng.integers(0, num_classes))
        meet = np.array([rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size])
        t_meet = int(rng.integers(frames // 3, 2 * frames // 3 + 1))
        angle = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.5, 1.0) * speed_hi
        offset = rng.uniform(-0.25, 0.25)  # miss distance, in radii: they overlap heavily
        r = radius()
        for sign in (1.0, -1.0):
            v = np.array([math.cos(angle), math.sin(angle)]) * speed * sign
            normal = np.array([-math.sin(angle), math.cos(angle)]) * offset * r * sign
            start = meet + normal - v * t_meet
            movers.append(
                _Mover(label, r, float(rng.uniform(0, 2 * math.pi)), _colour(rng, avoid), tuple(start), tuple(v), 0)
            )
    for _ in range(max(0, objects - 2 * crossings)):
        label = int(rng.integers(0, num_classes))
        r = radius()
        first = int(rng.integers(0, max(1, frames // 2)))
        angle = rng.uniform(0, 2 * math.pi)
        v = np.array([math.cos(angle), math.sin(angle)]) * rng.uniform(0.3, 1.0) * speed_hi
        if rng.random() < 0.5:  # enters from outside: start beyond the border it moves away from
            start = np.array([size / 2, size / 2]) - v / np.linalg.norm(v) * (size / 2 + 1.2 * r)
            start += np.array([-v[1], v[0]]) / np.linalg.norm(v) * rng.uniform(-0.3, 0.3) * size
        else:
            start = rng.uniform(0.15, 0.85, size=2) * size
        movers.append(
            _Mover(label, r, float(rng.uniform(0, 2 * math.pi)), _colour(rng, avoid), tuple(start), tuple(v), first)
        )
    return movers


def make_clip(
    *,
    seed: int = 0,
    size: int = 256,
    frames: int = 90,
    fps: float = 30.0,
    num_classes: int = 3,
    objects: int = 5,
    crossings: int = 1,
    min_visible: float = 0.3,
    noise: float = 3.0,
    radius: tuple[float, float] = (0.045, 0.09),
) -> Clip:
    """Render a clip of ``frames`` square ``size`` frames (see the module docstring).

    Args:
        num_classes: use the first ``num_classes`` shapes of ``SHAPES``.
        objects: objects in total, crossing pairs included.
        crossings: same-class crossing pairs (each counts two objects).
        min_visible: fraction of an object's full area that must be visible to be in ``gt``.
        noise: std of per-pixel Gaussian noise (changes colours, never masks).
        radius: range of object radii, as fractions of ``size``.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    if frames < 1 or size < 32:
        raise ValueError(f"need frames >= 1 and size >= 32, got frames={frames}, size={size}")
    rng = np.random.default_rng([seed, 18])
    bg = _background(rng, size)
    movers = _movers(rng, size, frames, num_classes, objects, crossings, bg, radius)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    gt: list[GtBox] = []
    cols = np.arange(size, dtype=np.float32) + 0.5
    areas = [_full_area(m) for m in movers]
    for t in range(frames):
        canvas = bg.copy()
        owner = np.full((size, size), -1, dtype=np.int16)
        full_area = {}
        for k, m in enumerate(movers):
            if t < m.first:
                continue
            cx, cy = m.centre(t)
            full_area[k] = areas[k]
            # Only the window around the object is tested (the shape fits a disc of 1.1 radii).
            reach = math.ceil(m.radius * 1.1) + 1
            x0, x1 = max(0, math.floor(cx) - reach), min(size, math.floor(cx) + reach + 1)
            y0, y1 = max(0, math.floor(cy) - reach), min(size, math.floor(cy) + reach + 1)
            if x1 <= x0 or y1 <= y0:
                continue  # wholly outside the image
            dx, dy = cols[None, x0:x1] - cx, cols[y0:y1, None] - cy
            c, s = math.cos(m.theta), math.sin(m.theta)
            mask = shape_mask(SHAPES[m.label][0], (dx * c + dy * s) / m.radius, (-dx * s + dy * c) / m.radius)
            canvas[y0:y1, x0:x1][mask] = m.colour
            owner[y0:y1, x0:x1][mask] = k  # later objects are drawn over earlier ones: occlusion
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(noise)
        out[t] = np.clip(canvas, 0, 255).round().astype(np.uint8)
        for k, area in full_area.items():
            mine = owner == k
            count = int(mine.sum())
            if count < min_visible * area:
                continue
            xs, ys = np.flatnonzero(mine.any(0)), np.flatnonzero(mine.any(1))
            gt.append((t, k + 1, movers[k].label, int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1))
    return Clip(
        frames=out,
        gt=gt,
        fps=fps,
        class_names=[name for name, _ in SHAPES[:num_classes]],
        category_ids=[cid for _, cid in SHAPES[:num_classes]],
    )


def _full_area(m: _Mover) -> float:
    """Pixel count of the whole (unclipped) shape, measured on its own grid."""
    n = int(math.ceil(m.radius * 1.1)) + 1
    g = np.arange(-n, n, dtype=np.float32) + 0.5
    c, s = math.cos(m.theta), math.sin(m.theta)
    dx, dy = g[None, :], g[:, None]
    return float(shape_mask(SHAPES[m.label][0], (dx * c + dy * s) / m.radius, (-dx * s + dy * c) / m.radius).sum())


def write_clip_video(clip: Clip, path: str | Path) -> Path:
    """Write ``clip.frames`` as an mp4 (OpenCV, mp4v) at ``clip.fps``; returns the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = clip.frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write video {path} (no mp4v encoder?)")
    try:
        for frame in clip.frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV writes BGR
    finally:
        writer.release()
    return path


def write_frames_dataset(clips: list[Clip], out: str | Path, split: str, *, every: int = 1) -> Path:
    """Write every ``every``-th frame of ``clips`` as a COCO split (``out/split/*.png`` and
    ``out/annotations/instances_<split>.json``), for training a detector on the clips' domain."""
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for c, clip in enumerate(clips):
        by_frame = clip.gt_by_frame()
        for t in range(0, len(clip.frames), every):
            image_id = len(images) + 1
            name = f"{c:04d}_{t:04d}.png"
            Image.fromarray(clip.frames[t]).save(out / split / name)
            h, w = clip.frames.shape[1:3]
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
            for _, _, label, x0, y0, x1, y1 in by_frame[t]:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": clip.category_ids[label],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
    categories = [
        {"id": i, "name": n, "supercategory": "shape"} for n, i in zip(clips[0].class_names, clips[0].category_ids)
    ]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return out
