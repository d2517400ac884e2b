"""The onnxruntime inference engine for files written by ``rtdetr export --format onnx``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..export.metadata import ExportMetadata, parse_metadata

__all__ = ["OnnxBackend", "default_providers"]

log = logging.getLogger(__name__)

_INPUTS = ("images", "orig_target_sizes")
_OUTPUTS = ("labels", "boxes", "scores")


def _require_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("ONNX inference needs onnxruntime: pip install 'rtdetr[export]'") from exc
    return onnxruntime


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = _require_ort().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxBackend:
    """Runs an exported end-to-end detector (network + top-K postprocess) with onnxruntime.

    Implements :class:`rtdetr.infer.backend.Backend`. Model name, input size and
    classes come from the file's metadata (see :mod:`rtdetr.export.metadata`).

    Args:
        path: ``.onnx`` file written by :func:`rtdetr.export.export_onnx` (fp32, fp16 or int8).
        providers: onnxruntime execution providers (default: CUDA if available, then CPU).
        threads: intra-op threads (default: onnxruntime's choice, one per physical core).

    Attributes:
        imgsz: the square input side S the graph was exported at.
        class_names / num_classes / category_ids / model_name / metadata: from the metadata.
        batch_size: the fixed batch of the graph, or None for a dynamic-batch export.
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None) -> None:
        ort = _require_ort()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: fp16 graphs warn about every unfoldable constant
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        self.providers = list(providers) if providers is not None else default_providers()
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        self.path = path
        self.metadata: ExportMetadata = parse_metadata(
            self.session.get_modelmeta().custom_metadata_map, source=str(path)
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(_INPUTS) or outputs != list(_OUTPUTS):
            raise ValueError(
                f"{path}: expected inputs {list(_INPUTS)} and outputs {list(_OUTPUTS)}, "
                f"got inputs {sorted(inputs)} and outputs {outputs}; export with `rtdetr export`"
            )
        batch_dim = inputs["images"].shape[0]
        self.batch_size: int | None = batch_dim if isinstance(batch_dim, int) else None
        self.imgsz: int | None = self.metadata.imgsz
        self.num_classes: int = self.metadata.num_classes
        self.class_names: list[str] | None = self.metadata.class_names
        self.category_ids: list[int] | None = self.metadata.category_ids
        self.model_name: str = self.metadata.model_name
        log.info(
            "loaded %s (%s, %s, %dx%d, batch %s) on %s",
            path,
            self.model_name,
            self.metadata.precision,
            self.imgsz,
            self.imgsz,
            self.batch_size or "dynamic",
            self.session.get_providers()[0],
        )

    def __call__(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images float32 [B, 3, S, S] in [0, 1]; orig_sizes int64 [B, 2] (w, h).

        Returns CPU tensors: labels int64 [B, K], boxes float32 [B, K, 4] xyxy px,
        scores float32 [B, K]. A fixed-batch graph is run image by image when B differs.
        """
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.imgsz, self.imgsz):
            raise ValueError(
                f"{self.path.name} expects images [B, 3, {self.imgsz}, {self.imgsz}], got {tuple(images.shape)}"
            )
        if orig_sizes.shape != (images.shape[0], 2):
            raise ValueError(f"orig_sizes must be [B, 2] (w, h) for B={images.shape[0]}, got {tuple(orig_sizes.shape)}")
        x = images.detach().cpu().float().contiguous().numpy()
        sizes = orig_sizes.detach().cpu().to(torch.int64).contiguous().numpy()
        if self.batch_size is None or self.batch_size == len(x):
            labels, boxes, scores = self.session.run(list(_OUTPUTS), {"images": x, "orig_target_sizes": sizes})
        elif self.batch_size == 1:
            runs = [
                self.session.run(list(_OUTPUTS), {"images": x[i : i + 1], "orig_target_sizes": sizes[i : i + 1]})
                for i in range(len(x))
            ]
            labels, boxes, scores = (np.concatenate(parts) for parts in zip(*runs))
        else:
            raise ValueError(f"{self.path.name} was exported for batch {self.batch_size}, got {len(x)} images")
        return (
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            torch.from_numpy(np.asarray(boxes, dtype=np.float32)),
            torch.from_numpy(np.asarray(scores, dtype=np.float32)),
        )

    def __repr__(self) -> str:
        return f"OnnxBackend({str(self.path)!r}, model={self.model_name!r}, imgsz={self.imgsz}, providers={self.providers})"
