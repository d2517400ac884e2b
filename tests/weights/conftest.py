"""Fixtures of the weights tests: private download caches, nothing touches the real ones."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    """TORCH_HOME and HF_HOME inside the test's tmp dir (torch.hub reads TORCH_HOME at call time)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield
