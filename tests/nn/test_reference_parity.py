"""State-dict layout and float64 forward parity with the reference implementation."""

from __future__ import annotations

import json

import pytest
import torch

import rtdetr
from rtdetr.data.coco_categories import COCO_CATEGORY_IDS

from ..conftest import REFERENCE_DIR, load_fill, reference_file

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
    fill = load_fill()
    model = rtdetr.build_model(name).double().eval()
    # Fill after .double(): filling a float32 model first would round the weights.
    fill.fill_state_dict(model)
    x = fill.reference_image(fixture.get("input_seed", 0))
    tol = 1e-8
    with torch.no_grad():
        feats = model.backbone(x)
        enc = model.encoder(feats)
        out = model(x)
    for ours, ref in zip(feats, fixture["backbone_feats"], strict=True):
        torch.testing.assert_close(ours[..., ::4, ::4], ref, atol=tol, rtol=0)
    for ours, ref in zip(enc, fixture["encoder_feats"], strict=True):
        torch.testing.assert_close(ours[..., ::4, ::4], ref, atol=tol, rtol=0)
    torch.testing.assert_close(out.pred_logits, fixture["pred_logits"], atol=tol, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], fixture["pred_boxes"], atol=tol, rtol=0)

    # The reference's COCO postprocessor reports COCO category ids.
    post = rtdetr.build_postprocessor(model, category_ids=COCO_CATEGORY_IDS)
    (result,) = post(out, fixture["post_orig_target_sizes"])
    torch.testing.assert_close(result["scores"], fixture["post_scores"], atol=tol, rtol=0)
    torch.testing.assert_close(result["boxes"], fixture["post_boxes"], atol=tol, rtol=0)
    assert torch.equal(result["labels"], fixture["post_labels"])

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
