"""State-dict layout and float64 forward parity with the reference implementation."""

from __future__ import annotations

import json

import pytest
import torch

import rtdetr

from ..conftest import REFERENCE_DIR, assert_matches_forward_fixture, filled_double_model, reference_file

V1_PRESETS = ["rtdetr_r18vd", "rtdetr_r34vd", "rtdetr_r50vd_m", "rtdetr_r50vd", "rtdetr_r101vd"]


def _variant(name: str) -> str:
    return name.removeprefix("rtdetr_")


@pytest.mark.parametrize("name", V1_PRESETS)
def test_state_dict_matches_reference_manifest(name):
    manifest = json.loads(reference_file(f"state_dict_{_variant(name)}.json").read_text())
    state = rtdetr.build_model(name).state_dict()
    ours = [(k, list(v.shape)) for k, v in state.items()]
    ref = [(k, shape) for k, shape, _ in manifest]
    assert ours == ref
    # dtypes too: frozen BN has no int64 num_batches_tracked, trainable BN has it
    assert [str(v.dtype).removeprefix("torch.") for v in state.values()] == [d for _, _, d in manifest]


@pytest.mark.parametrize("name", V1_PRESETS)
def test_forward_matches_reference_fixture(name):
    """Every preset with a fixture file is checked; nothing here is specific to r18."""
    fixture = torch.load(reference_file(f"forward_{_variant(name)}.pt"))
    model = filled_double_model(name)
    x, _ = assert_matches_forward_fixture(model, fixture)
    tol = 1e-8

    model.deploy()
    assert not any(hasattr(m, "conv1") and hasattr(m, "conv") for m in model.modules()), "RepVGG not fused"
    with torch.no_grad():
        dep = model(x)
    torch.testing.assert_close(dep.pred_logits, fixture["deploy_pred_logits"], atol=tol, rtol=0)
    torch.testing.assert_close(dep.pred_boxes, fixture["deploy_pred_boxes"], atol=tol, rtol=0)


def test_reference_dir_is_used():
    # Guards against the parity tests silently skipping everywhere.
    if not REFERENCE_DIR.exists():
        pytest.skip(f"no reference dir at {REFERENCE_DIR}")
    assert (REFERENCE_DIR / "forward_r18vd.pt").exists()
