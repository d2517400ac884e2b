"""What the predictor needs from an inference engine (PyTorch, onnxruntime, ...)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A batched end-to-end detector: preprocessed images in, top-K detections out.

    Attributes:
        imgsz: the square input side the engine expects (None when any multiple of
            32 works, as for the PyTorch backend).
        class_names: one name per contiguous label, or None when unknown.
        num_classes: classes of the score head.
    """

    imgsz: int | None
    class_names: list[str] | None
    num_classes: int

    def __call__(self, images: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Run the model and the top-K postprocess.

        Args:
            images: float32 [B, 3, S, S] RGB in [0, 1] on the CPU.
            orig_sizes: int64 [B, 2], each image's original (width, height).

        Returns:
            CPU tensors sorted by score: labels int64 [B, K] (contiguous), boxes
            float32 [B, K, 4] xyxy in original pixels, scores float32 [B, K].
        """
        ...
