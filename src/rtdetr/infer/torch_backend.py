"""The PyTorch inference engine: deploy-fused model + postprocessor, on any device and precision."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys

import torch
from torch import Tensor, nn

from ..nn.end_to_end import EndToEndDetector
from ..nn.postprocess import PostProcessor

__all__ = ["TorchBackend", "PRECISIONS", "cpu_supports_bf16", "keep_freed_memory", "KEEP_FREED_MEMORY_ENV"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX), where bf16 pays."""
    try:
        caps = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return False
    if "AMX" in caps.upper():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_bf16" in f.read()
    except OSError:
        return False


# mallopt() parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# keep_freed_memory() as glibc environment variables, read when a process starts
KEEP_FREED_MEMORY_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_ARENA_MAX": "1",
}  # fmt: skip


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Call it once, at process start, before the thread that will run the model first
    allocates (a thread keeps the malloc arena it was given). Process-wide; returns
    False, changing nothing, where the C library is not glibc.

    Why: glibc serves a block above its mmap threshold (adaptive, at most 32 MiB on
    64-bit) with a fresh ``mmap`` and unmaps it on free, so every such tensor is
    page-faulted in again, the kernel zeroing each 4 KiB page, on every forward. At
    640 px most activations of a batch of 4 or more are that large: rtdetr_r18vd
    takes ~30k (batch 4) to ~80k (batch 8) page faults and 60-180 ms of kernel CPU
    time per image, which is most of the rise of its per-image CPU time with the
    batch size. Here ``mmap`` is off and the heap is never trimmed, so big tensors
    reuse heap memory, and there is one arena: a thread's own arena grows in 64 MiB
    heaps and would still ``mmap`` anything larger. The cost: the process keeps its
    peak footprint (rtdetr_r18vd at batches 1-8: 2.2 GB resident, against a 1.9 GB
    peak and 1.3 GB between batches with the defaults). The environment
    :data:`KEEP_FREED_MEMORY_ENV` does the same from the start of a (child) process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # not glibc (e.g. musl)
        return False
    # -1 (SIZE_MAX once converted) disables trimming, as mallopt(3) documents
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
    ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        log.warning("mallopt refused a setting: freed memory may still go back to the kernel")
    return ok


class TorchBackend:
    """Runs an :class:`~rtdetr.RTDETR` end to end (model + top-K postprocess).

    Args:
        model: a built detector; it is put in eval mode and RepVGG-fused (``deploy()``)
            unless ``fuse=False``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        precision: ``"fp32"``; ``"bf16"`` (autocast; fast on CPUs with AVX512-BF16/AMX
            and on recent GPUs); ``"fp16"`` (autocast, CUDA only).
        channels_last: NHWC memory format for the convolutions (default: on for CPU,
            where oneDNN prefers it, and for CUDA reduced precision).
        class_names: names per contiguous label (default: ``model.class_names``).
        fuse: apply ``model.deploy()``.
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
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision 'fp16' needs a CUDA device; on the CPU use 'bf16'")
        if precision == "bf16" and self.device.type == "cpu" and not cpu_supports_bf16():
            log.warning("this CPU has no native bf16 support: bf16 inference will likely be slower than fp32")
        self.precision = precision
        if channels_last is None:
            channels_last = self.device.type == "cpu" or precision != "fp32"
        self.channels_last = channels_last
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
        self.module = EndToEndDetector(model, post).to(self.device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            labels, boxes, scores = self.module(images, orig_sizes.to(self.device))
        return labels.cpu(), boxes.float().cpu(), scores.float().cpu()
