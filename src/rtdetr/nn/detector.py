"""The RT-DETR detector: backbone -> hybrid encoder -> decoder."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["RTDETR", "DetectionOutput"]


class DetectionOutput(dict):
    """Model outputs, readable by key (``out["pred_logits"]``) or attribute (``out.pred_logits``).

    Eval: ``pred_logits`` [B, Q, C] (raw class logits; sigmoid gives scores) and
    ``pred_boxes`` [B, Q, 4] (cxcywh normalized to [0, 1]).
    Training adds ``aux_outputs``, ``dn_aux_outputs`` and ``dn_meta`` for the loss.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class RTDETR(nn.Module):
    """Detector assembled from built parts (see :func:`rtdetr.build_model` for presets).

    Submodules are registered in the reference's order (backbone, decoder,
    encoder) so ``state_dict()`` matches released checkpoints key for key.
    """

    def __init__(self, backbone: nn.Module, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.encoder = encoder

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> DetectionOutput:
        """images [B, 3, H, W] float in [0, 1] (no mean/std normalization).

        targets (training): per image ``labels`` int64 [N] and ``boxes`` [N, 4]
        cxcywh normalized; images may have no boxes.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a float batch [B, 3, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
        feats = self.encoder(self.backbone(images))
        return DetectionOutput(self.decoder(feats, targets))

    def compile_static_parts(self) -> RTDETR:
        """``torch.compile`` the backbone and the hybrid encoder in place; returns self.

        Those two see fixed shapes at a fixed input size; the decoder stays eager, since
        in training its denoising query count changes with every batch. In place
        (``nn.Module.compile``): ``state_dict`` keys are unchanged. A deep copy of the
        result still calls into this model's compiled code, so copy (e.g. for an EMA)
        before compiling. ``TrainConfig.compile`` uses it.
        """
        self.backbone.compile()
        self.encoder.compile()
        return self

    def deploy(self, *, fold_bn: bool = True) -> RTDETR:
        """Prepare for inference in place; returns self in eval mode.

        Fuses re-parameterizable blocks (RepVGG: two conv+BN branches -> one conv) and,
        with ``fold_bn``, folds the remaining BatchNorms into their convolutions (and
        HGNetv2's ReLU + learnable affine pairs into the conv and a clamp). The
        function is unchanged up to float rounding; the ``state_dict`` changes, so
        load weights before calling this.
        """
        from .layers import fold_batch_norms

        self.eval()
        for m in self.modules():
            if hasattr(m, "convert_to_deploy"):
                m.convert_to_deploy()
        if fold_bn:
            fold_batch_norms(self)
            for m in self.modules():  # HGNetv2: ReLU + learnable affine -> the conv + one clamp
                if hasattr(m, "fold_lab"):
                    m.fold_lab()
        return self
