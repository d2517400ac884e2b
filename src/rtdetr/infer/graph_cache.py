"""Frozen TorchScript graphs of the inference module, one per input shape, for CPU inference.

Eager PyTorch pays a Python-to-C++ round trip for each of the ~600 operators of a small
detector's forward; on a 2-core CPU that was ~5 of 26 ms for ``rtdetrv2_hgnetv2_n`` at
320 px. A traced and frozen graph runs the same operators from C++ (and folds its
constants): 21.6 vs 26.2 ms fp32 and 19.8 vs 26.0 ms under bf16 autocast, interleaved on
the same machine (Intel Xeon, AVX512/AMX, 2 threads). Tracing takes ~1 s, about what
~200 calls save, so a shape is traced only when it is called often (its ``trace_after``-th
call, 50 by default) or when asked to (:meth:`TracedGraphs.trace_now`, which
``Detector.warmup`` and ``rtdetr serve`` use): ``rtdetr predict`` on a few images never
pays for it.

A trace bakes in the control flow it saw, so a graph is used only if its output
matches the eager module's on the input it was traced with; a trace that fails or
differs turns this cache off for the module (one warning) and everything runs eagerly.
``torch.jit`` is deprecated in favour of ``torch.compile``, which here took ~55 s to
compile for a smaller gain (30.3 vs 33.9 ms); if a future PyTorch drops tracing, the
same fallback applies.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import Counter, OrderedDict

import torch
from torch import Tensor, nn

__all__ = ["TracedGraphs"]

log = logging.getLogger(__name__)

Outputs = tuple[Tensor, ...]


class TracedGraphs:
    """Calls ``module(images, sizes)`` through a frozen trace per input shape, else eagerly.

    Called under autocast, a graph records the casts autocast made while it was traced,
    so it keeps running in that precision. A graph's weights are constants captured when it
    was traced (for the deploy-fused detectors they share the module's storage); after
    changing ``module``'s weights, build a new ``TracedGraphs``.

    Args:
        module: the inference module (eval mode); called with the same arguments.
        trace_after: trace a shape on its ``trace_after``-th call (earlier calls run eagerly).
        max_graphs: graphs kept, least recently used dropped first. A frozen graph's
            weights share the module's storage (measured for ``rtdetrv2_hgnetv2_n`` and
            R18: all of the graph's tensor constants), so each graph costs little memory.
        score_tolerance: largest difference allowed between the sorted scores of the
            graph and of the eager module when a graph is checked (reduced precision
            reorders near-ties, so sorted values are compared, not positions).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        trace_after: int = 50,
        max_graphs: int = 4,
        score_tolerance: float = 1e-3,
    ) -> None:
        self.module = module
        self.trace_after = trace_after
        self.max_graphs = max_graphs
        self.score_tolerance = score_tolerance
        self.enabled = True
        self._graphs: OrderedDict[tuple, torch.jit.ScriptModule] = OrderedDict()
        self._seen: Counter[tuple] = Counter()
        self._lock = threading.Lock()

    @property
    def num_graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, images: Tensor, sizes: Tensor) -> Outputs:
        graph = self._graph_for(images, sizes) if self.enabled else None
        if graph is None:
            return self.module(images, sizes)
        return graph(images, sizes)

    def trace_now(self, images: Tensor, sizes: Tensor) -> bool:
        """Trace the shape of ``images`` now (unless it has a graph); True if it has one after."""
        key = self._key(images)
        with self._lock:
            if self.enabled and key not in self._graphs:
                self._trace(key, images, sizes)
            return key in self._graphs

    @staticmethod
    def _key(images: Tensor) -> tuple:
        device = images.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        # A graph bakes in the casts of the autocast state it was traced under.
        return (tuple(images.shape), images.dtype, images.is_contiguous(memory_format=torch.channels_last), autocast)

    def _graph_for(self, images: Tensor, sizes: Tensor) -> torch.jit.ScriptModule | None:
        key = self._key(images)
        with self._lock:  # callers in other threads wait while a shape is traced
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)  # most recently used last; the first one is dropped
                return graph
            self._seen[key] += 1
            if self._seen[key] >= self.trace_after and self.enabled:
                self._trace(key, images, sizes)
            return self._graphs.get(key)

    def _trace(self, key: tuple, images: Tensor, sizes: Tensor) -> None:
        # Traced outside inference mode (the frozen graph's constants must be normal
        # tensors) on copies of the inputs, which may be inference tensors.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings on shape checks; jit's deprecation notice
            images, sizes = images.clone(), sizes.clone()
            try:
                graph = torch.jit.freeze(torch.jit.trace(self.module, (images, sizes), check_trace=False))
                expected, got = self.module(images, sizes), graph(images, sizes)
                problem = _mismatch(expected, got, self.score_tolerance)
            except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
                problem = f"failed ({type(e).__name__}: {e})"
        if problem:
            self.enabled = False
            self._graphs.clear()
            log.warning("running the model eagerly: tracing it for input %s %s", key[0], problem)
            return
        self._graphs[key] = graph
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        log.debug("traced the model for input %s", key[0])


def _mismatch(expected: Outputs, got: Outputs, score_tolerance: float) -> str | None:
    """None when ``got`` is ``expected`` up to reordered near-ties; else what differs."""
    if len(expected) != len(got):
        return f"gave {len(got)} outputs, not {len(expected)}"
    for e, g in zip(expected, got):
        if e.shape != g.shape or e.dtype != g.dtype:
            return f"gave {tuple(g.shape)} {g.dtype} where the model gives {tuple(e.shape)} {e.dtype}"
    scores_e, scores_g = expected[-1].float(), got[-1].float()  # (labels, boxes, scores)
    diff = (scores_e.sort(dim=-1).values - scores_g.sort(dim=-1).values).abs().max().item()
    if not diff <= score_tolerance:
        return f"gave scores {diff:.3g} away from the model's (allowed {score_tolerance:g})"
    return None
