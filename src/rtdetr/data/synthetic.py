"""A synthetic COCO-format dataset: coloured shapes on textured backgrounds.

``generate_synthetic_dataset(out)`` writes a real dataset to disk, the package's
embedded default for the demo, the tests and the benchmarks::

    out/
      train/000001.jpg ...             (imgsz x imgsz RGB)
      val/000001.jpg ...
      annotations/instances_train.json
      annotations/instances_val.json

Classes are shapes, told apart by form only (colour, size, aspect and rotation
are random): circle, square, triangle, star, ring, cross. Their COCO category
ids are deliberately non-contiguous, ``1, 2, 4, 5, 7, 8``, so every consumer
exercises the id <-> label mapping as real COCO (ids 1..90) needs.

Labelling rules:

* Shapes are drawn without anti-aliasing: a pixel belongs to an object exactly
  when its centre is inside the shape, so the drawing mask is the ground truth.
* A box is tight around the object's *visible* pixels (COCO's convention): pixel
  columns x0..x1 and rows y0..y1 give ``bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]``
  (pixel i spans [i, i + 1)); ``area`` is the visible pixel count.
* Occlusion and truncation are bounded so the class stays recognizable: an object
  is placed only if every object (itself included) keeps at least 55% of its full
  area visible and inside the image; otherwise the placement is re-drawn.
* About 8% of images have no objects (negatives).

Images are a pure function of (seed, split, index): the same call gives the same
files. Pixel noise is added after drawing; it changes colours, never masks.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "SHAPES",
    "SyntheticImage",
    "shape_mask",
    "render_image",
    "generate_synthetic_dataset",
]

logger = logging.getLogger(__name__)

# (class name, COCO category id): ids skip values on purpose, see the module docstring.
SHAPES: tuple[tuple[str, int], ...] = (
    ("circle", 1),
    ("square", 2),
    ("triangle", 4),
    ("star", 5),
    ("ring", 7),
    ("cross", 8),
)

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_MIN_VISIBLE = 0.55  # fraction of an object's full area that must stay visible
_NEGATIVE_P = 0.08
_MAX_OBJECTS = 8


def shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test for a shape in its own frame, where it fits the disc u^2 + v^2 <= 1.

    Args:
        kind: one of the names in ``SHAPES``.
        u, v: broadcastable float arrays (v grows downwards, like image rows).
    """
    r2 = u * u + v * v
    if kind == "circle":
        return r2 <= 1.0
    if kind == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if kind == "triangle":
        # Equilateral, inscribed in the unit circle, apex up: three half-planes at inradius 0.5.
        inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for angle in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            inside &= u * math.cos(angle) + v * math.sin(angle) <= 0.5
        return inside
    if kind == "star":
        # Five points: the edge radius goes linearly from a tip (1) to a valley (0.42) in angle.
        sector = 2 * math.pi / 5
        phi = np.mod(np.arctan2(v, u) + math.pi / 2, sector)
        t = np.abs(phi / (sector / 2) - 1.0)
        return np.sqrt(r2) <= 0.42 + 0.58 * t
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((au <= 0.95) & (av <= 0.3))
    raise ValueError(f"unknown shape {kind!r}; known: {[name for name, _ in SHAPES]}")


@dataclass
class SyntheticImage:
    """One rendered image: ``image`` uint8 [H, W, 3]; ``owner`` int16 [H, W] (object index
    per pixel, -1 background: the drawing mask); per object ``labels`` (contiguous),
    ``boxes`` xyxy in pixels with exclusive x1/y1 edges, ``areas`` visible pixel counts."""

    image: np.ndarray
    owner: np.ndarray
    labels: list[int] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    areas: list[int] = field(default_factory=list)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured background, float32 [H, W, 3] in [0, 255]: smooth colour noise plus a pattern."""
    cells = int(rng.integers(2, 9))
    base = rng.uniform(30, 225, size=3)
    coarse = np.clip(base + rng.normal(0, 35, size=(cells, cells, 3)), 0, 255).astype(np.uint8)
    canvas = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)
    pattern = int(rng.integers(0, 4))
    if pattern:  # 0: plain; 1: stripes; 2: checker; 3: fine blotches
        xx = np.arange(size, dtype=np.float32)[None, :]
        yy = np.arange(size, dtype=np.float32)[:, None]
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, math.pi)
        amplitude = rng.uniform(8, 25)
        if pattern == 1:
            wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        elif pattern == 2:
            wave = np.sign(np.sin(xx * 2 * math.pi / period) * np.sin(yy * 2 * math.pi / period))
        else:
            small = rng.normal(0, 1, size=(size // 8 + 1, size // 8 + 1)).astype(np.float32)
            wave = np.kron(small, np.ones((8, 8), dtype=np.float32))[:size, :size]
        canvas += amplitude * wave[:, :, None] * rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    return canvas


def _object_colour(rng: np.random.Generator, around: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the background colour ``around`` (RGB)."""
    colour = rng.uniform(0, 255, size=3)
    for _ in range(20):
        if np.linalg.norm(colour - around) > 90:
            break
        colour = rng.uniform(0, 255, size=3)
    return colour.astype(np.float32)


def _draw_object(
    rng: np.random.Generator, size: int, kind: str, object_size: tuple[float, float] = (12.0, 0.5)
) -> tuple[int, int, np.ndarray, int]:
    """Sample one object's geometry; returns (x0, y0, mask clipped to the image, full area).

    ``object_size``: (smallest diameter in pixels, largest as a fraction of the image
    side); diameters are log-uniform between them.
    """
    low, high_frac = object_size
    diameter = math.exp(rng.uniform(math.log(low), math.log(max(low + 1.0, high_frac * size))))
    r = diameter / 2
    stretch = math.exp(rng.uniform(-0.2, 0.2))
    sx, sy = r * stretch, r / stretch
    theta = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(0, size), rng.uniform(0, size)
    reach = math.ceil(max(sx, sy) * 1.1) + 1  # the square's corners reach 0.75 * sqrt(2) < 1.1
    x0, y0 = math.floor(cx) - reach, math.floor(cy) - reach
    n = 2 * reach + 2
    # Pixel centres relative to the object's centre (broadcast [1, n] and [n, 1]).
    dx = (np.arange(x0, x0 + n, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y0 + n, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(theta), math.sin(theta)
    mask = shape_mask(kind, (dx * c + dy * s) / sx, (-dx * s + dy * c) / sy)
    full_area = int(mask.sum())
    # Clip the patch to the image.
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + n, size), min(y0 + n, size)
    if cx1 <= cx0 or cy1 <= cy0:
        return 0, 0, np.zeros((0, 0), dtype=bool), max(full_area, 1)
    return cx0, cy0, mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], max(full_area, 1)


def render_image(
    rng: np.random.Generator,
    size: int = 320,
    num_classes: int = len(SHAPES),
    *,
    max_objects: int = _MAX_OBJECTS,
    object_size: tuple[float, float] = (12.0, 0.5),
) -> SyntheticImage:
    """Render one image with 0..8 objects (see the module docstring for the rules)."""
    canvas = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int16)
    full_areas: list[int] = []
    visible: list[int] = []
    labels: list[int] = []
    extents: list[tuple[int, int, int, int]] = []  # drawn patch per object, xyxy exclusive
    count = 0 if rng.random() < _NEGATIVE_P else int(rng.integers(1, max_objects + 1))
    for _ in range(count):
        label = int(rng.integers(0, num_classes))
        kind = SHAPES[label][0]
        for _attempt in range(20):
            x0, y0, mask, full = _draw_object(rng, size, kind, object_size)
            if mask.sum() < _MIN_VISIBLE * full:
                continue  # too truncated by the image border
            region = owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
            covered = np.bincount(region[mask].astype(np.int64) + 1, minlength=len(labels) + 1)[1:]
            if any(visible[j] - covered[j] < _MIN_VISIBLE * full_areas[j] for j in range(len(labels))):
                continue  # would hide too much of an earlier object
            k = len(labels)
            region[mask] = k
            colour = _object_colour(rng, canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]].mean((0, 1)))
            # A gentle linear shading makes objects less flat without changing their class cue.
            hh, ww = mask.shape
            gy, gx = np.nonzero(mask)
            ramp = (gx * rng.uniform(-1, 1) + gy * rng.uniform(-1, 1)) * (rng.uniform(0, 40) / max(hh, ww))
            patch = canvas[y0 : y0 + hh, x0 : x0 + ww]
            patch[gy, gx] = colour + ramp[:, None].astype(np.float32)
            for j in range(len(labels)):
                visible[j] -= int(covered[j])
            labels.append(label)
            extents.append((x0, y0, x0 + mask.shape[1], y0 + mask.shape[0]))
            full_areas.append(full)
            visible.append(int(mask.sum()))
            break
    noise = rng.standard_normal(size=canvas.shape, dtype=np.float32)
    canvas += noise * np.float32(rng.uniform(2, 8))
    image = np.clip(canvas, 0, 255).round().astype(np.uint8)

    result = SyntheticImage(image=image, owner=owner)
    for k, (label, (x0, y0, x1, y1)) in enumerate(zip(labels, extents)):
        # Objects drawn later only ever remove pixels, so the visible ones lie in the drawn extent.
        mine = owner[y0:y1, x0:x1] == k
        cols, rows = np.flatnonzero(mine.any(0)), np.flatnonzero(mine.any(1))
        result.labels.append(label)
        result.boxes.append((x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1))
        result.areas.append(int(mine.sum()))
    return result


def _write_split(
    out: Path, split: str, count: int, size: int, seed: int, num_classes: int, image_format: str, **render: Any
) -> dict:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, _SPLIT_CODES.get(split, 9), index])
        sample = render_image(rng, size, num_classes, **render)
        image_id = index + 1
        file_name = f"{image_id:06d}.{image_format}"
        options = {"quality": 92} if image_format == "jpg" else {}
        Image.fromarray(sample.image).save(image_dir / file_name, **options)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for label, (x0, y0, x1, y1), area in zip(sample.labels, sample.boxes, sample.areas):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SHAPES[label][1],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": area,
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"rtdetr synthetic shapes, split {split}, seed {seed}", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for name, cid in SHAPES[:num_classes]],
    }


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    num_train: int = 500,
    num_val: int = 100,
    imgsz: int = 320,
    seed: int = 0,
    num_classes: int = len(SHAPES),
    image_format: str = "jpg",
    max_objects: int = _MAX_OBJECTS,
    object_size: tuple[float, float] = (12.0, 0.5),
) -> Path:
    """Write the synthetic dataset (layout in the module docstring); returns ``out_dir``.

    Args:
        out_dir: created if needed; existing files with the same names are overwritten.
        num_train, num_val: image counts per split.
        imgsz: square image side in pixels.
        seed: the dataset is a pure function of the arguments.
        num_classes: use the first ``num_classes`` shapes of ``SHAPES`` (1..6).
        image_format: "jpg" (small, default) or "png" (lossless pixels).
        max_objects: objects per image are uniform in 1..max_objects (8% of images have none).
        object_size: (smallest object diameter in pixels, largest as a fraction of
            ``imgsz``); log-uniform between them. Defaults give 12 px .. half the image.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not (isinstance(max_objects, int) and max_objects >= 1):
        raise ValueError(f"max_objects must be an integer >= 1, got {max_objects!r}")
    if not (len(object_size) == 2 and 1 <= object_size[0] and 0 < object_size[1] <= 1):
        raise ValueError(f"object_size must be (min pixels >= 1, max fraction in (0, 1]), got {object_size!r}")
    if imgsz < 32:
        raise ValueError(f"imgsz must be at least 32, got {imgsz}")
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        coco = _write_split(
            out, split, count, imgsz, seed, num_classes, image_format, max_objects=max_objects, object_size=object_size
        )
        with open(out / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
            json.dump(coco, f)
        logger.info("%s: %d images, %d boxes", out / split, len(coco["images"]), len(coco["annotations"]))
    return out
