"""Training: Hungarian matcher and the RT-DETR loss."""

from rtdetr.train.criterion import RTDETRCriterion, total_loss
from rtdetr.train.matcher import HungarianMatcher, validate_targets

__all__ = ["HungarianMatcher", "RTDETRCriterion", "total_loss", "validate_targets"]
