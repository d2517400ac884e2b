"""Inference helpers: drawing detections (predictor, sources and export come with the inference issue)."""
