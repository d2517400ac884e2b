"""Datasets, class tables and transforms.

``resolve_dataset`` / ``build_dataset`` read COCO and YOLO layouts into
``(image, target)`` datasets; ``build_transforms`` and ``BatchCollator`` implement
the training recipe's augmentation and multi-scale batching;
``generate_synthetic_dataset`` writes the embedded synthetic COCO dataset.
"""

from .base import DetectionDataset, ImageRecord
from .coco import CocoDetection
from .collate import BatchCollator, default_multi_scales
from .image_io import image_size, load_image
from .issues import DatasetError, ImageReadError
from .resolve import DatasetSpec, SplitSource, build_dataset, resolve_dataset
from .synthetic import generate_synthetic_dataset
from .transforms import DetectionTransforms, build_transforms
from .workers import available_cpus, default_num_workers
from .yolo import YoloDetection

__all__ = [
    "available_cpus",
    "default_num_workers",
    "BatchCollator",
    "CocoDetection",
    "DatasetError",
    "DatasetSpec",
    "DetectionDataset",
    "DetectionTransforms",
    "ImageReadError",
    "ImageRecord",
    "SplitSource",
    "YoloDetection",
    "build_dataset",
    "build_transforms",
    "default_multi_scales",
    "generate_synthetic_dataset",
    "image_size",
    "load_image",
    "resolve_dataset",
]
