"""State-dict layout and float64 forward parity with the reference implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rtdetr

from .. import parity_weights
from ..conftest import REFERENCE_DIR, assert_matches_forward_fixture, filled_double_model, load_fill, reference_file

# The R18 forward fixture, slimmed (features subsampled by channel too), shipped with the
# tests so the bit-exactness check runs in any clone, without the full reference set.
SLIM_R18 = Path(__file__).resolve().parents[1] / "data" / "forward_r18vd_slim.pt"
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


def _deploy_matches(model, x, fixture, tol=1e-8):
    model.deploy()
    assert not any(hasattr(m, "conv1") and hasattr(m, "conv") for m in model.modules()), "RepVGG not fused"
    with torch.no_grad():
        dep = model(x)
    torch.testing.assert_close(dep.pred_logits, fixture["deploy_pred_logits"], atol=tol, rtol=0)
    torch.testing.assert_close(dep.pred_boxes, fixture["deploy_pred_boxes"], atol=tol, rtol=0)


def test_r18_forward_matches_in_repo_fixture():
    """Bit-exactness of R18-vd (features, outputs, deploy-mode outputs, detections) against
    tests/data/forward_r18vd_slim.pt with the in-repo weights: needs nothing outside the repo."""
    fixture = torch.load(SLIM_R18)
    assert fixture["channel_step"] > 1  # the slim copy; the full one lives in the reference set
    model = rtdetr.build_model("rtdetr_r18vd").double().eval()
    parity_weights.fill_state_dict(model)  # after .double(): float64 values, not rounded float32 ones
    x, _ = assert_matches_forward_fixture(model, fixture, image=parity_weights.reference_image(fixture["input_seed"]))
    _deploy_matches(model, x, fixture)


def test_in_repo_fixture_and_weights_agree_with_the_reference_set():
    """The slim fixture is a subsample of the reference's, and the in-repo weight rule is the
    reference helper's (checked when the full set is present)."""
    full = torch.load(reference_file("forward_r18vd.pt"))
    slim = torch.load(SLIM_R18)
    step = slim["channel_step"]
    for key in ("backbone_feats", "encoder_feats"):
        for s, f in zip(slim[key], full[key], strict=True):
            assert torch.equal(s, f[:, ::step])
    for key, value in slim.items():
        if torch.is_tensor(value):
            assert torch.equal(value, full[key]), key
    fill = load_fill()
    model = rtdetr.build_model("rtdetr_r18vd").double()
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    for key, tensor in ours.items():
        if tensor.is_floating_point():
            tensor.copy_(parity_weights.key_values(key, tensor.shape))
    fill.fill_state_dict(model)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, ours[key]), key
    assert torch.equal(parity_weights.reference_image(0), fill.reference_image(0))
