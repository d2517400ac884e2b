"""transformers' RT-DETR with our R18 configuration: the comparison point of every benchmark here.

Benchmark-only dependency (``pip install transformers``); random init, no download.
"""

from __future__ import annotations

import rtdetr


def hf_rtdetr(preset: str = "rtdetr_r18vd", num_classes: int = 80):
    """``RTDetrForObjectDetection`` built from our preset's config (same layers and sizes)."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    from rtdetr.weights.hf_config import hf_config_dict

    cfg = rtdetr.get_config(preset, num_classes=num_classes)
    hf_cfg = hf_config_dict(cfg, class_names=[str(i) for i in range(num_classes)])
    hf_cfg.pop("model_type", None)
    return RTDetrForObjectDetection(RTDetrConfig(**hf_cfg))
