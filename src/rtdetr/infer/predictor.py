"""``Detector``: from images, folders and videos to detections in one call."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime import setup_cpu_runtime
from .backend import Backend
from .results import DEFAULT_CONF, Detections
from .sources import Frame, OnError, Source, iter_frames
from .torch_backend import TorchBackend

__all__ = ["Detector", "preprocess"]

log = logging.getLogger(__name__)


def preprocess(images: list[Tensor], imgsz: int) -> tuple[Tensor, Tensor]:
    """The reference's inference preprocessing, batched.

    Args:
        images: uint8 [3, H, W] RGB images of any sizes.
        imgsz: the square model input side.

    Returns:
        float32 [B, 3, imgsz, imgsz] in [0, 1] (bilinear, antialiased resize of the
        uint8 image, as PIL does in the reference; no mean/std), and int64 [B, 2]
        original (width, height).
    """
    batch = torch.empty(len(images), 3, imgsz, imgsz)
    sizes = torch.empty(len(images), 2, dtype=torch.int64)
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        sizes[i, 0], sizes[i, 1] = w, h
        if (h, w) == (imgsz, imgsz):
            batch[i] = image.float().div_(255)
            continue
        # Resize in float and round back to uint8, matching a resize of the 8-bit image.
        resized = F.interpolate(image[None].float(), size=(imgsz, imgsz), mode="bilinear", antialias=True)
        batch[i] = resized[0].round_().clamp_(0, 255).div_(255)
    return batch, sizes


def _batched(frames: Iterator[Frame], n: int) -> Iterator[list[Frame]]:
    while chunk := list(itertools.islice(frames, n)):
        yield chunk


class Detector:
    """A ready-to-run detector wrapping an inference :class:`Backend`.

    Build one with :meth:`from_pretrained` (preset name, training checkpoint, released
    weights or an exported ``.onnx``) or from a model: ``Detector(model)``.

    Building one also sets up the CPU runtime of the calling thread
    (:func:`rtdetr.runtime.setup_cpu_runtime`: denormals flushed to zero, which keeps
    CPU inference from slowing down up to 17x on tiny activations).

    Args:
        model_or_backend: an :class:`~rtdetr.RTDETR` module or a :class:`Backend`.
        device, precision: for a module (see :class:`TorchBackend`). ``precision="auto"``
            picks bf16 only where it is native (CPUs with AVX512-BF16/AMX), fp16 on CUDA
            GPUs with tensor cores, else fp32; ``detector.backend.precision`` says which.
        imgsz: input side (default: the model's ``eval_spatial_size``, 640 for presets).
        class_names: override the model's class names.
        inplace: for a module: fuse and move the given module itself instead of a copy
            (saves memory; the caller's module is then changed: eval mode, RepVGG
            branches fused, BatchNorms folded, moved to ``device``).
        graph: for a module: ``"auto"`` runs a CPU input shape called often (or set up
            by :meth:`warmup`) as a frozen TorchScript graph (checked against the eager result; ~18% less
            latency for the small presets), ``"trace"`` does so on any device, ``"eager"``
            never does (see :class:`TorchBackend`).
    """

    def __init__(
        self,
        model_or_backend: nn.Module | Backend,
        *,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        imgsz: int | None = None,
        class_names: list[str] | None = None,
        inplace: bool = False,
        graph: str = "auto",
    ) -> None:
        setup_cpu_runtime(device)
        if isinstance(model_or_backend, nn.Module):
            backend: Backend = TorchBackend(
                model_or_backend, device=device, precision=precision, inplace=inplace, graph=graph
            )
        else:
            backend = model_or_backend
        self.backend = backend
        fixed = getattr(backend, "imgsz", None)
        if imgsz is not None and fixed is not None and imgsz != fixed:
            raise ValueError(f"this model was exported for {fixed}x{fixed} input; imgsz={imgsz} is not possible")
        self.imgsz = int(imgsz or fixed or getattr(backend, "default_imgsz", 640))
        if self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (the largest feature stride), got {self.imgsz}")
        self.num_classes: int = backend.num_classes
        names = class_names if class_names is not None else backend.class_names
        if names is not None and len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names given for a model with {self.num_classes} classes")
        self.class_names: list[str] = list(names) if names else [str(i) for i in range(self.num_classes)]
        self.category_ids: list[int] | None = getattr(backend, "category_ids", None)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        weights: str | None = None,
        num_classes: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        imgsz: int | None = None,
        trusted: bool = False,
        graph: str = "auto",
        **overrides: Any,
    ) -> Detector:
        """Build from a preset name, a checkpoint or weights file/folder, or an ``.onnx`` file.

        Args:
            model: ``"rtdetr_r18vd"`` (see :func:`rtdetr.list_models`), a training
                checkpoint written by ``rtdetr train``, released or converted weights
                (``.pth``, ``.safetensors``, a Hugging Face folder, ``hf:ORG/NAME``; see
                :func:`rtdetr.load_model`), or an exported ONNX model (run with
                onnxruntime; ``precision`` then does not apply).
            weights: for a preset: a registry tag (``"coco"``), file, URL or ``hf:ORG/NAME``.
            num_classes: default: the weights' class count, else 80.
            trusted: allow torch files holding arbitrary Python objects (unpickling
                can run code: only for files from a source you trust).
            graph: ``"auto"``, ``"trace"`` or ``"eager"``, as for :class:`Detector` (not for ``.onnx``).
            overrides: config fields for a preset or checkpoint, e.g. ``eval_idx=2``.
        """
        path = Path(model)
        if path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise FileNotFoundError(f"model file not found: {path}")
            from .onnx_backend import OnnxBackend

            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else None
            return cls(OnnxBackend(path, providers=providers), imgsz=imgsz)
        from ..loader import load_model

        net = load_model(model, weights=weights, num_classes=num_classes, trusted=trusted, **overrides)
        # nobody else holds this model: fuse and move it in place instead of copying it
        return cls(net, device=device, precision=precision, imgsz=imgsz, inplace=True, graph=graph)

    # ------------------------------------------------------------------ running

    def warmup(self, batch_size: int = 1, runs: int = 2) -> None:
        """Get ready for fast batches of ``batch_size``: on a CPU, trace their graph now (~1 s;
        otherwise only a shape called often is traced), then run a few dummy batches (first
        calls allocate and pick kernels)."""
        images = torch.zeros(batch_size, 3, self.imgsz, self.imgsz)
        sizes = torch.full((batch_size, 2), self.imgsz, dtype=torch.int64)
        prepare = getattr(self.backend, "prepare", None)  # the ONNX backend has no graphs to trace
        if prepare is not None:
            prepare(images, sizes)
        for _ in range(runs):
            self.backend(images, sizes)

    def predict_images(
        self,
        images: list[Tensor],
        *,
        conf: float = DEFAULT_CONF,
        classes: list[int] | None = None,
        max_det: int = 300,
    ) -> list[Detections]:
        """Detect on uint8 [3, H, W] RGB images in one batched forward pass."""
        if not images:
            return []
        t0 = time.perf_counter()
        batch, sizes = preprocess(images, self.imgsz)
        t1 = time.perf_counter()
        labels, boxes, scores = self.backend(batch, sizes)
        t2 = time.perf_counter()
        results = [
            self._select(labels[i], boxes[i], scores[i], sizes[i], conf, classes, max_det) for i in range(len(images))
        ]
        t3 = time.perf_counter()
        n = len(images)
        speed = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "inference": (t2 - t1) * 1e3 / n,
            "postprocess": (t3 - t2) * 1e3 / n,
        }
        for r in results:
            r.speed = dict(speed)
        return results

    def _select(
        self,
        labels: Tensor,
        boxes: Tensor,
        scores: Tensor,
        size: Tensor,
        conf: float,
        classes: list[int] | None,
        max_det: int,
    ) -> Detections:
        keep = scores >= conf
        if classes is not None:
            keep &= torch.isin(labels, torch.as_tensor(classes, dtype=labels.dtype))
        idx = keep.nonzero().flatten()[:max_det]  # already sorted by score
        w, h = int(size[0]), int(size[1])
        box = boxes[idx]
        box[:, 0::2] = box[:, 0::2].clamp(0, w)
        box[:, 1::2] = box[:, 1::2].clamp(0, h)
        return Detections(
            boxes=box,
            scores=scores[idx],
            labels=labels[idx],
            image_size=(w, h),
            class_names=self.class_names,
            category_ids=self.category_ids,
        )

    def stream(
        self,
        source: Source,
        *,
        conf: float = DEFAULT_CONF,
        classes: list[int] | None = None,
        max_det: int = 300,
        batch_size: int = 1,
        keep_images: bool | None = True,
        progress: bool = False,
        on_error: OnError = "skip",
    ) -> Iterator[Detections]:
        """Like :meth:`predict`, as a generator: images are decoded and released batch by batch.

        ``keep_images=None`` keeps only in-memory inputs' images (files can be re-read).
        ``on_error``: unreadable files are skipped with a warning (``"skip"``), stop the
        stream (``"raise"``), or are passed to a callable ``(path, error)`` and skipped; see
        :func:`~rtdetr.infer.sources.iter_frames`. Skipped files have no result: match
        results to inputs by ``source``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        frames = iter_frames(source, on_error=on_error)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc="predict", unit="img")
        for chunk in _batched(frames, batch_size):
            results = self.predict_images([f.image for f in chunk], conf=conf, classes=classes, max_det=max_det)
            for frame, res in zip(chunk, results):
                res.source, res.frame, res.fps, res.index = frame.source, frame.frame, frame.fps, frame.index
                keep = keep_images if keep_images is not None else frame.source is None
                res.image = frame.image if keep else None
                yield res
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()

    def predict(
        self,
        source: Source,
        *,
        conf: float = DEFAULT_CONF,
        imgsz: int | None = None,
        classes: list[int] | None = None,
        max_det: int = 300,
        batch_size: int = 1,
        stream: bool = False,
        keep_images: bool | None = None,
        progress: bool = False,
        on_error: OnError = "skip",
    ) -> list[Detections] | Iterator[Detections]:
        """Detect objects in ``source``.

        Args:
            source: an image or video path, folder, glob, PIL image, numpy array
                (RGB, channels last), tensor (RGB, channels first) or a list of those;
                see :mod:`rtdetr.infer.sources`.
            conf: minimum score kept.
            imgsz: model input side for this call (multiple of 32; fixed for ONNX).
            classes: keep only these labels.
            max_det: at most this many detections per image.
            batch_size: images per forward pass.
            stream: return a generator (bounded memory for large folders and videos)
                instead of a list.
            keep_images: attach each decoded image to its result (for ``plot()``);
                default: always when streaming; for lists only in-memory inputs' images
                (a whole folder's pixels may not fit in memory; still images are re-read
                by ``plot()``, video frames are not).
            on_error: unreadable files: ``"skip"`` with a warning (default), ``"raise"``,
                or a callable ``(path, error)`` called for each one skipped (see :meth:`stream`).

        Returns:
            :class:`Detections` per image, in source order.
        """
        if imgsz is not None and imgsz != self.imgsz:
            return Detector(self.backend, imgsz=imgsz, class_names=self.class_names).predict(
                source,
                conf=conf,
                classes=classes,
                max_det=max_det,
                batch_size=batch_size,
                stream=stream,
                keep_images=keep_images,
                progress=progress,
                on_error=on_error,
            )
        gen = self.stream(
            source,
            conf=conf,
            classes=classes,
            max_det=max_det,
            batch_size=batch_size,
            keep_images=True if (stream and keep_images is None) else keep_images,
            progress=progress,
            on_error=on_error,
        )
        return gen if stream else list(gen)

    __call__ = predict

    def track(
        self,
        source: Source | int,
        *,
        tracker: str = "bytetrack",
        stream: bool = True,
        fps: float | None = None,
        lost_seconds: float = 1.0,
        class_aware: bool = True,
        conf: float = DEFAULT_CONF,
        classes: list[int] | None = None,
        max_det: int = 300,
        keep_images: bool = True,
        on_error: OnError = "skip",
        **tracker_options: Any,
    ) -> Iterator[Any] | list[Any]:
        """Detect and track objects through a video, a folder of frames, a camera or a stream.

        Args:
            source: what :meth:`predict` takes, a camera index (``0``) or a stream URL
                (``rtsp://...``); ids persist within each video / folder / stream.
            tracker: ``"bytetrack"``, ``"sort"`` or ``"ocsort"`` (the ``trackers`` library,
                ``pip install 'rtdetr[track]'``).
            stream: a generator (default; bounded memory, needed for cameras) or a list.
            fps: frame rate for the lost-track buffer (default: the video's; 30 for images).
            lost_seconds: how long a lost track waits for its object to reappear.
            class_aware: a track keeps its class (one tracker per class).
            tracker_options: other options of the library's tracker, e.g.
                ``track_activation_threshold=0.5``.

        Returns:
            :class:`~rtdetr.track.TrackedDetections` per frame: ``track_ids`` int64 [N]
            beside the usual boxes (xyxy pixels), scores and labels; ``speed["track"]``
            is the tracker's time in ms.
        """
        from ..track.stream import track_stream

        gen = track_stream(
            self,
            source,
            tracker=tracker,
            fps=fps,
            lost_seconds=lost_seconds,
            class_aware=class_aware,
            conf=conf,
            classes=classes,
            max_det=max_det,
            keep_images=keep_images,
            on_error=on_error,
            tracker_options=tracker_options,
        )
        return gen if stream else list(gen)

    def __repr__(self) -> str:
        return f"Detector(backend={type(self.backend).__name__}, imgsz={self.imgsz}, num_classes={self.num_classes})"
