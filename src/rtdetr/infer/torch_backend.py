"""The PyTorch inference engine: deploy-fused model + postprocessor, on any device and precision."""

from __future__ import annotations

import contextlib
import copy
import logging

import torch
from torch import Tensor, nn

from ..nn.end_to_end import EndToEndDetector
from ..nn.postprocess import PostProcessor
from ..runtime import (  # noqa: F401  (cpu_supports_bf16, keep_freed_memory: re-exported, they lived here)
    KEEP_FREED_MEMORY_ENV,
    PRECISIONS,
    PrecisionError,
    cpu_supports_bf16,
    keep_freed_memory,
    resolve_precision,
    setup_cpu_runtime,
    warn_if_bf16_emulated,
)
from .graph_cache import TracedGraphs

__all__ = [
    "TorchBackend",
    "GRAPH_MODES",
    "PRECISIONS",
    "cpu_supports_bf16",
    "keep_freed_memory",
    "KEEP_FREED_MEMORY_ENV",
]

log = logging.getLogger(__name__)

GRAPH_MODES = ("auto", "trace", "eager")


class TorchBackend:
    """Runs an :class:`~rtdetr.RTDETR` end to end (model + top-K postprocess).

    Args:
        model: a built detector. By default the backend works on a deep copy, so the
            caller's module keeps its weights, mode, device and memory format;
            the copy is put in eval mode and RepVGG-fused / BN-folded (``deploy()``)
            unless ``fuse=False``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        precision: ``"auto"`` (see :func:`rtdetr.runtime.resolve_precision`: bf16 on
            CPUs with native bf16, fp16 on CUDA GPUs with tensor cores, else fp32);
            ``"fp32"``; ``"bf16"`` (autocast; fast only on CPUs with AVX512-BF16/AMX
            and on recent GPUs, warns elsewhere); ``"fp16"`` (autocast, CUDA only).
            :attr:`precision` holds the resolved value.
        channels_last: NHWC memory format for the convolutions (default: on for CPU,
            where oneDNN prefers it, and for CUDA reduced precision).
        class_names: names per contiguous label (default: ``model.class_names``).
        fuse: apply ``model.deploy()``.
        inplace: work on ``model`` itself (no copy: saves its memory once; the caller's
            module is then changed as described above).
        graph: ``"auto"`` (default): on a CPU, an input shape called often (or prepared
            with :meth:`prepare`, as ``Detector.warmup`` does) runs as a frozen TorchScript
            graph (:class:`~rtdetr.infer.graph_cache.TracedGraphs`: ~18% less latency for a
            small model, checked against the eager output, eager again if tracing fails);
            on a GPU, eagerly. ``"trace"`` on any device; ``"eager"`` never traces.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        channels_last: bool | None = None,
        class_names: list[str] | None = None,
        fuse: bool = True,
        inplace: bool = False,
        graph: str = "auto",
    ) -> None:
        if graph not in GRAPH_MODES:
            raise ValueError(f"graph must be one of {', '.join(GRAPH_MODES)}, got {graph!r}")
        self.device = torch.device(device)
        resolved = resolve_precision(precision, self.device)
        if resolved == "fp16" and self.device.type != "cuda":
            raise PrecisionError("precision 'fp16' needs a CUDA device; on the CPU use 'bf16' or 'auto'")
        if precision == "auto":
            log.info("precision 'auto' on %s: %s", self.device, resolved)
        else:
            warn_if_bf16_emulated(resolved, self.device)
        self.precision = resolved
        if self.device.type == "cpu":
            setup_cpu_runtime(self.device)
        if channels_last is None:
            channels_last = self.device.type == "cpu" or resolved != "fp32"
        self.channels_last = channels_last
        if not inplace:
            # deploy() fuses and folds in place and .to() moves parameters: without a copy the
            # caller's training model would lose its BatchNorms and RepVGG branches.
            model = copy.deepcopy(model)
        model = model.eval()
        if fuse and hasattr(model, "deploy"):
            model.deploy()
        cfg = model.config
        self.num_classes = cfg.num_classes
        self.imgsz = None  # any multiple of 32
        self.default_imgsz = int(cfg.eval_spatial_size[0]) if cfg.eval_spatial_size else 640
        self.class_names = class_names if class_names is not None else getattr(model, "class_names", None)
        self.category_ids = getattr(model, "category_ids", None)
        post = PostProcessor(cfg.num_classes, num_top_queries=cfg.num_top_queries)
        self.module = EndToEndDetector(model, post).to(self.device).eval()
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.graphs: TracedGraphs | None = None
        if graph == "trace" or (graph == "auto" and self.device.type == "cpu"):
            # reduced precision reorders near-tied scores and moves them by its rounding
            self.graphs = TracedGraphs(self.module, score_tolerance=1e-3 if resolved == "fp32" else 5e-2)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _inputs(self, images: Tensor) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    @torch.inference_mode()
    def prepare(self, images: Tensor, orig_sizes: Tensor) -> bool:
        """Trace the graph for inputs shaped like ``images`` (what ``__call__`` takes) now, if
        this backend traces (``graph``); True when calls of that shape will run one."""
        if self.graphs is None:
            return False
        with self._autocast():
            return self.graphs.trace_now(self._inputs(images), orig_sizes.to(self.device))

    @torch.inference_mode()
    def __call__(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images = self._inputs(images)
        with self._autocast():
            run = self.graphs if self.graphs is not None else self.module
            labels, boxes, scores = run(images, orig_sizes.to(self.device))
        return labels.cpu(), boxes.float().cpu(), scores.float().cpu()
