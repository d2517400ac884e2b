"""Shared test helpers: where the reference fixtures live and how to load fill.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("RTDETR_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def reference_file(name: str) -> Path:
    """Path of a reference fixture; skips the test (with the path) when it is absent."""
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference fixture not found: {path} (set RTDETR_REFERENCE_DIR)")
    return path


def load_fill():
    """The reference's weight-filling helper, imported from the fixture directory (not vendored)."""
    path = reference_file("fill.py")
    spec = importlib.util.spec_from_file_location("rtdetr_reference_fill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _flush_denormals():
    # Random small weights drive activations into denormals, which makes CPU math crawl.
    torch.set_flush_denormal(True)
    yield
