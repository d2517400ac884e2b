"""Evaluation: COCO detection metrics (faster-coco-eval, falling back to pycocotools)."""

from .coco_eval import SUMMARY_KEYS, CocoEvaluator, available_backends, format_metrics_table

__all__ = ["CocoEvaluator", "format_metrics_table", "available_backends", "SUMMARY_KEYS"]
